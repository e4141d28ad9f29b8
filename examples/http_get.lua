-- usage: lua5.4 examples/http_get.lua [port] [path] [host]
-- An HTTP/1.0 GET, top to bottom: the status line, the headers, then the
-- body until the server closes.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local port = tonumber(arg[1]) or 8000
local path = arg[2] or "/"
local host = arg[3] or "127.0.0.1"

local conn, err = evtcp.dial(host, port, { timeout = 5 })
if not conn then error("cannot connect: " .. err.message) end
conn:send("GET ", path, " HTTP/1.0\r\nHost: ", host, "\r\n\r\n")

local status = assert(conn:receive("l", 5))
print(status)
local headers = {}
while true do
  local line = assert(conn:receive("l", 5))
  if line == "" then break end
  local name, value = line:match("^([^:]+):%s*(.*)$")
  headers[name:lower()] = value
end
local body = assert(conn:receive("a", 5))
print(("content-type: %s, %d bytes"):format(headers["content-type"], #body))
io.write(body)
