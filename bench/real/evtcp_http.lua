-- bench/real/evtcp_http.lua - a minimal HTTP/1.1 keep-alive responder on
-- evtcp, callback style: `framing` cuts the request heads in C, so onData
-- gets one whole head per call and there is no buffer in Lua.
local evtcp = require("evtcp")

local RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"

local Client = { framing = { delimiter = "\r\n\r\n" } }
function Client:onData(conn) conn:send(RESPONSE) end

local l = assert(evtcp.listen(0, { address = "127.0.0.1", noDelay = true, onConnection = function() return Client end }))
print("listening on 127.0.0.1:" .. l.port)
io.stdout:flush()
evtcp.run()
