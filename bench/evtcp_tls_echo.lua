-- bench/evtcp_tls_echo.lua - the TLS echo server on evtcp, callback style.
-- usage: lua5.4 evtcp_tls_echo.lua cert.pem key.pem
local evtcp = require("evtcp")

local Echo = {}
function Echo:onData(conn, event) conn:send(event.data) end

local listener = assert(evtcp.listen(0, {
  address = "127.0.0.1",
  tls = { cert = arg[1], key = arg[2] },
  noDelay = true, -- as Node's default: Nagle would hold a session ticket or a small echo back
  onConnection = function() return Echo end,
}))
print(("listening on %s:%d"):format(listener.address, listener.port))
io.stdout:flush()
evtcp.run()
