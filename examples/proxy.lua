-- usage: lua5.4 examples/proxy.lua TARGET_PORT [TARGET_HOST [LISTEN_PORT]]
-- A TCP proxy in callback style, with backpressure: when one side cannot
-- keep up, reading from the other pauses until its queue drains (onDrain).
-- A half-close is relayed (allowHalfOpen), so a request whose sender shut
-- down its side still gets the whole reply.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local target_port = assert(tonumber(arg[1]), "usage: lua5.4 examples/proxy.lua TARGET_PORT [TARGET_HOST [LISTEN_PORT]]")
local target_host = arg[2] or "127.0.0.1"
local listen_port = tonumber(arg[3]) or 0
local LIMIT = 256 * 1024 -- bytes queued toward one side before the other pauses

--- The handler of one end of a pair: what `me` reads goes to `other`.
local function relay(pair, me, other)
  return {
    allowHalfOpen = true,
    onConnection = function(_, conn) pair[me] = pair[me] or conn end,
    onData = function(_, conn, event)
      local out = pair[other]
      out:send(event.data)
      if out.bufferedAmount > LIMIT then conn:pause() end -- too fast: wait for onDrain
    end,
    onDrain = function() pair[other]:resume() end, -- my queue emptied: my feeder may read
    onEnd = function() pair[other]:shutdown() end, -- relay the half-close
    onShutdown = function() pair[other]:close() end,
    onError = function() pair[other]:reset() end,
  }
end

local listener = assert(evtcp.listen(listen_port, { address = "127.0.0.1", onConnection = function()
  local pair = {}
  pair.server = evtcp.connect(target_host, target_port, relay(pair, "server", "client"))
  return relay(pair, "client", "server")
end }))
print(("proxying 127.0.0.1:%d -> %s:%d"):format(listener.port, target_host, target_port))
io.stdout:flush()
evtcp.run()
