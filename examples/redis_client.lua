-- usage: lua5.4 examples/redis_client.lua [port] [address]
-- PING, SET and GET against a Redis server, in blocking style: RESP is a
-- line protocol, so receive("l") and receive(n) read it top to bottom.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local port = tonumber(arg[1]) or 6379
local address = arg[2] or "127.0.0.1"

--- Sends one command as a RESP array of bulk strings.
local function command(conn, ...)
  local args = { ... }
  local parts = { "*" .. #args .. "\r\n" }
  for _, a in ipairs(args) do
    a = tostring(a)
    parts[#parts + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  assert(conn:send(table.concat(parts)))
end

--- Reads one RESP reply: simple strings, errors, integers, bulk strings.
local function reply(conn)
  local line = assert(conn:receive("l", 5))
  local kind, rest = line:sub(1, 1), line:sub(2)
  if kind == "+" then return rest end
  if kind == "-" then return nil, rest end
  if kind == ":" then return math.tointeger(rest) end
  if kind == "$" then
    local n = math.tointeger(rest)
    if n < 0 then return nil end           -- a missing key
    local data = assert(conn:receive(n + 2, 5))  -- the bytes and their \r\n
    return data:sub(1, n)
  end
  error("unexpected reply: " .. line)
end

evtcp.spawn(function()
  local conn = assert(evtcp.dial(address, port))
  command(conn, "PING")
  print("PING ->", reply(conn))
  command(conn, "SET", "evtcp:greeting", "hello from evtcp")
  print("SET  ->", reply(conn))
  command(conn, "GET", "evtcp:greeting")
  print("GET  ->", reply(conn))
  conn:close()
end)
evtcp.run()
