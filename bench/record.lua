-- wrk script: POST a banner decision as a first-time visitor, to one of the given sites.
-- usage: wrk ... -s bench/record.lua URL -- site-a site-b ...
-- The URL's path is a prefix of the records route: "/" for the service, "/hot/" for the
-- bare hot-row route of bench/bare_app.py.
local sites = {}
local prefix = ""
local bodies = {
  '{"decisions":[{"purpose":"analytics","granted":true},{"purpose":"marketing","granted":false},{"purpose":"preferences","granted":true}]}',
  '{"decisions":[{"purpose":"analytics","granted":false},{"purpose":"marketing","granted":false},{"purpose":"preferences","granted":false}]}',
}
local counter = 0

function init(args)
  for i, site in ipairs(args) do sites[i] = site end
  if #sites == 0 then sites[1] = "demo" end
  prefix = wrk.path:gsub("/$", "")
end

function request()
  counter = counter + 1
  local site = sites[(counter % #sites) + 1]
  return wrk.format("POST", prefix .. "/v1/sites/" .. site .. "/records",
    {["Content-Type"] = "application/json"}, bodies[(counter % 2) + 1])
end
