-- usage: lua5.4 examples/tls_client.lua HOST PORT CA_FILE [MESSAGE]
-- A TLS client that trusts a private CA: the server's certificate must be
-- signed by CA_FILE and name HOST, or the connection fails (kind "tls").
-- Sends MESSAGE (default "hello") and prints the first line of the reply.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local host, port, ca = arg[1], tonumber(arg[2]), arg[3]
assert(host and port and ca, "usage: lua5.4 examples/tls_client.lua HOST PORT CA_FILE [MESSAGE]")

evtcp.spawn(function()
  local conn, err = evtcp.dial(host, port, { tls = { ca = ca, verify = true }, timeout = 10 })
  if not conn then
    print("failed: " .. tostring(err))
    os.exit(1)
  end
  print(("connected: %s, %s, server %s"):format(conn.tls.protocol, conn.tls.cipher,
                                                 conn.tls.peerCertificate.subject))
  conn:send(arg[4] or "hello", "\n")
  print("reply: " .. tostring(conn:receive("l", 10)))
  conn:close()
end)
evtcp.run()
