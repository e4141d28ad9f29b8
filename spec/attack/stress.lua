--- The stress suite (make stress): many connections, fd exhaustion, churn,
-- a proxy under faults, slow clients, and lua_close with live objects under
-- valgrind. One line per check with its figures; exits 1 if any failed.
-- Sizes come from the environment so CI can run a slice:
--   STRESS_CONNS (10000), STRESS_PROXY_MB (1024), STRESS_CHURN (200000),
--   STRESS_OBJECTS (1000).
local evtcp = require("evtcp")
local core = require("evtcp.core")
local sockopt = require("sockopt")

local CONNS = tonumber(os.getenv("STRESS_CONNS")) or 10000
local PROXY_MB = tonumber(os.getenv("STRESS_PROXY_MB")) or 1024
local CHURN = tonumber(os.getenv("STRESS_CHURN")) or 200000
local OBJECTS = tonumber(os.getenv("STRESS_OBJECTS")) or 1000
local sanitized = os.getenv("EVTCP_SANITIZE") ~= nil

local failed = 0
local function report(name, ok, fmt, ...)
  print(("%-5s %-28s " .. fmt):format(ok and "ok" or "FAIL", name, ...))
  io.stdout:flush()
  if not ok then failed = failed + 1 end
end

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s+(%d+)"))
end

--- Runs the loop until cond() holds or `limit` seconds pass; returns cond().
local function run_until(cond, limit)
  local deadline = core.now() + limit
  while not cond() and core.now() < deadline do evtcp.step(0.05) end
  return cond()
end

local function settle()
  evtcp.run(5)
  collectgarbage()
  collectgarbage()
end

---------------------------------------------------------------- 10k at once
-- The clients run in a child (the descriptor limit here may be 20,000 per
-- process): each connects, sends "ping", and all stay open until every echo
-- came back; then they close. The server here counts how many were open at
-- once and that every descriptor is given back.
local PEER = os.getenv("EVTCP_SANITIZE") and "" or "env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS "

local function start_clients(port, n)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(([[
    local evtcp = require("evtcp")
    local echoed, conns = 0, {}
    for i = 1, %d do
      conns[i] = evtcp.connect("127.0.0.1", %d, {
        onConnection = function(_, c) c:send("ping") end,
        onData = function() echoed = echoed + 1 end,
        onError = function() end })
      if i %% 500 == 0 then evtcp.step(0) end
    end
    local deadline = os.time() + 60
    while echoed < #conns and os.time() < deadline do evtcp.step(0.05) end
    evtcp.sleep(0.5) -- all open at once, for the server to see
    for _, c in ipairs(conns) do c:close() end
    evtcp.run(10)
    io.write("echoed ", echoed, "\n")
  ]]):format(n, port))
  f:close()
  return io.popen(PEER .. "lua5.4 " .. script), script
end

local function finish_clients(child, script)
  local out = child:read("a")
  child:close()
  os.remove(script)
  return tonumber(out:match("echoed (%d+)")) or 0
end

--- One 10k check: serve() starts a server and returns its port and a
-- function counting its open connections; the child's clients connect.
local function many(name, serve)
  local base_fds = sockopt.fds()
  local t0 = core.now()
  local port, open_now, stop = serve()
  local peak = 0
  local child, script = start_clients(port, CONNS)
  run_until(function() peak = math.max(peak, open_now()) return peak == CONNS end, 60)
  run_until(function() return open_now() == 0 end, 60)
  local echoed = finish_clients(child, script)
  stop()
  settle()
  local fds = sockopt.fds()
  report(name, echoed == CONNS and peak == CONNS and fds == base_fds,
         "%d echoed, %d open at once, %.1f s, fds %d -> %d", echoed, peak, core.now() - t0, base_fds, fds)
end

local function many_callbacks()
  many("10k connections, callbacks", function()
    local server = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
      return { onData = function(_, c, ev) c:send(ev.data) end }
    end }))
    return server.port, function() return server.connections end, function() server:terminate() end
  end)
end

local function many_coroutines()
  many("10k connections, coroutines", function()
    local live = 0
    local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
    evtcp.spawn(function()
      for _ = 1, CONNS do
        local s = l:accept(60)
        if not s then break end
        evtcp.spawn(function()
          live = live + 1
          local data = s:receive(4)
          if data then s:send(data) end
          s:receive("a") -- until the client closes
          s:close()
          live = live - 1
        end)
      end
      l:terminate()
    end)
    return l.port, function() return live end, function() l:terminate() end
  end)
end

---------------------------------------------------------------- EMFILE
-- A server in a child limited to 40 descriptors: 150 clients storm it; it
-- must report accept errors without spinning, then serve again.
local function emfile_storm()
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write([[
    local evtcp = require("evtcp")
    local errors = 0
    local l = assert(evtcp.listen(0, { address = "127.0.0.1",
      onConnection = function() return { onData = function(_, c, ev) c:send(ev.data) end } end,
      onError = function() errors = errors + 1 end }))
    io.write(l.port, "\n") io.flush()
    local t0 = os.clock()
    evtcp.after(4, function() l:terminate() end)
    evtcp.run(8)
    io.write(("errors %d cpu %.3f\n"):format(errors, os.clock() - t0))
  ]])
  f:close()
  local child = io.popen("ulimit -n 40; " .. PEER .. "lua5.4 " .. script)
  local port = tonumber(child:read("l"))
  local storm = {}
  for i = 1, 150 do storm[i] = evtcp.connect("127.0.0.1", port, { onData = function() end, onError = function() end }) end
  evtcp.sleep(1.5) -- the storm: the child is out of descriptors
  for _, c in ipairs(storm) do c:close() end
  evtcp.sleep(0.5)
  local answer
  local probe = evtcp.connect("127.0.0.1", port, {
    onConnection = function(_, c) c:send("back") end,
    onData = function(_, c, ev) answer = ev.data c:close() end,
    onError = function() end })
  run_until(function() return answer ~= nil end, 3)
  local rest = child:read("a")
  child:close()
  os.remove(script)
  local errors, cpu = rest:match("errors (%d+) cpu ([%d.]+)")
  errors, cpu = tonumber(errors), tonumber(cpu)
  report("EMFILE storm", errors and errors > 0 and cpu < 1.0 and answer == "back",
         "%s accept errors, child CPU %.2f s over 4 s, served again: %s", tostring(errors), cpu or -1,
         tostring(answer == "back"))
  local _ = probe
end

---------------------------------------------------------------- proxy
local PATTERN = {}
for i = 1, 4093 do PATTERN[i] = string.char(i * 7 % 251) end -- a prime period
PATTERN = table.concat(PATTERN)
local function slice(offset, len) -- bytes [offset, offset+len) of the endless pattern
  local parts = {}
  while len > 0 do
    local start = offset % #PATTERN + 1
    local s = PATTERN:sub(start, start + len - 1)
    parts[#parts + 1] = s
    len, offset = len - #s, offset + #s
  end
  return table.concat(parts)
end
local CHUNK = slice(0, 4093 * 16) -- 65,488 bytes: whole periods, so every chunk is the same

--- A source that writes `total` bytes of the pattern through backpressure,
-- and a sink that checks every byte; the proxy in between is `style`.
local function proxy(style)
  local total = PROXY_MB * 1024 * 1024
  total = total - total % #CHUNK
  local sink_got, sink_ok, sink_done = 0, true, false
  local sink = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
    return {
      onData = function(_, _, ev)
        local d = ev.data
        if sink_ok and d ~= slice(sink_got, #d) then sink_ok = false end
        sink_got = sink_got + #d
      end,
      onShutdown = function() sink_done = true end,
      onError = function() sink_done = true sink_ok = false end,
    }
  end }))
  local pauses = 0
  local function random_pause(c) -- faults: the relay stops reading for a while
    if math.random(200) == 1 then
      pauses = pauses + 1
      c:pause()
      evtcp.after(math.random(1, 20) / 1000, function() c:resume() end)
    end
  end
  local front
  if style == "callbacks" then
    front = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
      local up, down = {}
      down = evtcp.connect("127.0.0.1", sink.port, {
        onDrain = function() if up.conn then up.conn:resume() end end,
        onShutdown = function() end,
      })
      function up.onConnection(_, c) up.conn = c end
      function up.onData(_, c, ev)
        down:send(ev.data)
        if down.bufferedAmount > 1024 * 1024 then c:pause() else random_pause(c) end
      end
      function up.onShutdown() down:close() end
      return up
    end }))
  else
    front = assert(evtcp.listen(0, { address = "127.0.0.1" }))
    evtcp.spawn(function()
      local up = front:accept(10)
      local down = evtcp.dial("127.0.0.1", sink.port)
      while true do
        local data = up:receive()
        if not data then break end
        down:send(data) -- waits while more than highWaterMark is queued
        random_pause(up)
      end
      down:close()
    end)
  end
  local t0 = core.now()
  evtcp.spawn(function()
    local src = assert(evtcp.dial("127.0.0.1", front.port))
    for _ = 1, total // #CHUNK do src:send(CHUNK) end
    src:close()
  end)
  run_until(function() return sink_done end, 600)
  local secs = core.now() - t0
  front:terminate()
  sink:terminate()
  settle()
  report("proxy under pauses, " .. style, sink_ok and sink_got == total,
         "%d MiB checked byte by byte, %d random pauses, %.1f s (%.0f MiB/s)", sink_got // 1048576, pauses,
         secs, sink_got / 1048576 / secs)
end

---------------------------------------------------------------- churn of endings
-- Every way of ending, on both sides: each connection gets exactly one of
-- onShutdown/onError and then exactly one onTerminate.
local function endings_churn()
  local n, bad, ends = 2000, 0, {}
  local function watch(name)
    local r = { ends = 0, terms = 0 }
    ends[#ends + 1] = r
    return r, {
      onShutdown = function() r.ends = r.ends + 1 if r.terms > 0 then bad = bad + 1 end end,
      onError = function() r.ends = r.ends + 1 if r.terms > 0 then bad = bad + 1 end end,
      onTerminate = function() r.terms = r.terms + 1 end,
    }
  end
  local actions = { "close", "reset", "shutdown", "none" }
  local server = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
    local _, h = watch("server")
    local act = actions[math.random(#actions)]
    h.onData = function(_, c)
      if act == "shutdown" then c:shutdown() elseif act ~= "none" then c[act](c) end
    end
    return h
  end }))
  for _ = 1, n do
    local _, h = watch("client")
    local act = actions[math.random(#actions)]
    h.onConnection = function(_, c)
      c:send("x")
      if act == "close" then c:close() elseif act == "reset" then c:reset()
      elseif act == "shutdown" then c:shutdown() end
    end
    h.onData = function() end
    local c = evtcp.connect("127.0.0.1", server.port, h)
    if act == "none" then evtcp.after(0.2, function() c:close() end) end
  end
  run_until(function()
    for _, r in ipairs(ends) do if r.terms == 0 then return false end end
    return true
  end, 30)
  server:terminate()
  settle()
  local once = 0
  for _, r in ipairs(ends) do if r.ends == 1 and r.terms == 1 then once = once + 1 end end
  report("reset/half-close churn", once == #ends and bad == 0,
         "%d connection ends, %d with exactly one end and one onTerminate", #ends, once)
end

---------------------------------------------------------------- slowloris
local function slowloris()
  local base_fds = sockopt.fds()
  local n, reclaimed = 200, 0
  local server = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
    return { readTimeout = 0.3, onData = function() end,
             onError = function(_, _, ev) if ev.error.kind == "timeout" then reclaimed = reclaimed + 1 end end }
  end }))
  local clients = {}
  for i = 1, n do -- each sends half a request, then stalls
    clients[i] = evtcp.connect("127.0.0.1", server.port, {
      onConnection = function(_, c) c:send("GET / HTTP/1.1\r\nHost: sl") end,
      onShutdown = function() end, onError = function() end })
  end
  local t0 = core.now()
  run_until(function() return reclaimed == n end, 5)
  local secs = core.now() - t0
  for _, c in ipairs(clients) do c:close() end
  server:terminate()
  clients = nil -- luacheck: ignore (let go, for the collector)
  settle()
  local fds = sockopt.fds()
  report("slowloris vs readTimeout", reclaimed == n and fds == base_fds,
         "%d of %d stalled clients reclaimed in %.2f s (readTimeout 0.3), fds %d -> %d", reclaimed, n, secs,
         base_fds, fds)
end

---------------------------------------------------------------- churn
-- CHURN connections made and closed, 50 at a time; descriptors and RSS are
-- read at 10, 50 and 100 %: neither may grow with the count.
local function churn()
  local base_fds = sockopt.fds()
  local server = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
    return { onData = function(_, c, ev) c:send(ev.data) c:close() end } -- the server closes first
  end }))
  local started, done, errors = 0, 0, 0
  local samples = {}
  local marks = { [CHURN // 10] = "10%", [CHURN // 2] = "50%", [CHURN] = "100%" }
  local handler
  local function start()
    started = started + 1
    evtcp.connect("127.0.0.1", server.port, handler)
  end
  handler = {
    onConnection = function(_, c) c:send("x") end,
    onData = function() end,
    onError = function() errors = errors + 1 end,
    onTerminate = function()
      done = done + 1
      if marks[done] then
        collectgarbage()
        samples[#samples + 1] = { mark = marks[done], fds = sockopt.fds(), rss = rss_kb() }
      end
      if started < CHURN then start() end
    end,
  }
  local t0 = core.now()
  for _ = 1, math.min(50, CHURN) do start() end
  run_until(function() return done == CHURN end, 900)
  local secs = core.now() - t0
  server:terminate()
  settle()
  local ok = done == CHURN and errors == 0 and #samples == 3
  local parts = {}
  for _, s in ipairs(samples) do
    parts[#parts + 1] = ("%s: %d fds, %d kB"):format(s.mark, s.fds, s.rss)
    if s.fds > base_fds + 110 then ok = false end
  end
  if #samples == 3 and samples[3].rss > samples[1].rss + 20 * 1024 then ok = false end
  report("churn", ok, "%d connections in %.1f s (%.0f/s), %d errors; %s", done, secs, done / secs, errors,
         table.concat(parts, "; "))
end

---------------------------------------------------------------- lua_close
-- OBJECTS objects in every state, then the state is closed with them live:
-- under valgrind (or the sanitizer), nothing may leak or be touched after free.
local function close_with_live_objects()
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(([[
    local evtcp = require("evtcp")
    local N = %d
    local keep = {}
    local l = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
      return { onData = function(_, c, ev) c:send(ev.data) end }
    end }))
    local held = assert(evtcp.listen(0, { address = "127.0.0.1" })) -- clients wait for accept()
    keep[#keep + 1] = held
    for i = 1, N // 10 do
      local open = evtcp.connect("127.0.0.1", l.port, { onData = function() end })
      open:send("hello")
      keep[#keep + 1] = open
    end
    evtcp.run(0.3) -- these are open now
    for i = 1, N // 10 do
      keep[#keep + 1] = evtcp.connect("127.0.0.1", l.port, { onData = function() end }) -- connecting
      keep[#keep + 1] = evtcp.connect("localhost", l.port, { onData = function() end }) -- resolving
      local c = evtcp.connect("127.0.0.1", held.port)
      c:send(string.rep("q", 100000)) c:close() -- closing with output queued
      local p = keep[i + 1] p:pause()
      keep[#keep + 1] = evtcp.after(60, function() end)
      evtcp.spawn(function() local d = evtcp.dial("127.0.0.1", l.port) if d then d:receive() end end)
      evtcp.spawn(function() evtcp.sleep(60) end)
      keep[#keep + 1] = evtcp.listen(0, { address = "127.0.0.1", onConnection = function() end })
    end
    evtcp.step(0.1)
    io.write("objects live at lua_close: ", require("evtcp.core").activeCount(), "\n")
  ]]):format(OBJECTS))
  f:close()
  local cmd
  if sanitized then
    cmd = "lua5.4 " .. script .. " 2>&1"
  else
    cmd = "valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect " ..
          "--error-exitcode=9 lua5.4 " .. script .. " 2>&1"
  end
  local p = io.popen("ulimit -n 8192; " .. cmd)
  local out = p:read("a")
  local ok, _, code = p:close()
  os.remove(script)
  local live = out:match("objects live at lua_close: (%d+)")
  report("lua_close with live objects", ok and live ~= nil and tonumber(live) >= OBJECTS // 2,
         "%s anchored objects of every state, %s: %s", tostring(live), sanitized and "ASan" or "valgrind",
         ok and "no leak, no invalid access" or ("exit " .. tostring(code) .. "\n" .. out:sub(1, 3000)))
end

math.randomseed(tonumber(os.getenv("STRESS_SEED")) or 1)
local only = os.getenv("STRESS_ONLY")
local checks = {
  { "many", many_callbacks }, { "many", many_coroutines }, { "emfile", emfile_storm },
  { "proxy", function() proxy("callbacks") end }, { "proxy", function() proxy("coroutines") end },
  { "endings", endings_churn }, { "slowloris", slowloris }, { "churn", churn },
  { "close", close_with_live_objects },
}
for _, check in ipairs(checks) do
  if not only or only:find(check[1], 1, true) then
    local ok, err = pcall(check[2])
    if not ok then report(check[1], false, "raised: %s", tostring(err)) end
  end
end
print(failed == 0 and "stress: passed" or ("stress: %d checks failed"):format(failed))
os.exit(failed == 0 and 0 or 1)
