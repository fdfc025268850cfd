-- Small GETs with about 1 % of requests to /hostile (an upstream answer Ferry must refuse), counting statuses.
local threads = {}
local counter = 0

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  hostile = wrk.format("GET", "/hostile")
  small = wrk.format("GET", "/")
end

function request()
  counter = counter + 1
  if counter % 100 == 0 then
    return hostile
  end
  return small
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
