-- bench/real/luv_http.lua - the HTTP/1.1 responder on luv.
local uv = require("luv")

local RESPONSE = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"

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
    local buf, pos, n = buffer .. chunk, 1, 0
    while true do
      local e = buf:find("\r\n\r\n", pos, true)
      if not e then break end
      n, pos = n + 1, e + 4
    end
    buffer = buf:sub(pos)
    if n > 0 then client:write(RESPONSE:rep(n)) end
  end)
end))
print("listening on 127.0.0.1:" .. server:getsockname().port)
io.stdout:flush()
uv.run()
