-- usage: lua5.4 examples/unix_echo.lua [socket path]
-- An echo server on a Unix domain socket (try: socat - UNIX-CONNECT:path).
-- A socket file left by a server that died is replaced; terminate() (here:
-- Ctrl-C) removes it.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local path = arg[1] or "/tmp/evtcp-echo.sock"

local listener = assert(evtcp.listen("unix:" .. path, {
  onConnection = function(_, _, event)
    print("client on " .. event.ip)   -- the socket's path: there is no port
    return { onData = function(_, conn, ev) conn:send(ev.data) end }
  end,
}))
print("echo server listening on unix:" .. listener.address)
io.stdout:flush()

evtcp.signal("INT", function() listener:terminate() end)
evtcp.signal("TERM", function() listener:terminate() end)
evtcp.run()
