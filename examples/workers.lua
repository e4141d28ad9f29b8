-- usage: lua5.4 examples/workers.lua [port] [workers]
-- Several processes serving one port: each worker is a whole evtcp server
-- with its own listener on the same address and port (reusePort), and the
-- kernel spreads new connections over them. This process starts the
-- workers, waits, and stops them on SIGTERM or SIGINT.
-- A worker answers each line with its number: "worker 2: <line>".
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

if arg[1] == "--worker" then
  local port, id = tonumber(arg[2]), arg[3]
  local listener = assert(evtcp.listen(port, {
    address = "127.0.0.1",
    reusePort = true,
    onConnection = function()
      return { onData = function(_, conn, ev) conn:send("worker ", id, ": ", ev.data) end }
    end,
  }))
  print(("worker %s listening on port %d"):format(id, listener.port))
  io.stdout:flush()
  evtcp.run()
  return
end

local port = tonumber(arg[1]) or 7000
local count = tonumber(arg[2]) or 2

if port == 0 then -- pick a free port for all of them
  local probe = assert(evtcp.listen(0, { address = "127.0.0.1", reusePort = true }))
  port = probe.port
  probe:terminate()
end

-- the workers run under this process's interpreter (the lowest arg index)
local interpreter = "lua5.4"
for i = -1, -10, -1 do interpreter = arg[i] or interpreter; if not arg[i - 1] then break end end

local pids = {}
for id = 1, count do
  -- a worker prints to our stderr: our stdout is this pipe, gone once read
  local p = io.popen(("%s %s --worker %d %d >&2 & echo $!"):format(interpreter, arg[0], port, id))
  pids[#pids + 1] = p:read("l")
  p:close()
end
print(("%d workers listening on 127.0.0.1:%d (pids %s)"):format(count, port, table.concat(pids, " ")))
io.stdout:flush()

local running = true
local function stop() running = false end
evtcp.signal("TERM", stop)
evtcp.signal("INT", stop)
while running do evtcp.sleep(0.2) end -- signal handlers alone do not keep run going
os.execute("kill " .. table.concat(pids, " "))
print("workers stopped")
