-- wrk script: stop after a number of responses (one wrk thread), then report.
-- usage: wrk -t1 ... -s bench/stop_after.lua URL -- COUNT TOKEN
local limit, seen = 100000, 0

function init(args)
  limit = tonumber(args[1]) or limit
  if args[2] then wrk.headers["X-Consent-Token"] = args[2] end
end

function response(status, headers, body)
  seen = seen + 1
  if seen >= limit then wrk.thread:stop() end
end
