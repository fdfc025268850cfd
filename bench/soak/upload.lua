-- POST of a 256 KiB body, counting statuses.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  wrk.method = "POST"
  wrk.body = string.rep("u", 256 * 1024)
  wrk.headers["Content-Type"] = "application/octet-stream"
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
