-- bench/real/evtcp_co_redis.lua - a mini Redis on evtcp in blocking style:
-- the framing is receive("l") and receive(n), done in C; no Lua buffer.
local evtcp = require("evtcp")
local resp = dofile(arg[0]:match("^(.-)[^/]*$") .. "resp.lua")

local function serve(conn)
  while true do
    local line = conn:receive("l")
    if not line then break end
    local args
    if line:byte(1) == 42 then -- '*'
      args = {}
      for i = 1, tonumber(line:sub(2)) do
        local len = conn:receive("l")
        local data = len and conn:receive(tonumber(len:sub(2)) + 2)
        if not data then conn:close() return end
        args[i] = data:sub(1, -3)
      end
    else
      args = {}
      for w in line:gmatch("%S+") do args[#args + 1] = w end
    end
    conn:send(resp.reply(args))
  end
  conn:close()
end

local l = assert(evtcp.listen(0, { address = "127.0.0.1", noDelay = true }))
print("listening on 127.0.0.1:" .. l.port)
io.stdout:flush()
evtcp.spawn(function()
  while true do evtcp.spawn(serve, l:accept()) end
end)
evtcp.run()
