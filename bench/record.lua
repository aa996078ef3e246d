-- wrk script: POST a banner decision as a first-time visitor, to one of the given sites.
-- usage: wrk ... -s bench/record.lua URL -- site-a site-b ...
local sites = {}
local bodies = {
  '{"decisions":[{"purpose":"analytics","granted":true},{"purpose":"marketing","granted":false},{"purpose":"preferences","granted":true}]}',
  '{"decisions":[{"purpose":"analytics","granted":false},{"purpose":"marketing","granted":false},{"purpose":"preferences","granted":false}]}',
}
local counter = 0

function init(args)
  for i, site in ipairs(args) do sites[i] = site end
  if #sites == 0 then sites[1] = "demo" end
end

function request()
  counter = counter + 1
  local site = sites[(counter % #sites) + 1]
  return wrk.format("POST", "/v1/sites/" .. site .. "/records",
    {["Content-Type"] = "application/json"}, bodies[(counter % 2) + 1])
end
