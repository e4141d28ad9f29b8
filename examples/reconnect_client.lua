-- usage: lua5.4 examples/reconnect_client.lua PORT [HOST [ATTEMPTS]]
-- A client that keeps trying: when connecting fails it waits, doubling the
-- wait each time (0.1 s, 0.2 s, 0.4 s ... at most 5 s), and tries again,
-- ATTEMPTS times at most (default 10). Once connected it prints the
-- server's first line.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local port = assert(tonumber(arg[1]), "usage: lua5.4 examples/reconnect_client.lua PORT [HOST [ATTEMPTS]]")
local host = arg[2] or "127.0.0.1"
local attempts = tonumber(arg[3]) or 10

evtcp.spawn(function()
  local wait = 0.1
  for attempt = 1, attempts do
    local conn, err = evtcp.dial(host, port, { timeout = 5 })
    if conn then
      local line = conn:receive("l", 10)
      print(("connected after %d attempt(s): %s"):format(attempt, tostring(line)))
      conn:close()
      return
    end
    print(("attempt %d: %s; next in %.1f s"):format(attempt, tostring(err), wait))
    io.stdout:flush()
    evtcp.sleep(wait)
    wait = math.min(wait * 2, 5)
  end
  print("giving up")
  os.exit(1)
end)
evtcp.run()
