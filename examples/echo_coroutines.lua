-- usage: lua5.4 examples/echo_coroutines.lua [port] [address]
-- The echo server in blocking style: one coroutine accepts, one per client
-- reads and writes back.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local listener = assert(evtcp.listen(tonumber(arg[1]) or 7000, { address = arg[2] or "127.0.0.1" }))
print(("echo server (coroutines) listening on %s:%d"):format(listener.address, listener.port))
io.stdout:flush()

local function serve(conn)
  while true do
    local data = conn:receive()   -- whatever has arrived, at least a byte
    if not data then break end    -- "closed", or the error
    conn:send(data)               -- waits if the client reads slowly
  end
  conn:close()
end

evtcp.spawn(function()
  while true do
    local conn = listener:accept()
    evtcp.spawn(serve, conn)
  end
end)
evtcp.run()
