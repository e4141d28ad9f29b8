-- usage: lua5.4 examples/pg_ssl.lua [port] [address] [cafile]
-- The start of a PostgreSQL session over TLS, as libpq does it with
-- sslmode=verify-full: the SSLRequest in the clear, the server's one-byte
-- answer ('S': go ahead), conn:startTLS, then the startup message over TLS
-- and the server's authentication request. PostgreSQL has no TLS port: a
-- client upgrades the plain connection (STARTTLS, in other protocols).
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local port = tonumber(arg[1]) or 5432
local address = arg[2] or "127.0.0.1"
local cafile = arg[3] -- nil: the system's CA store

local SSL_REQUEST = 80877103          -- 1234 << 16 | 5679
local PROTOCOL_3_0 = 196608           -- 3 << 16

--- One backend message: its type byte and body.
local function message(conn)
  local kind = assert(conn:receive(1, 5))
  local len = string.unpack(">i4", assert(conn:receive(4, 5)))
  return kind, assert(conn:receive(len - 4, 5))
end

evtcp.spawn(function()
  local conn = assert(evtcp.dial(address, port, { timeout = 5 }))
  conn:send(string.pack(">i4i4", 8, SSL_REQUEST))
  local answer = assert(conn:receive(1, 5))
  if answer ~= "S" then error("the server does not do TLS (answered " .. ("%q"):format(answer) .. ")") end
  -- nothing may follow the 'S' in the clear: startTLS refuses it if it did
  assert(conn:startTLS({ ca = cafile, serverName = "localhost" }))
  print("tls", conn.tls.protocol, conn.tls.cipher)
  local params = "user\0postgres\0database\0postgres\0\0"
  conn:send(string.pack(">i4i4", 8 + #params, PROTOCOL_3_0), params)
  local kind, body = message(conn)
  if kind == "R" then
    local code = string.unpack(">i4", body)
    -- 0: no password needed; 10: SASL, with the mechanisms offered
    print("authentication request", code, (body:sub(5):gsub("%z", " ")))
  else
    print("server said", kind, (body:gsub("%z", " ")))
  end
  conn:close()
end)
evtcp.run()
