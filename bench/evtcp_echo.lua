-- evtcp echo server, callback style. usage: lua5.4 evtcp_echo.lua [port]
local evtcp = require("evtcp")
local Echo = {}
function Echo:onData(conn, event) conn:send(event.data) end
function Echo:onShutdown() end
local l = assert(evtcp.listen(tonumber(arg[1]) or 0, {
  address = "127.0.0.1",
  onConnection = function() return Echo end,
}))
print("listening on 127.0.0.1:" .. l.port)
io.stdout:flush()
evtcp.run()
