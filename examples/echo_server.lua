-- usage: lua5.4 examples/echo_server.lua [port] [address]
-- An echo server: every byte a client sends comes back to it.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local port = tonumber(arg[1]) or 7000
local address = arg[2] or "127.0.0.1"

local Echo = {}  -- the handler of each accepted connection

function Echo:onData(conn, event)
  conn:send(event.data)
end

function Echo:onShutdown(conn)
  print(("%s:%d left"):format(conn.remoteAddress, conn.remotePort))
end

local listener, err = evtcp.listen(port, {
  address = address,
  onConnection = function(_, _, event)
    print(("%s:%d joined"):format(event.ip, event.port))
    return Echo
  end,
})
if not listener then error("cannot listen: " .. err) end

print(("echo server listening on %s:%d"):format(listener.address, listener.port))
io.stdout:flush()
evtcp.run()
