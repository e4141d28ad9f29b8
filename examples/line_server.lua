-- usage: lua5.4 examples/line_server.lua [PORT]
-- A line-protocol server in callback style, one object per client: the
-- Session class is the handler, so each connection's state lives in its own
-- instance; `framing = "line"` makes evtcp hand onData one whole line at a
-- time, however the bytes arrive. Commands: ECHO <text>, COUNT (lines this
-- client sent), QUIT.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local Session = {}
Session.__index = Session

function Session.new() return setmetatable({ lines = 0 }, Session) end

Session.framing = "line" -- one line per onData, without its "\n" or "\r\n"

function Session:onConnection(conn) conn:send("hello\n") end

function Session:onData(conn, event)
  local line = event.data
  self.lines = self.lines + 1
  local verb, rest = line:match("^(%u+)%s*(.*)$")
  if verb == "ECHO" then conn:send(rest, "\n")
  elseif verb == "COUNT" then conn:send(self.lines, "\n")
  elseif verb == "QUIT" then conn:send("bye\n") conn:close()
  else conn:send("unknown command\n") end
end

local listener = assert(evtcp.listen(tonumber(arg[1]) or 7001, { address = "127.0.0.1",
  onConnection = function() return Session.new() end }))
print(("line server listening on 127.0.0.1:%d"):format(listener.port))
io.stdout:flush()
evtcp.run()
