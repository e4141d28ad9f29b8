-- Shared helpers for the specs: every wait is bounded by a deadline, and
-- every server listens on 127.0.0.1 (or ::1) port 0.
local evtcp = require("evtcp")
local core = require("evtcp.core")

local H = {}

H.now = core.now

--- Runs the loop until cond() is true; fails with `what` after `timeout` s.
function H.run_until(cond, what, timeout)
  local deadline = core.now() + (timeout or 10)
  while not cond() do
    if core.now() > deadline then
      error("timed out waiting for " .. (what or "a condition"), 2)
    end
    evtcp.step(0.02)
  end
end

--- Runs fn in a spawned coroutine and the loop until fn returns (bounded);
-- an error inside fn propagates.
function H.go(fn, timeout)
  local done = false
  evtcp.spawn(function() fn() done = true end)
  H.run_until(function() return done end, "the coroutine to finish", timeout)
end

--- Runs the loop to completion, bounded; fails if it had to be cut off.
function H.run(timeout)
  local done = evtcp.run(timeout or 10)
  assert(done, "evtcp.run did not finish in time")
end

--- A handler that records every callback: rec.log is the list of event
-- types in order, rec.data the bytes received, rec.errors the error objects.
function H.recorder(extra)
  local rec = { log = {}, chunks = {}, errors = {}, count = {} }
  local function note(name)
    return function(self, conn, ev)
      rec.log[#rec.log + 1] = ev.type
      rec.count[name] = (rec.count[name] or 0) + 1
      if ev.type == "data" then rec.chunks[#rec.chunks + 1] = ev.data end
      if ev.type == "error" then rec.errors[#rec.errors + 1] = ev.error end
      rec.conn = conn
      local f = extra and extra[name]
      if f then return f(self, conn, ev) end
    end
  end
  rec.onConnection = note("onConnection")
  rec.onData = note("onData")
  rec.onShutdown = note("onShutdown")
  rec.onError = note("onError")
  rec.onTerminate = note("onTerminate")
  rec.onUpgrade = note("onUpgrade")
  for k, v in pairs(extra or {}) do
    if not k:match("^on") or k == "onDrain" then rec[k] = v end
  end
  function rec.data() return table.concat(rec.chunks) end
  function rec.terminated() return rec.count.onTerminate == 1 end
  return rec
end

local listeners = setmetatable({}, { __mode = "k" })

--- A listener on 127.0.0.1:0 whose connections get handlers from make().
function H.server(make, options)
  options = options or {}
  options.address = options.address or "127.0.0.1"
  options.onConnection = options.onConnection or function(_, _, ev)
    return make(ev)
  end
  local l = assert(evtcp.listen(0, options))
  listeners[l] = true
  return l
end

--- after_each: ends what a failed spec may have left behind, then lets the
-- loop finish, bounded. Returns whether it finished.
function H.cleanup()
  local done = evtcp.run(5)
  if not done then
    for l in pairs(listeners) do l:terminate() end
    evtcp.run(5)
  end
  return done
end

--- An echo server; `server.conns` collects its connection recorders.
function H.echo_server(options)
  local server
  local conns = {}
  server = H.server(function()
    local rec = H.recorder({ onData = function(_, conn, ev) conn:send(ev.data) end })
    conns[#conns + 1] = rec
    return rec
  end, options)
  return server, conns
end

--- A free port: bound, read back, released.
function H.free_port()
  local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
  local port = l.port
  l:terminate()
  evtcp.run(1)
  return port
end

--- Deterministic pseudo-random bytes.
function H.bytes(n, seed)
  local parts, x = {}, seed or 7
  local chunk = {}
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    chunk[#chunk + 1] = x % 256
    if #chunk == 4096 then parts[#parts + 1] = string.char(table.unpack(chunk)); chunk = {} end
  end
  if #chunk > 0 then parts[#parts + 1] = string.char(table.unpack(chunk)) end
  return table.concat(parts)
end

--- A file's whole content.
function H.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- The bytes at [offset, offset+len) of an endless repetition of pattern:
-- streams checked without keeping them whole.
function H.repeat_slice(pattern, offset, len)
  local period, parts = #pattern, {}
  while len > 0 do
    local start = offset % period + 1
    local s = pattern:sub(start, start + len - 1)
    parts[#parts + 1] = s
    len = len - #s
    offset = offset + #s
  end
  return table.concat(parts)
end

--- Prefix for commands that start real peers (python3, redis-server,
-- socat): under `make sanitize` they must not inherit the sanitizer runtime
-- preloaded for lua5.4.
H.peer = "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS "

--- Runs a shell command as a peer (outside the sanitizer), quietly; fails
-- the spec if it fails.
function H.sh(cmd)
  local ok = os.execute(H.peer .. "sh -c " .. ("%q"):format(cmd) .. " >/dev/null 2>&1")
  assert(ok, "failed: " .. cmd)
end

--- Runs a Lua 5.4 child with the module on its paths; returns ok, output.
function H.lua_child(code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  -- the child inherits LUA_PATH and LUA_CPATH (and, under `make sanitize`,
  -- the preloaded sanitizer runtime) from the Makefile
  local cmd = ("timeout 60 lua5.4 %s 2>&1"):format(path)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok, how, code_ = p:close()
  os.remove(path)
  return ok, out, how, code_
end

--- Runs a Lua 5.4 child under strace, tracing the system calls `calls`
-- ("sendmsg,writev"); returns its output and the calls it made (one line
-- each). Returns nil and why when strace cannot run here (under the
-- sanitizer, or without ptrace): the caller marks its spec pending.
function H.strace_lua(code, calls)
  if os.getenv("EVTCP_SANITIZE") then return nil, "strace does not run with the sanitizer preloaded" end
  if not os.execute("strace -qq -e trace=none true >/dev/null 2>&1") then return nil, "needs strace (and ptrace)" end
  local script, trace = os.tmpname(), os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(code)
  f:close()
  local p = io.popen(("timeout 60 strace -f -qq -e trace=%s -o %s lua5.4 %s 2>&1"):format(calls, trace, script))
  local out = p:read("a")
  p:close()
  local lines = {}
  for line in io.lines(trace) do lines[#lines + 1] = line end
  os.remove(script)
  os.remove(trace)
  return out, lines
end

--- Runs a proxy example (its first line names its port) in front of a
-- target here, and pushes `mib` MiB through it each way: the client sends,
-- then half-closes; the target replies once it saw the end; both streams
-- are checked byte for byte.
function H.check_proxy(script, mib)
  local n = mib << 20
  local up, down = H.bytes(1 << 20, 11), H.bytes(1 << 20, 12)
  local target_got, target_ok = 0, true
  local target = assert(evtcp.listen(0, { address = "127.0.0.1", allowHalfOpen = true }))
  evtcp.spawn(function()
    local s = target:accept(10)
    while true do
      local d = s:receive()
      if not d then break end
      if d ~= H.repeat_slice(up, target_got, #d) then target_ok = false end
      target_got = target_got + #d
    end
    for _ = 1, mib do s:send(down) end -- the reply, after the request's end
    s:close()
  end)
  -- the child is evtcp itself: it keeps the environment (the sanitizer's too)
  local p = io.popen("sh -c 'echo $$; exec lua5.4 " .. script .. " " .. target.port .. "'")
  local pid = p:read("l")
  local port = tonumber(p:read("l"):match("127%.0%.0%.1:(%d+)"))
  local back, back_ok = 0, true
  H.go(function()
    local c = assert(evtcp.dial("127.0.0.1", port))
    evtcp.spawn(function()
      for _ = 1, mib do c:send(up) end
      c:shutdown() -- half-close: the proxy must relay it
    end)
    while true do
      local d = c:receive()
      if not d then break end
      if d ~= H.repeat_slice(down, back, #d) then back_ok = false end
      back = back + #d
    end
    c:close()
  end, 60)
  os.execute("kill " .. pid)
  p:close()
  target:terminate()
  assert(target_got == n and target_ok, ("the target got %d of %d bytes (intact: %s)"):format(target_got, n, tostring(target_ok)))
  assert(back == n and back_ok, ("the client got %d of %d bytes back (intact: %s)"):format(back, n, tostring(back_ok)))
end

--- A self-signed certificate for localhost (and 127.0.0.1) in a new temp
-- dir: returns { cert =, key = } for a listener's tls table, and the dir.
function H.self_signed()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  local cmd = ("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 "
    .. "-subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1"):format(dir)
  assert(os.execute(H.peer .. "sh -c " .. ("%q"):format(cmd) .. " >/dev/null 2>&1"), "openssl failed")
  return { cert = dir .. "/cert.pem", key = dir .. "/key.pem" }, dir
end

--- Runs cmd (a shell command: a peer program) in the background while the
-- loop runs, for at most `limit` seconds; returns its output (stdout and
-- stderr) and its exit status. ours: cmd runs evtcp itself (an example),
-- which keeps the environment (under `make sanitize`, the sanitizer's).
function H.peer_run(cmd, limit, ours)
  limit = limit or 20
  local script, out = os.tmpname(), os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(("timeout %d sh -c %s >%s 2>&1\necho \"exit=$?\" >>%s\ntouch %s.done\n")
    :format(limit, ("'%s'"):format(cmd:gsub("'", "'\\''")), out, out, out))
  f:close()
  os.execute((ours and "" or H.peer) .. "sh " .. script .. " &")
  H.run_until(function()
    local done = io.open(out .. ".done")
    if done then done:close() end
    return done ~= nil
  end, "the peer to finish", limit + 10)
  local text = H.read(out)
  os.remove(script)
  os.remove(out)
  os.remove(out .. ".done")
  return text, tonumber(text:match("exit=(%d+)%s*$"))
end

--- A real PostgreSQL server in a new temp dir on a free port of
-- 127.0.0.1, with ssl = on and the certificate tls ({ cert =, key = }),
-- that takes clients only over TLS (scram-sha-256; without TLS: rejected).
-- Run as the postgres user when we are root (postgres refuses root).
-- Returns { port =, dir =, stop = fn }.
function H.postgres(tls)
  local p = io.popen("ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1")
  local bin = p:read("l")
  p:close()
  assert(bin, "PostgreSQL is not installed (make test-deps installs it)")
  local dir = os.tmpname()
  os.remove(dir)
  local port = H.free_port()
  local as = ""
  local function sh(cmd)
    assert(os.execute(H.peer .. "sh -c " .. ("%q"):format(cmd) .. " >>" .. dir .. "/setup.log 2>&1"),
      "failed: " .. cmd .. " (see " .. dir .. "/setup.log)")
  end
  assert(os.execute("mkdir -p " .. dir))
  if io.popen("id -u"):read("l") == "0" then
    as = "runuser -u postgres -- "
    sh("chown postgres " .. dir)
  end
  sh(as .. bin .. "/initdb -D " .. dir .. "/data -U postgres -A trust")
  sh(("cp %s %s/data/server.crt && cp %s %s/data/server.key && chmod 600 %s/data/server.key"):format(
    tls.cert, dir, tls.key, dir, dir))
  if as ~= "" then sh("chown postgres " .. dir .. "/data/server.crt " .. dir .. "/data/server.key") end
  local f = assert(io.open(dir .. "/data/pg_hba.conf", "w"))
  f:write("local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n")
  f:close()
  sh(as .. bin .. "/pg_ctl -D " .. dir .. "/data -l " .. dir .. "/server.log -w -t 60 -o " ..
    ("'-p %d -k %s -c listen_addresses=127.0.0.1 -c ssl=on'"):format(port, dir) .. " start")
  return {
    port = port,
    dir = dir,
    stop = function()
      os.execute(H.peer .. as .. bin .. "/pg_ctl -D " .. dir .. "/data -m immediate stop >/dev/null 2>&1")
      os.execute("rm -rf " .. dir)
    end,
  }
end

function H.has_ipv6()
  local l = evtcp.listen(0, { address = "::1" })
  if not l then return false end
  l:terminate()
  evtcp.run(1)
  return true
end

return H
