-- usage: lua5.4 examples/graceful_server.lua [port] [deadline seconds]
-- A line server that shuts down gracefully: on SIGTERM or SIGINT (Ctrl-C)
-- it stops accepting, lets the clients it has finish (each gets an answer
-- to every line it sends), closes whoever is still there once the
-- deadline passes, and exits 0.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local port = tonumber(arg[1]) or 7000
local deadline = tonumber(arg[2]) or 10

local live = {}     -- connection -> true, while it is open
local stopping = false

local Client = {}

function Client:onConnection(conn)
  live[conn] = true
end

function Client:onData(conn, event)
  conn:send("ok ", #event.data, "\n")
end

function Client:onTerminate(conn)
  live[conn] = nil
end

local listener = assert(evtcp.listen(port, {
  address = "127.0.0.1",
  onConnection = function() return Client end,
}))
print(("graceful server listening on %s:%d"):format(listener.address, listener.port))
io.stdout:flush()

local signals = {}
local function shut_down(_, name)
  if stopping then return end
  stopping = true
  local n = 0
  for _ in pairs(live) do n = n + 1 end
  print(("%s: no new clients; waiting up to %g s for %d"):format(name, deadline, n))
  io.stdout:flush()
  listener:terminate()                         -- the port is free at once
  for _, s in ipairs(signals) do s:cancel() end -- a second Ctrl-C kills as usual
  -- the deadline timer keeps run() going; it ends early when all are gone
  local timer = evtcp.after(deadline, function()
    for conn in pairs(live) do conn:close() end  -- queued answers still go out
  end)
  Client.onTerminate = function(_, conn)
    live[conn] = nil
    if next(live) == nil then timer:cancel() end
  end
  if next(live) == nil then timer:cancel() end
end
signals[1] = evtcp.signal("TERM", shut_down)
signals[2] = evtcp.signal("INT", shut_down)

evtcp.run()   -- returns once the listener is gone and every client has left
print("bye")
os.exit(0)
