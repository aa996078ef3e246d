-- wrk script: POST a banner decision as a first-time visitor, to one of the given sites.
-- usage: wrk ... -s bench/record.lua URL -- [--idempotency-keys] site-a site-b ...
-- The URL's path is a prefix of the records route: "/" for the service, "/hot/" for the
-- bare hot-row route of bench/bare_app.py. With --idempotency-keys each request carries
-- a key of its own, as the widget sends (the bare routes ignore it).
local sites = {}
local prefix = ""
local keyed = false
local key_prefix = ""
local bodies = {
  '{"decisions":[{"purpose":"analytics","granted":true},{"purpose":"marketing","granted":false},{"purpose":"preferences","granted":true}]}',
  '{"decisions":[{"purpose":"analytics","granted":false},{"purpose":"marketing","granted":false},{"purpose":"preferences","granted":false}]}',
}
local counter = 0
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

function init(args)
  for _, arg in ipairs(args) do
    if arg == "--idempotency-keys" then keyed = true else sites[#sites + 1] = arg end
  end
  if #sites == 0 then sites[1] = "demo" end
  prefix = wrk.path:gsub("/$", "")
  -- Unique across wrk processes (a table's address), runs (the time) and threads.
  key_prefix = string.format("bench-%s-%d-%d-", tostring({}):sub(8), os.time(), thread_number or 0)
end

function request()
  counter = counter + 1
  local site = sites[(counter % #sites) + 1]
  local headers = {["Content-Type"] = "application/json"}
  if keyed then headers["Idempotency-Key"] = key_prefix .. counter end
  return wrk.format("POST", prefix .. "/v1/sites/" .. site .. "/records", headers,
    bodies[(counter % 2) + 1])
end
