-- Counts responses by status across wrk's threads and prints them as "status <code> <count>" lines when wrk ends.
-- WRK_METHOD=POST sends a small body instead: a request Ferry may not send twice.
local threads = {}
if os.getenv("WRK_METHOD") then
  wrk.method = os.getenv("WRK_METHOD")
  wrk.body = "fault-test body"
  wrk.headers["Content-Type"] = "text/plain"
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  for status, n in pairs(total) do
    io.write(string.format("status %d %d\n", status, n))
  end
  local e = summary.errors
  io.write(string.format("errors connect=%d read=%d write=%d timeout=%d\n", e.connect, e.read, e.write, e.timeout))
end
