-- Counts responses per status across all threads and prints p50/p99 of wrk's latency, for bench/adaptive-limit.
-- THINK_MS in the environment: each connection waits that long between a response and its next request (wrk's
-- delay(); the wait is not in the latency).
local threads = {}
local think = tonumber(os.getenv("THINK_MS") or "0")

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

if think > 0 then
  function delay()
    return think
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do
      total[k] = (total[k] or 0) + v
    end
  end
  local keys = {}
  for k in pairs(total) do
    table.insert(keys, k)
  end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    table.insert(parts, string.format("%d × %d", k, total[k]))
  end
  io.write("statuses " .. table.concat(parts, ", ") .. "\n")
  io.write(string.format("latency p50 %.0f ms, p99 %.0f ms, max %.0f ms\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
