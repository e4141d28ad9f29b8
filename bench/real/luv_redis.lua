-- bench/real/luv_redis.lua - the same mini Redis on luv.
local uv = require("luv")
local resp = dofile(arg[0]:match("^(.-)[^/]*$") .. "resp.lua")

local server = uv.new_tcp()
assert(server:bind("127.0.0.1", 0))
assert(server:listen(511, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  client:nodelay(true)
  local buffer = ""
  client:read_start(function(rerr, chunk)
    if rerr or not chunk then client:close() return end
    local replies
    replies, buffer = resp.parse(buffer .. chunk)
    if #replies > 0 then client:write(replies) end
  end)
end))
print("listening on 127.0.0.1:" .. server:getsockname().port)
io.stdout:flush()
uv.run()
