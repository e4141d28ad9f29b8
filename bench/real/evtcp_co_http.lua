-- bench/real/evtcp_co_http.lua - the HTTP/1.1 responder in blocking style:
-- receiveUntil("\r\n\r\n") finds each request head in C.
local evtcp = require("evtcp")

local RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"

local function serve(conn)
  while conn:receiveUntil("\r\n\r\n") do conn:send(RESPONSE) end
  conn:close()
end

local l = assert(evtcp.listen(0, { address = "127.0.0.1", noDelay = true }))
print("listening on 127.0.0.1:" .. l.port)
io.stdout:flush()
evtcp.spawn(function()
  while true do evtcp.spawn(serve, l:accept()) end
end)
evtcp.run()
