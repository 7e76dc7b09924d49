-- wrk script: POST /visit at a steady rate, for measuring reads while visits arrive
-- (scripts/queries-under-load.sh). The requests are like those of ../shared/bench/visit.lua (a
-- different client per request), but to the 1,000 pages of ../shared/bench/gen_visits.py's
-- database (https://site{p % 20}.example.com/page/{p}), so a load on that database adds
-- visits to the site's pages instead of 20,000 new ones; each connection waits WRK_DELAY_MS milliseconds
-- (environment) after each answer before its next request, so C connections send about
-- C * 1000 / WRK_DELAY_MS requests a second while answers are fast. That is a paced closed
-- loop, not an open one: if the server slowed, the rate would drop instead of queueing, so
-- the script prints the rate achieved and the caller checks it.
local counter = 0
local agents = {
  "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:131.0) Gecko/20100101 Firefox/131.0",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  n = 0
  pause = tonumber(os.getenv("WRK_DELAY_MS") or "0")
  math.randomseed(id * 7919 + 17)
end

function delay()
  return pause
end

function request()
  n = n + 1
  local page = math.random(0, 999)
  local site = page % 20
  local ip = string.format("10.%d.%d.%d", id % 250, math.random(0, 255), math.random(1, 254))
  local body = string.format('{"url":"https://site%d.example.com/page/%d"}', site, page)
  return wrk.format("POST", "/visit", {
    ["Content-Type"] = "application/json",
    ["X-Forwarded-For"] = ip,
    ["User-Agent"] = agents[(n % #agents) + 1],
  }, body)
end

function done(summary, latency, requests)
  io.write(string.format("RESULT requests=%d non2xx=%d socket_errors=%d rps=%.0f p50_ms=%.2f p99_ms=%.2f\n",
    summary.requests, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
