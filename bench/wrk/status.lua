-- Counts responses by status across wrk's threads and prints them as "status <code> <count>" lines when wrk ends.
-- WRK_METHOD=POST sends a body: "fault-test body", or WRK_BODY_BYTES bytes (an upload).
-- WRK_HOSTILE_EVERY=N makes every Nth request of a thread a GET /hostile (an upstream answer Ferry must refuse).
local threads = {}
local counter = 0
local hostile_every = tonumber(os.getenv("WRK_HOSTILE_EVERY") or "0")

if os.getenv("WRK_METHOD") and os.getenv("WRK_METHOD") ~= "GET" then
  wrk.method = os.getenv("WRK_METHOD")
  local bytes = tonumber(os.getenv("WRK_BODY_BYTES") or "0")
  wrk.body = bytes > 0 and string.rep("u", bytes) or "fault-test body"
  wrk.headers["Content-Type"] = bytes > 0 and "application/octet-stream" or "text/plain"
end

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  if hostile_every > 0 then
    hostile = wrk.format("GET", "/hostile")
    plain = wrk.format()
  end
end

if hostile_every > 0 then
  function request()
    counter = counter + 1
    if counter % hostile_every == 0 then
      return hostile
    end
    return plain
  end
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
