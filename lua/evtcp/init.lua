--- evtcp: asynchronous TCP for Lua 5.4 on libevent.
--
-- This is the Lua layer: it loads the C core (evtcp.core) and adds what
-- reads better in Lua: the public names, and the calls that wait (sleep,
-- wait), which drive the loop at top level. See README.md for the tour and
-- ../shared/API.md for the contract.

local core = require("evtcp.core")

local evtcp = {
  _VERSION = "evtcp scm",
  connect = core.connect,
  listen = core.listen,
  run = core.run,
  step = core.step,
  stop = core.stop,
  after = core.after,
}

evtcp.TCPConnection = { new = core.connect }
evtcp.TCPListener = { new = core.listen }

local now = core.now

--- Drives the loop from a blocking call at the top level until done()
-- returns true or the deadline passes. Returns whether done() became true.
-- core.step raises the re-entrance error when called inside a callback.
local function drive(done, timeout)
  local deadline = timeout and now() + timeout
  while not done() do
    local wait = 3600
    if deadline then
      wait = deadline - now()
      if wait <= 0 then return false end
    end
    local _, idle = core.step(wait)
    -- nothing at all was pending: nothing can ever make done() true
    if idle and not done() then return false end
  end
  return true
end

local function check_timeout(fname, timeout, arg)
  if timeout ~= nil and (math.type(timeout) == nil or timeout < 0 or timeout ~= timeout) then
    error(("bad argument #%d to '%s' (timeout must be a number >= 0)"):format(arg, fname), 3)
  end
end

--- evtcp.sleep(seconds): waits, running other objects' callbacks meanwhile.
function evtcp.sleep(seconds)
  if math.type(seconds) == nil or seconds < 0 then
    error("bad argument #1 to 'sleep' (seconds must be a number >= 0)", 2)
  end
  local fired = false
  core.after(seconds, function() fired = true end)
  drive(function() return fired end)
end

local connection = core.connectionMethods
local listener = core.listenerMethods

--- conn:wait([timeout]) -> conn.closed
function connection.wait(conn, timeout)
  check_timeout("wait", timeout, 2)
  drive(function() return conn.closed end, timeout)
  return conn.closed
end

--- listener:wait([timeout]) -> listener.closed
function listener.wait(l, timeout)
  check_timeout("wait", timeout, 2)
  drive(function() return l.closed end, timeout)
  return l.closed
end

return evtcp
