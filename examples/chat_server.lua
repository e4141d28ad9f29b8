-- usage: lua5.4 examples/chat_server.lua [port]
-- A chat server: each line a client sends goes to every other client.
-- Try it with two terminals running `nc 127.0.0.1 7001`.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local members = {}  -- connection -> true

local function broadcast(from, text)
  for conn in pairs(members) do
    if conn ~= from then conn:send(text) end
  end
end

local Member = {}
Member.__index = Member

function Member:onConnection(conn)
  self.name = ("%s:%d"):format(conn.remoteAddress, conn.remotePort)
  self.pending = ""
  members[conn] = true
  broadcast(conn, self.name .. " joined\n")
end

function Member:onData(conn, event)
  -- data arrives in arbitrary pieces: cut it into lines ourselves
  self.pending = self.pending .. event.data
  for line in self.pending:gmatch("([^\n]*)\n") do
    broadcast(conn, self.name .. ": " .. line .. "\n")
  end
  self.pending = self.pending:match("[^\n]*$")
end

function Member:onTerminate(conn)
  members[conn] = nil
  broadcast(conn, self.name .. " left\n")
end

local listener = assert(evtcp.listen(tonumber(arg[1]) or 7001, {
  address = "127.0.0.1",
  onConnection = function() return setmetatable({}, Member) end,
}))
print("chat server listening on port " .. listener.port)
evtcp.run()
