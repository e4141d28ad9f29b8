-- luv echo server, as luv's own examples write it. usage: lua5.4 luv_echo.lua [port]
local uv = require("luv")
local server = uv.new_tcp()
assert(server:bind("127.0.0.1", tonumber(arg[1]) or 0))
assert(server:listen(511, function(err)
  assert(not err, err)
  local client = uv.new_tcp()
  server:accept(client)
  client:read_start(function(rerr, chunk)
    if rerr or not chunk then
      client:close()
    else
      client:write(chunk)
    end
  end)
end))
print("listening on 127.0.0.1:" .. server:getsockname().port)
io.stdout:flush()
uv.run()
