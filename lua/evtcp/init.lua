--- evtcp: asynchronous TCP for Lua 5.4 on libevent.
--
-- This is the Lua layer: it loads the C core (evtcp.core) and adds what
-- reads better in Lua: the public names, and the calls that wait (sleep,
-- wait, dial, receive, accept, and send under backpressure).
--
-- A waiting call follows one rule per context:
--   * in a coroutine started by evtcp.spawn, it yields; the loop resumes it;
--   * at the top level, or in a coroutine evtcp did not start, it drives the
--     loop until done (other objects' callbacks run meanwhile);
--   * in a plain callback, it raises the re-entrance error (evtcp.step does).
--
-- How a coroutine waits on an object: it adds itself as a waiter
-- (obj:_addWaiter) for the changes it cares about (input, room to send,
-- state); the C core wakes it, once, when one of them happens, and the
-- coroutine looks again. Any number of coroutines may wait on one object:
-- a reader and a writer on one connection, many acceptors on a listener.
-- A timer bounds the wait when a timeout was given.

local core = require("evtcp.core")

local evtcp = {
  _VERSION = "evtcp 0.1.0",
  version = "0.1.0",
  connect = core.connect,
  listen = core.listen,
  run = core.run,
  step = core.step,
  stop = core.stop,
  after = core.after,
  signal = core.signal,
}

evtcp.TCPConnection = { new = core.connect }
evtcp.TCPListener = { new = core.listen }

-- Argument errors of a function called without a name (pcall(conn.send,
-- conn, {})) are named by where Lua finds the function among the loaded
-- modules: here, as evtcp.TCPConnection.send, never '?'.
package.loaded["evtcp.TCPConnection"] = core.connectionMethods
package.loaded["evtcp.TCPListener"] = core.listenerMethods

local now = core.now
local after = core.after
local connection = core.connectionMethods
local listener = core.listenerMethods
-- the core's own methods, called directly: no __index lookup per message
local read, add_waiter, remove_waiter = connection._read, connection._addWaiter, connection._removeWaiter

-- what a waiter waits for (the core's WAKE_* bits) and the roles one
-- coroutine at a time may hold on a connection
local INPUT, STATE = 1, 4 -- the core's WAKE_* bits
local READER = 1 -- the core's WAIT_READER role
local yield, resume, running, status = coroutine.yield, coroutine.resume, coroutine.running, coroutine.status
local traceback = debug.traceback

---------------------------------------------------------------- scheduling

-- Coroutines started by evtcp.spawn; only these yield to the loop.
local spawned = setmetatable({}, { __mode = "k" })

-- One wake-up function per coroutine, made once: waking must not allocate.
local wake_ok = setmetatable({}, { __mode = "k" })
local wake_timeout = setmetatable({}, { __mode = "k" })

--- Raises the error of a spawned coroutine out of the loop.
local function fail(co, err)
  if type(err) == "string" then err = traceback(co, err) end
  error(err, 0)
end

--- Resumes a spawned coroutine; its error propagates out of the loop.
local function continue(co, ...)
  if status(co) ~= "suspended" then return end
  local ok, err = resume(co, ...)
  if not ok then fail(co, err) end
end

--- The function that resumes co with `ok`, made once per coroutine. It is
-- on the path of every message a coroutine waits for, so it resumes itself.
local function waker(co, ok)
  local cache = ok and wake_ok or wake_timeout
  local f = cache[co]
  if not f then
    f = function()
      if status(co) ~= "suspended" then return end
      local fine, err = resume(co, ok)
      if not fine then fail(co, err) end
    end
    cache[co] = f
  end
  return f
end

--- The spawned coroutine we run in, or nil.
local function current()
  local co, main = running()
  if not main and spawned[co] then return co end
end

--- Waits until obj reports a change (true), or gives up (false): in a
-- coroutine when the deadline passes; at the top level when the deadline
-- passes or when nothing at all can happen any more (no event pending in
-- the loop: waiting longer could only spin). At the top level this is one
-- pass of the loop; the caller looks again.
local function block(obj, deadline, mask, role)
  local co = current()
  if co then
    local wake = wake_ok[co] or waker(co, true)
    add_waiter(obj, wake, mask or STATE, role)
    if not deadline then
      return yield() -- the core removes the waiter when it wakes it
    end
    local timer = after(math.max(0, deadline - now()), waker(co, false))
    local changed = yield()
    timer:cancel()
    if not changed then remove_waiter(obj, wake) end
    return changed
  end
  local wait = 3600
  if deadline then
    wait = deadline - now()
    if wait <= 0 then return false end
  end
  local _, idle = core.step(wait)
  return not idle
end

--- Drives the loop, or yields, until done() is true or block gives up.
local function wait_until(obj, done, deadline, mask)
  while not done() do
    if not block(obj, deadline, mask) then return done() end
  end
  return true
end

local function arg_error(fname, arg, msg)
  error(("bad argument #%d to '%s' (%s)"):format(arg, fname, msg), 3)
end

--- The deadline of a timeout argument; nil (no deadline) for nil or math.huge.
local function check_timeout(fname, timeout, arg)
  if timeout ~= nil and (math.type(timeout) == nil or timeout < 0 or timeout ~= timeout) then
    arg_error(fname, arg, "timeout must be a number >= 0")
  end
  if timeout == nil or timeout == math.huge then return nil end
  return now() + timeout
end

--- Checks that the method's self is of the type named by its metatable.
local function check_self(fname, obj, tname)
  if getmetatable(obj) ~= tname then
    error(("bad argument #1 to '%s' (%s expected, got %s)"):format(fname, tname, type(obj)), 3)
  end
end

-- timers take at most this many seconds; a longer sleep is as good as forever
local LONGEST = 1e9 - 1

-- Spawned coroutines start from the loop in the order they were spawned
-- (timers due at the same moment would start them in any order).
local starting, start_timer = {}, nil
local function start_all()
  start_timer = nil
  local batch = starting
  starting = {}
  for i = 1, #batch, 3 do
    local co, n, args = batch[i], batch[i + 1], batch[i + 2]
    local ok, err = pcall(continue, co, table.unpack(args, 1, n))
    if not ok then -- the error leaves run; the rest start on the next pass, first
      local rest = table.move(batch, i + 3, #batch, 1, {})
      starting = table.move(starting, 1, #starting, #rest + 1, rest)
      if #starting > 0 and not start_timer then start_timer = after(0, start_all) end
      error(err, 0)
    end
  end
end
local function start_soon(co, n, args)
  starting[#starting + 1] = co
  starting[#starting + 1] = n
  starting[#starting + 1] = args
  if not start_timer then start_timer = after(0, start_all) end
end

--- evtcp.spawn(fn, ...) runs fn(...) in a coroutine driven by the loop.
function evtcp.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'spawn' (function expected, got " .. type(fn) .. ")", 2)
  end
  local co = coroutine.create(fn)
  spawned[co] = true
  start_soon(co, select("#", ...), { ... })
  return co
end

--- evtcp.sleep(seconds): yields in a spawned coroutine, else drives the loop.
function evtcp.sleep(seconds)
  if math.type(seconds) == nil or seconds < 0 or seconds ~= seconds then
    error("bad argument #1 to 'sleep' (seconds must be a number >= 0)", 2)
  end
  seconds = math.min(seconds, LONGEST)
  local co = current()
  if co then
    after(seconds, waker(co, true))
    yield()
    return
  end
  local fired = false
  after(seconds, function() fired = true end)
  while not fired do core.step(3600) end
end

---------------------------------------------------------------- waiting

--- conn:wait([timeout]) -> conn.closed
function connection.wait(conn, timeout)
  check_self("wait", conn, "TCPConnection")
  local deadline = check_timeout("wait", timeout, 2)
  wait_until(conn, function() return conn.closed end, deadline)
  return conn.closed
end

--- listener:wait([timeout]) -> listener.closed
function listener.wait(l, timeout)
  check_self("wait", l, "TCPListener")
  local deadline = check_timeout("wait", timeout, 2)
  wait_until(l, function() return l.closed end, deadline)
  return l.closed
end

-- core.connect under the name argument errors should show: 'dial'
local dial = core.connect

--- evtcp.dial(address, port [, options]) -> conn | nil, errorObject
-- options.timeout bounds resolving and connecting. A connection that was
-- established is returned even if a callback closed it meanwhile (its
-- reads then say "closed"); one closed before it connected gives the
-- error object of why, or one of kind "io" if the program closed it.
function evtcp.dial(address, port, options)
  if options == nil and type(port) == "table" then port, options = nil, port end -- dial("unix:/p", options)
  local conn = dial(address, port, options or {})
  wait_until(conn, function() return conn:_state() ~= "connecting" end)
  local state, _, was_open = conn:_state()
  if state == "open" or was_open then return conn end
  conn:wait()
  return nil, conn.errors[1] or core.newError("io", "evtcp", "closed before it was connected")
end

--- conn:receive([pattern [, timeout]]) -> data | nil, err, partial
-- The core's receive handles a spawned coroutine without a timeout itself
-- (it yields from C); it calls this for the rest.
local function receive(conn, pattern, timeout, delimiter)
  local deadline = timeout ~= nil and check_timeout(delimiter and "receiveUntil" or "receive", timeout, 3) or nil
  local data, err, partial = read(conn, pattern, delimiter)
  if data then return data end -- what is buffered is enough: no wait at all
  if err ~= "wait" then return nil, err, partial end
  while true do
    if not block(conn, deadline, INPUT | STATE, READER) then
      -- the deadline passed, or (top level) nothing at all can happen
      data, err, partial = read(conn, pattern, delimiter)
      if data then return data end
      if err ~= "wait" then return nil, err, partial end
      return nil, "timeout", conn:_take()
    end
    data, err, partial = read(conn, pattern, delimiter)
    if data then return data end
    if err ~= "wait" then return nil, err, partial end
  end
end

--- conn:startTLS's wait (the core calls it in a coroutine or at the top
-- level): true once the handshake is done, or nil and why it failed.
local function upgrade_wait(conn)
  wait_until(conn, function()
    local state, _, _, upgrading = conn:_state()
    return state ~= "open" or not upgrading
  end)
  local state, _, _, upgrading = conn:_state()
  if state == "open" and not upgrading then return true end
  conn:wait()
  local errors = conn.errors
  return nil, errors[#errors] or core.newError("tls", "evtcp", "the connection closed during the TLS upgrade")
end

core.setScheduler(spawned, receive, upgrade_wait)

--- evtcp.setResolver({ hosts = path }) -> true | nil, message
-- Configures this loop's resolver: `hosts` is a file in the /etc/hosts
-- format whose names are answered too (added to the system's, which come
-- first for a name in both). The only key so far; others raise.
function evtcp.setResolver(options)
  if type(options) ~= "table" then arg_error("setResolver", 1, "table expected, got " .. type(options)) end
  for k in pairs(options) do
    if k ~= "hosts" then arg_error("setResolver", 1, "unknown option '" .. tostring(k) .. "'") end
  end
  if options.hosts == nil then return true end
  if type(options.hosts) ~= "string" then arg_error("setResolver", 1, "option 'hosts' must be a string") end
  return core.addHosts(options.hosts)
end

--- evtcp.resolve(name [, timeout]) -> { ip, ... } | nil, errorObject
-- The addresses of a host name (IPv4 and IPv6, in the resolver's order,
-- each once); kind "dns" when there are none, "timeout" when the timeout
-- passed first. A waiting call: yields in a spawned coroutine, drives the
-- loop elsewhere, raises inside a plain callback.
function evtcp.resolve(name, timeout)
  if type(name) ~= "string" then arg_error("resolve", 1, "string expected, got " .. type(name)) end
  if #name == 0 or #name > 255 then arg_error("resolve", 1, "name must be 1 to 255 bytes") end
  if name:find("\0", 1, true) then arg_error("resolve", 1, "name must not contain a NUL byte") end
  local deadline = check_timeout("resolve", timeout, 2)
  local co, waiting = current(), false
  local addrs, err, answered
  local request = core.lookup(name, function(_, a, e)
    addrs, err, answered = a, e, true
    if waiting then waker(co, true)() end
  end)
  if co then
    local timer = deadline and after(math.max(0, deadline - now()), waker(co, false))
    waiting = true
    local ok = yield()
    waiting = false
    if timer then timer:cancel() end
    if not ok and not answered then request:cancel() end
  else
    while not answered do
      local wait = deadline and deadline - now() or 3600
      if wait <= 0 then request:cancel(); break end
      core.step(wait)
    end
  end
  if not answered then return nil, core.newError("timeout", "dns", "resolve timeout") end
  if addrs then return addrs end
  return nil, err
end

--- listener:accept([timeout]) -> conn | nil, err
function listener.accept(l, timeout)
  check_self("accept", l, "TCPListener")
  local deadline = check_timeout("accept", timeout, 2)
  if l.handler.onConnection ~= nil then
    error("evtcp: this listener has an onConnection callback; it cannot also accept()", 2)
  end
  while true do
    if l.closed then return nil, "closed" end
    local conn = l:_takeHeld()
    if conn then return conn end
    if not block(l, deadline, INPUT | STATE) then
      conn = l:_takeHeld()
      if conn then return conn end
      return nil, "timeout"
    end
  end
end

return evtcp
