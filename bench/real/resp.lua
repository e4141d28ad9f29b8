-- bench/real/resp.lua - the mini Redis shared by the Lua servers: a RESP
-- parser over a string buffer (what a callback-style server must do in
-- Lua) and the commands redis-benchmark's ping, set, get and incr use.
local M = {}

local store = {}

--- The reply to one command (an array of strings).
function M.reply(args)
  local cmd = args[1] and args[1]:upper()
  if cmd == "PING" then return "+PONG\r\n" end
  if cmd == "SET" then store[args[2]] = args[3] return "+OK\r\n" end
  if cmd == "GET" then
    local v = store[args[2]]
    if v == nil then return "$-1\r\n" end
    return "$" .. #v .. "\r\n" .. v .. "\r\n"
  end
  if cmd == "INCR" then
    local v = (tonumber(store[args[2]]) or 0) + 1
    store[args[2]] = tostring(v)
    return ":" .. v .. "\r\n"
  end
  if cmd == "CONFIG" then return "*0\r\n" end
  return "-ERR unknown command\r\n"
end

--- Parses the commands at the start of buf; returns the replies (one
-- string) and the unparsed rest.
function M.parse(buf)
  local out, pos, n = {}, 1, #buf
  while pos <= n do
    local eol = buf:find("\r\n", pos, true)
    if not eol then break end
    local args
    if buf:byte(pos) == 42 then -- '*': an array of bulk strings
      local count = tonumber(buf:sub(pos + 1, eol - 1))
      local p, complete = eol + 2, true
      args = {}
      for i = 1, count do
        local e = buf:find("\r\n", p, true)
        if not e then complete = false break end
        local len = tonumber(buf:sub(p + 1, e - 1))
        if e + 2 + len + 1 > n then complete = false break end
        args[i] = buf:sub(e + 2, e + 1 + len)
        p = e + len + 4
      end
      if not complete then break end
      pos = p
    else -- inline: words on one line
      args = {}
      for w in buf:sub(pos, eol - 1):gmatch("%S+") do args[#args + 1] = w end
      pos = eol + 2
    end
    out[#out + 1] = M.reply(args)
  end
  return table.concat(out), buf:sub(pos)
end

return M
