-- usage: lua5.4 examples/redis_pool.lua [port] [address]
-- Ten coroutines, each making twenty requests to a Redis server, each
-- request "dial, command, reply, setKeepAlive": the pool hands a kept
-- connection to the next dial, so the whole run needs about one
-- connection per coroutine instead of one per request. Redis's own
-- counter (INFO stats: total_connections_received) shows it.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local port = tonumber(arg[1]) or 6379
local address = arg[2] or "127.0.0.1"
local WORKERS, REQUESTS = 10, 20

--- One command, as a RESP array; its reply (a line, or a bulk string).
local function call(...)
  local conn = assert(evtcp.dial(address, port, { timeout = 5 }))
  local args, parts = { ... }, {}
  parts[1] = "*" .. #args .. "\r\n"
  for _, a in ipairs(args) do parts[#parts + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n" end
  assert(conn:send(table.concat(parts)))
  local line = assert(conn:receive("l", 5))
  local result = line:sub(2)
  if line:sub(1, 1) == "$" then result = assert(conn:receive(tonumber(result) + 2, 5)):sub(1, -3) end
  if line:sub(1, 1) == "-" then error("redis: " .. result) end
  -- nothing unread, nothing queued: back into the pool (idle 10 s, 10 kept)
  assert(conn:setKeepAlive(10, WORKERS))
  return result
end

local function connections_received()
  return tonumber(call("INFO", "stats"):match("total_connections_received:(%d+)"))
end

evtcp.spawn(function()
  local before = connections_received()
  call("DEL", "evtcp:pool:counter")
  local running = WORKERS
  for _ = 1, WORKERS do
    evtcp.spawn(function()
      for _ = 1, REQUESTS do call("INCR", "evtcp:pool:counter") end
      running = running - 1
    end)
  end
  while running > 0 do evtcp.sleep(0.01) end
  local counter = call("GET", "evtcp:pool:counter")
  print(("requests: %d, counter: %s, new connections: %d"):format(
    WORKERS * REQUESTS, counter, connections_received() - before))
end)
evtcp.run()
