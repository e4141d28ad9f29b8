-- bench/real/evtcp_http.lua - a minimal HTTP/1.1 keep-alive responder on
-- evtcp, callback style: request heads found in a Lua buffer.
local evtcp = require("evtcp")

local RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"

local Client = {}
function Client:onConnection(conn) conn.buffer = "" end
function Client:onData(conn, event)
  local buf, pos, n = conn.buffer .. event.data, 1, 0
  while true do
    local e = buf:find("\r\n\r\n", pos, true)
    if not e then break end
    n, pos = n + 1, e + 4
  end
  conn.buffer = buf:sub(pos)
  if n > 0 then conn:send(RESPONSE:rep(n)) end
end

local l = assert(evtcp.listen(0, { address = "127.0.0.1", noDelay = true, onConnection = function() return Client end }))
print("listening on 127.0.0.1:" .. l.port)
io.stdout:flush()
evtcp.run()
