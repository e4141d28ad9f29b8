-- usage: lua5.4 examples/tls_echo.lua CERT KEY CA
-- Serves TLS (an echo server with CERT and KEY) and dials it, verifying the
-- server against CA. README.md shows how to make a test certificate.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local cert, key, ca = arg[1], arg[2], arg[3]
assert(cert and key and ca, "usage: lua5.4 examples/tls_echo.lua CERT KEY CA")

local server = assert(evtcp.listen(0, {
  address = "127.0.0.1",
  tls = { cert = cert, key = key },
  onConnection = function()
    return { onData = function(_, conn, event) conn:send(event.data) end }
  end,
}))

local echoed = false
evtcp.connect("localhost", server.port, {
  tls = { ca = ca },  -- verify the server; its name must be localhost
  onConnection = function(_, conn)
    print(("connected with %s, %s, to %s"):format(conn.tls.protocol, conn.tls.cipher,
      conn.tls.peerCertificate.subject))
    conn:send("hello over TLS")
  end,
  onData = function(_, conn, event)
    print("echoed: " .. event.data)
    echoed = true
    conn:close()
  end,
  onError = function(_, _, event) print("failed: " .. event.error.message) end,
  onTerminate = function() server:terminate() end,
})

evtcp.run()
os.exit(echoed) -- a failed verification is a failure of the program
