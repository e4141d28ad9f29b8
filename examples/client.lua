-- usage: lua5.4 examples/client.lua [address] [port]
-- A client written like 4D's TCPConnection example: a class whose methods
-- are the callbacks, with connect(), getInfo() and disconnect().
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local InfoClient = {}
InfoClient.__index = InfoClient

function InfoClient.new(address, port)
  return setmetatable({ address = address, port = port, connection = nil }, InfoClient)
end

function InfoClient:connect()
  self.connection = evtcp.TCPConnection.new(self.address, self.port, self)
end

function InfoClient:getInfo()
  self.connection:send("Information\n")
end

function InfoClient:disconnect()
  self.connection:shutdown()  -- half-close: the answer still comes in
end

function InfoClient:onConnection(conn, event)
  print("connection established to " .. event.ip .. ":" .. event.port)
end

function InfoClient:onData(conn, event)
  -- there is no guarantee one event carries the whole answer
  io.write("received: " .. event.data)
end

function InfoClient:onShutdown(conn, event)
  print("connection closed")
end

function InfoClient:onError(conn, event)
  print("connection error (" .. event.error.kind .. "): " .. event.error.message)
end

function InfoClient:onTerminate(conn, event)
  print("connection terminated")
end

local client = InfoClient.new(arg[1] or "127.0.0.1", tonumber(arg[2]) or 7000)
client:connect()
client:getInfo()
client:disconnect()
client.connection:wait(10)
os.exit(#client.connection.errors == 0)
