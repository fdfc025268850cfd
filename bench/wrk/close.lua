-- Asks for Connection: close on every request (the `handshake` scenario): wrk opens a new connection, and over
-- HTTPS makes a new TLS handshake, for each one. Then reports like report.lua.
wrk.headers["Connection"] = "close"

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "report.lua")
