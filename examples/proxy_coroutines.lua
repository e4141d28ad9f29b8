--- A full-duplex TCP proxy in blocking style: each client gets a connection
-- to the target, and two coroutines copy bytes, one each way. A half-close
-- is relayed (allowHalfOpen): a client that sends its request and shuts
-- down its side still gets the whole reply.
--
-- usage: lua5.4 examples/proxy_coroutines.lua TARGET_PORT [TARGET_HOST [LISTEN_PORT]]
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local target_port = assert(tonumber(arg[1]),
  "usage: lua5.4 examples/proxy_coroutines.lua TARGET_PORT [TARGET_HOST [LISTEN_PORT]]")
local target_host = arg[2] or "127.0.0.1"
local listen_port = tonumber(arg[3]) or 0

--- Copies from one connection to the other until the first one ends, then
-- half-closes the other: the end of the stream is relayed too. send() waits
-- while the other side is slow, so memory stays bounded.
local function pump(from, to)
  while true do
    local data = from:receive()
    if not data or not to:send(data) then break end
  end
  to:shutdown()
end

local function serve(client)
  local server = evtcp.dial(target_host, target_port, { allowHalfOpen = true, timeout = 10 })
  if not server then return client:close() end
  local directions = 2
  local function done()
    directions = directions - 1
    if directions == 0 then client:close() server:close() end
  end
  evtcp.spawn(function() pump(client, server) done() end) -- requests
  pump(server, client) -- replies
  done()
end

local listener = assert(evtcp.listen(listen_port, { address = "127.0.0.1", allowHalfOpen = true }))
print(("proxying 127.0.0.1:%d -> %s:%d"):format(listener.port, target_host, target_port))
io.stdout:flush()

evtcp.spawn(function()
  while true do
    local client = listener:accept()
    if not client then break end
    evtcp.spawn(serve, client)
  end
end)
evtcp.run()
