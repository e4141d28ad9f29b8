-- evtcp echo server, coroutine style. usage: lua5.4 evtcp_co_echo.lua [port]
local evtcp = require("evtcp")
local l = assert(evtcp.listen(tonumber(arg[1]) or 0, { address = "127.0.0.1" }))
print("listening on 127.0.0.1:" .. l.port)
io.stdout:flush()
local function serve(conn)
  while true do
    local data = conn:receive()
    if not data then break end
    conn:send(data)
  end
  conn:close()
end
evtcp.spawn(function()
  while true do evtcp.spawn(serve, l:accept()) end
end)
evtcp.run()
