-- bench/real/evtcp_redis.lua - a mini Redis on evtcp, callback style: the
-- input buffered and parsed in Lua, as a user writes it today.
local evtcp = require("evtcp")
local resp = dofile(arg[0]:match("^(.-)[^/]*$") .. "resp.lua")

local Client = {}
function Client:onConnection(conn) conn.buffer = "" end
function Client:onData(conn, event)
  local replies, rest = resp.parse(conn.buffer .. event.data)
  conn.buffer = rest
  if #replies > 0 then conn:send(replies) end
end

local l = assert(evtcp.listen(0, { address = "127.0.0.1", noDelay = true, onConnection = function() return Client end }))
print("listening on 127.0.0.1:" .. l.port)
io.stdout:flush()
evtcp.run()
