--- The API fuzzer (make fuzz): drives every public function and method with
-- valid and invalid arguments, random options, erroring __index, callbacks
-- that raise, re-enter or close other objects, and collectgarbage at random
-- points; run under AddressSanitizer + UBSan by the Makefile.
--
-- It checks, as it goes and at the end:
--   * the event order of API.md section 4, for every observed connection:
--     onConnection at most once and first, no onData after the end, exactly
--     one of onShutdown/onError, onTerminate exactly once and last;
--   * every byte a sink server accepted arrives: a client whose peer is a
--     sink (it never closes first) and that ended cleanly delivered exactly
--     the bytes its send() calls accepted, in order;
--   * every error out of run/step is one the fuzzer raised on purpose or a
--     Lua error naming evtcp's misuse, never an internal one.
-- FUZZ_N operations (default 20000), FUZZ_SEED (default 1). Prints one line
-- of figures; exits 1 on the first broken rule.
local evtcp = require("evtcp")

local N = tonumber(os.getenv("FUZZ_N")) or 20000
local SEED = tonumber(os.getenv("FUZZ_SEED")) or 1

---------------------------------------------------------------- randomness
local state = SEED * 2654435761 % 4294967296
local function rand(n) -- 1..n
  state = (state * 1103515245 + 12345) % 2147483648
  return state // 65536 % n + 1
end
local function chance(p) return rand(1000) <= p * 1000 end
local function pick(t) if #t > 0 then return t[rand(#t)] end end

local stats = { ops = 0, bad_args = 0, deliberate = 0, connections = 0, listeners = 0,
                checked_streams = 0, checked_bytes = 0, collected = 0 }

local function fail(fmt, ...)
  io.stderr:write(("FUZZ FAILURE (seed %d, op %d): " .. fmt .. "\n"):format(SEED, stats.ops, ...))
  os.exit(1)
end

local DELIBERATE = "fuzz: deliberate"

--- Raises a deliberate error with its own number: each must come out of a
-- run/step, a blocking call or the call that made it, once ("no error is
-- dropped", API.md section 5); the end checks that none went missing.
local raised, caught = 0, {}
local function raise()
  raised = raised + 1
  error(("%s #%d"):format(DELIBERATE, raised))
end

--- Errors are fine when they are the fuzzer's own or a clear evtcp misuse
-- message; anything else (attempt to index..., '?') is an internal error.
local function acceptable(err)
  local s = tostring(err)
  if s:find(DELIBERATE, 1, true) then
    stats.deliberate = stats.deliberate + 1
    for id in s:gmatch(DELIBERATE .. " #(%d+)") do caught[tonumber(id)] = true end
    return true
  end
  if s:find("bad argument #%d+ to '[%a_.]+'") or s:find("^[^\n]*evtcp: ") or s:find("\nevtcp: ")
     or s:find("evtcp: ", 1, true) then
    if s:find("to '?'", 1, true) then return false end
    stats.bad_args = stats.bad_args + 1
    return true
  end
  return false
end

local function guarded(f, ...)
  local ok, err = pcall(f, ...)
  if not ok and not acceptable(err) then fail("internal error: %s", tostring(err)) end
  return ok, err
end

---------------------------------------------------------------- objects
local listeners, conns, records = {}, {}, {}
local record_of = setmetatable({}, { __mode = "k" }) -- connection -> its record
local by_tag = {} -- client records by the tag each client sends first
local pattern = ("0123456789abcdefghijklmnopqrstuvwxyz"):rep(3)

local function random_bytes()
  local n = pick({ 0, 1, 7, 100, 1500, 70000 })
  local start = rand(#pattern)
  return (pattern:rep(n // #pattern + 2)):sub(start, start + n - 1)
end

--- A record of what one connection saw, checked at every event.
local function new_record(role)
  local r = { role = role, log = {}, got = {}, sent = {}, ended = false, terminated = 0 }
  records[#records + 1] = r
  return r
end

--- The byte check of one stream, as soon as both ends are done: a client
-- that ended cleanly (onShutdown, no reset or shutdown of its own) and a
-- sink that read to the end got exactly what send() accepted. What was
-- checked is let go, so that memory (and every full GC) stays bounded.
local function try_check(server)
  local client = server.peer_rec
  if not client or server.checked or not server.done or client.terminated == 0 then return end
  server.checked = true
  if not server.swapped and not server.spoiled and not client.spoiled and client.ended == "onShutdown" then
    local sent, got = table.concat(client.sent), table.concat(server.got)
    if sent ~= got then
      fail("a stream lost bytes: sent %d, the %s sink got %d (client %s; server %s)", #sent, server.role,
           #got, table.concat(client.log, ","), table.concat(server.log, ","))
    end
    stats.checked_streams = stats.checked_streams + 1
    stats.checked_bytes = stats.checked_bytes + #sent
  end
  by_tag[client.sent[1]] = nil
  client.sent, server.got = {}, {}
end

--- A sink saw its stream end: pair it with its client by the tag.
local function sink_done(server)
  server.done = true
  local got = table.concat(server.got)
  server.got = { got }
  server.peer_rec = by_tag[got:sub(1, 8)]
  if server.peer_rec then server.peer_rec.server_rec = server end
  try_check(server)
end

local function check_event(r, name)
  local log = r.log
  if r.terminated > 0 then fail("%s after onTerminate (%s)", name, table.concat(log, ",")) end
  if name == "onConnection" and #log > 0 then fail("onConnection not first (%s)", table.concat(log, ",")) end
  if (name == "onData" or name == "onEnd") and r.ended then fail("%s after the end (%s)", name, table.concat(log, ",")) end
  if (name == "onData" or name == "onEnd") and r.got_end then fail("%s after onEnd (%s)", name, table.concat(log, ",")) end
  if name == "onEnd" then r.got_end = true end
  if name == "onShutdown" or name == "onError" then
    if r.ended then fail("two ends (%s,%s)", table.concat(log, ","), name) end
    r.ended = name
  end
  if name == "onTerminate" then
    if not r.ended then fail("onTerminate without an end (%s)", table.concat(log, ",")) end
    r.terminated = r.terminated + 1
    if r.sink and r.ended == "onShutdown" then sink_done(r) end
    if r.server_rec then try_check(r.server_rec) end
  end
  log[#log + 1] = name
end

local chaos -- forward: a random action on a random object, from callbacks

--- A handler whose callbacks record into r; mode "sink" only records, mode
-- "chaos" also raises, closes, re-enters and collects at random.
local function new_handler(r, mode)
  local h = {}
  local function cb(name)
    return function(self, conn, ev)
      check_event(r, name)
      if name == "onData" then
        if type(ev.data) ~= "string" then fail("event.data is a %s", type(ev.data)) end
        r.got[#r.got + 1] = ev.data
      end
      if name == "onConnection" then
        r.conn = conn record_of[conn] = r
        if conn.reusedTimes > 0 then -- its server side has an older stream
          r.spoiled = true
          stats.reused = (stats.reused or 0) + 1
        end
      end
      if mode == "chaos" then
        if chance(0.05) then collectgarbage(chance(0.05) and "collect" or "step") end
        if chance(0.1) then chaos() end
        if chance(0.03) then raise() end
      elseif mode == "echo" and name == "onData" then
        conn:send(ev.data)
      end
    end
  end
  for _, name in ipairs({ "onConnection", "onData", "onEnd", "onShutdown", "onError", "onTerminate" }) do
    h[name] = cb(name)
  end
  if chance(0.2) then -- inherited callbacks: looked up through __index
    return setmetatable({}, { __index = h })
  end
  return h
end

-- A name with several addresses (Happy Eyeballs races them): one refuses
-- or drops, ::1 and 127.0.0.1 may listen.
do
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write("127.0.0.2 several.fuzz\n::1 several.fuzz\n127.0.0.1 several.fuzz\n")
  f:close()
  assert(evtcp.setResolver({ hosts = path }))
  os.remove(path)
end

local function random_options(h)
  if chance(0.2) then h.noDelay = pick({ true, false, 1 }) end
  if chance(0.1) then h.timeout = pick({ 0, 0.01, 5, -1, "x" }) end
  if chance(0.1) then h.readTimeout = pick({ 0.05, 2, 0 / 0 }) end
  if chance(0.1) then h.writeTimeout = pick({ 0.05, 2 }) end
  if chance(0.1) then
    h.keepAlive = pick({ true, false, 10, 0, 40000, { idle = 5, interval = 2, count = 3 }, { interval = 1 },
                         { count = 0 }, { idel = 1 }, {} })
  end
  if chance(0.05) then h.userTimeout = pick({ 0, 0.5, 30, -1, "x", 1e9 }) end
  if chance(0.05) then h.fastOpen = pick({ true, false, 1 }) end
  if chance(0.05) then h.attemptDelay = pick({ 0, 0.01, 0.25, 30, -1, "x" }) end
  if chance(0.05) then h.pool = pick({ "a", "b", "", 5 }) end
  if chance(0.1) then h.highWaterMark = pick({ 1, 100, 65536, 0, 1.5 }) end
  if chance(0.02) then
    h.tls = pick({ true, { verify = false }, 5, { verify = false, minVersion = pick({ "1.2", "1.3", "1.1" }) },
                   { verify = false, maxVersion = "1.2", ciphers = pick({ "HIGH", "NOPE" }) },
                   { verify = false, ciphersuites = "TLS_AES_128_GCM_SHA256" }, { minversion = "1.3" },
                   { ca = "/nonexistent/ca.pem" }, { verify = false, crl = "/nonexistent/crl.pem" } })
  end
  if chance(0.1) then h.allowHalfOpen = pick({ true, false, "x" }) end
  -- byte-count frames keep every byte (the rest comes at the end): streams
  -- stay checkable; the other framings are tried on live connections
  if chance(0.1) then h.framing = pick({ 7, 4096, 100000, 0, "lines", { delimiter = "" } }) end
  return h
end

local function random_port()
  local l = pick(listeners)
  if l and chance(0.9) then return l.port end
  return pick({ 1, 9, 65535, 0, -1, 70000, "x" })
end

---------------------------------------------------------------- operations
-- Unix sockets live here; removed at the end
local sock_dir = os.tmpname()
os.remove(sock_dir)
os.execute("mkdir -p " .. sock_dir)

--- Where a listener listens: mostly a TCP port, sometimes a Unix socket
-- (a file, or the abstract namespace), sometimes bad.
local function random_listen_target(lrec)
  if chance(0.75) then return pick({ 0, 0, 0, -1, "x" }) end
  stats.unix = (stats.unix or 0) + 1
  local target = pick({ "unix:" .. sock_dir .. "/l" .. stats.unix .. ".sock",
                        "unix:@evtcp-fuzz-" .. SEED .. "-" .. stats.unix, "unix:", "unix:@" })
  lrec.unix = target
  return target
end

--- A PROXY protocol header: mostly valid (v1 or v2), sometimes garbage.
local function random_proxy_header()
  if chance(0.1) then return pick({ "GET / HTTP/1.0\r\n", "PROXY TCP4 1.2.3.4\r\n", "PROXY " .. ("9"):rep(200) }) end
  if chance(0.5) then return ("PROXY TCP4 192.0.2.%d 10.0.0.1 %d 80\r\n"):format(rand(254), rand(65535)) end
  return "\r\n\r\n\0\r\nQUIT\n\x21\x11\0\12" .. string.char(192, 0, 2, rand(254), 10, 0, 0, 1, 1, 2, 0, 80)
end

local function op_listen()
  local mode = pick({ "sink", "sink", "echo", "chaos", "accept" })
  local lrec = { mode = mode }
  local opts = { address = pick({ "127.0.0.1", "127.0.0.1", "::1", "bogus", 5 }) }
  local target = random_listen_target(lrec)
  if lrec.unix then opts.address = nil end
  if chance(0.2) then opts.proxyProtocol = pick({ true, true, true, "yes" }); lrec.proxy = opts.proxyProtocol == true end
  if mode ~= "accept" then
    opts.onConnection = function(_, l, ev)
      if mode == "chaos" and chance(0.1) then chaos() end
      if mode == "chaos" and chance(0.05) then raise() end
      if chance(0.05) then return nil end -- refused
      if mode == "chaos" and chance(0.02) then return pick({ 42, "x", true }) end
      local r = new_record("server:" .. mode)
      r.sink = mode == "sink"
      r.peer_port = ev.port
      return random_options(new_handler(r, mode))
    end
  end
  opts.onError = function() end
  if chance(0.2) then random_options(opts) opts.tls = nil end -- defaults for accepted connections
  if chance(0.1) then opts.maxConnections = pick({ 1, 5, 0 }) end
  if chance(0.05) then opts.backlog = pick({ 1, 100, -3 }) end
  if chance(0.05) then
    opts = setmetatable({}, { __index = function(t, k)
      if chance(0.05) then raise() end
      return rawget(opts, k)
    end })
  end
  local ok, l = guarded(evtcp.listen, target, opts)
  if ok and l then
    lrec.accepted = {}
    listeners[#listeners + 1] = l
    stats.listeners = stats.listeners + 1
    records[l] = lrec
    if mode == "accept" then -- a coroutine that accepts and reads
      evtcp.spawn(function()
        while not l.closed do
          local c = l:accept(pick({ 0.05, 1 }))
          if c then
            local r = new_record("server:accept")
            r.sink = true
            r.peer_port = c.remotePort
            r.coroutine = true
            record_of[c] = r
            conns[#conns + 1] = c
            evtcp.spawn(function()
              while true do
                local data, err, partial = c:receive(pick({ nil, 1, 100, "a" }))
                if data then r.got[#r.got + 1] = data end
                if not data then
                  if partial and #partial > 0 then r.got[#r.got + 1] = partial end
                  r.read_end = err
                  if err == "closed" then sink_done(r) end
                  break
                end
              end
            end)
          end
        end
      end)
    end
  end
end

local function op_connect()
  local r = new_record("client")
  local h = random_options(new_handler(r, pick({ "sink", "chaos" })))
  local address, port = pick({ "127.0.0.1", "127.0.0.1", "::1", "localhost", "nowhere.invalid", "", 42,
                                "several.fuzz" }), nil
  local l = pick(listeners)
  local lrec = l and records[l]
  if lrec and lrec.unix and chance(0.9) then
    address = lrec.unix
  else
    port = random_port()
  end
  local ok, c = guarded(evtcp.connect, address, port, h)
  if ok and c and lrec and lrec.proxy and not l.closed and (lrec.unix == address or l.port == port) then
    c:send(random_proxy_header()) -- before the stream: the server never sees it
  end
  if ok and c then
    r.client = c
    record_of[c] = r
    -- the stream starts with a tag that pairs it with the server's record
    stats.tags = (stats.tags or 0) + 1
    local tag = ("%08d"):format(stats.tags)
    c:send(tag)
    r.sent[1] = tag
    by_tag[tag] = r
    conns[#conns + 1] = c
    stats.connections = stats.connections + 1
  end
end

local function op_send()
  local c = pick(conns)
  if not c then return end
  local parts = {}
  for i = 1, rand(3) do parts[i] = random_bytes() end
  if chance(0.02) then parts[#parts + 1] = pick({ {}, true }) end
  local ok, res = guarded(c.send, c, table.unpack(parts))
  local r = record_of[c]
  if ok and res == true and r and r.client == c then
    for _, p in ipairs(parts) do r.sent[#r.sent + 1] = p end
  end
end

local function op_method()
  local c = pick(conns)
  if not c then return end
  local m = pick({ "close", "close", "shutdown", "reset", "pause", "resume", "setTimeouts",
                   "handler", "noDelay", "keepAlive", "framing", "field", "props", "wrongself", "tostring",
                   "startTLS", "setOption", "getOption", "userTimeout", "setKeepAlive" })
  if m == "setTimeouts" then
    guarded(c.setTimeouts, c, pick({ nil, 0.05, 1, -1 }), pick({ nil, 1, "x" }))
  elseif m == "handler" then
    local r = record_of[c]
    if r then
      local h = pick({ new_handler(r, "sink"), {}, 5 })
      local ok = guarded(function() c.handler = h end)
      if ok and h ~= 5 then
        r.swapped = true -- a sink's stream is no longer checked whole
        if next(h) == nil then r.detached = true end -- no callbacks: not observed any more
      end
    end
  elseif m == "noDelay" then
    guarded(function() c.noDelay = pick({ true, false, 3 }) end)
  elseif m == "framing" then
    local v = pick({ "line", { delimiter = "\r\n" }, { delimiter = "ab" }, 64, 65536, false, 0, "x", {} })
    local ok = guarded(function() c.framing = v end)
    local r = record_of[c]
    if ok and r and type(v) ~= "number" and v then r.swapped = true end -- delimiters are consumed
    local _ = c.framing
  elseif m == "keepAlive" then
    guarded(function() c.keepAlive = pick({ true, false, 5, -5, { idle = 3, count = 2 }, { interval = 0 } }) end)
  elseif m == "userTimeout" then
    guarded(function() c.userTimeout = pick({ 0, 1, nil, -1, "x" }) end)
  elseif m == "setOption" then
    guarded(c.setOption, c, pick({ "rcvbuf", "sndbuf", "linger", "tos", "ttl", "quickack", "bindToDevice", "nope", 5 }),
      pick({ 1, 65536, true, false, "lo", "x", -1 }))
  elseif m == "getOption" then
    guarded(c.getOption, c, pick({ "rcvbuf", "linger", "tos", "ttl", "bindToDevice", "nope" }))
  elseif m == "setKeepAlive" then
    -- into the pool (short idle times: the fuzz must end), or refused and
    -- closed; either way the program's object is done with
    local r = record_of[c]
    local ok, kept = guarded(c.setKeepAlive, c, pick({ 0.01, 0.1, 0.3, -1, "x" }), pick({ 1, 3, 30, 0 }))
    if ok and r then
      r.spoiled = true
      if kept then r.detached = true end -- no event follows a pooled connection
    end
    if ok and kept then stats.pooled = (stats.pooled or 0) + 1
    end
  elseif m == "startTLS" then
    if chance(0.5) then
      -- a real upgrade of a random connection, waited for in a coroutine:
      -- its peer sees a handshake, so its stream is no longer checked
      local r = record_of[c]
      if r then r.spoiled, r.swapped = true, true end
      evtcp.spawn(function() guarded(c.startTLS, c, { verify = false }) end)
    else -- misuse: each raises before anything changes
      guarded(c.startTLS, c, pick({ { minversion = 1 }, 5, { sni = {}, serverName = "x" }, { alpn = {} } }))
    end
  elseif m == "field" then
    guarded(function() c[pick({ "mine", "closed", 1, "send" })] = rand(10) end)
  elseif m == "props" then
    for _, k in ipairs({ "closed", "errors", "noDelay", "keepAlive", "remoteAddress", "remotePort",
                         "localAddress", "localPort", "bufferedAmount", "handler", "tls", "framing",
                         "userTimeout", "fd" }) do
      local _ = c[k]
    end
  elseif m == "wrongself" then
    local other = pick({ 42, "x", {}, pick(listeners) or 1 })
    guarded(c[pick({ "send", "close", "receive", "wait", "pause", "setTimeouts" })], other)
  elseif m == "tostring" then
    local _ = tostring(c)
  else
    -- a client's reset or shutdown, and a sink closing first, spoil the byte check
    local r = record_of[c]
    if r and (m == "reset" or m == "shutdown" or (m == "close" and not r.client)) then r.spoiled = true end
    guarded(c[m], c)
  end
end

local function op_listener()
  local l = pick(listeners)
  if not l then return end
  local m = pick({ "terminate", "props", "wrongself", "accept" })
  if m == "terminate" then
    if chance(0.3) then guarded(l.terminate, l) end
  elseif m == "props" then
    local _ = { l.port, l.address, l.closed, l.connections, l.errors, l.handler, tostring(l) }
    guarded(function() l.port = 1 end)
  elseif m == "accept" then
    guarded(l.accept, l, 0) -- top level: drives the loop, or raises if it has onConnection
  else
    guarded(l[pick({ "terminate", "accept", "wait" })], pick({ 42, {}, pick(conns) or 1 }))
  end
end

local function op_coroutine()
  local kind = pick({ "dial", "receive", "sleep", "wait", "resolve_bad" })
  evtcp.spawn(function()
    if kind == "dial" then
      local r = new_record("dialled")
      local c = evtcp.dial("127.0.0.1", random_port(), { timeout = 1 })
      if c then
        conns[#conns + 1] = c
        r.client = c
        record_of[c] = r
        c:send("hello\n")
        r.sent[1] = "hello\n"
        r.no_events = true
        local data = c:receive(pick({ nil, 3, "l" }), 0.2)
        if chance(0.5) then c:close() end
        local _ = data
      end
    elseif kind == "receive" then
      local c = pick(conns)
      if c then
        if record_of[c] then record_of[c].spoiled = true end -- a second reader takes bytes
        if chance(0.3) then
          guarded(c.receiveUntil, c, pick({ "\r\n", "x", "" }), pick({ nil, 0.05 }))
        else
          guarded(c.receive, c, pick({ nil, 10, "l", "a", "bogus" }), pick({ nil, 0.05, -1 }))
        end
      end
    elseif kind == "sleep" then
      evtcp.sleep(pick({ 0, 0.01, 0.1 }))
    elseif kind == "wait" then
      local c = pick(conns)
      if c then c:wait(0.05) end
    else
      guarded(evtcp.dial, "nowhere.invalid", 80)
    end
  end)
end

-- A certificate for the upgrades (op_upgrade), made once.
local cert_dir = os.tmpname()
os.remove(cert_dir)
os.execute("mkdir -p " .. cert_dir)
local upgrade_tls = { cert = cert_dir .. "/cert.pem", key = cert_dir .. "/key.pem" }
do
  local cmd = ("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 2 "
    .. "-subj /CN=localhost"):format(cert_dir)
  if not os.execute("env -u LD_PRELOAD -u ASAN_OPTIONS -u LSAN_OPTIONS sh -c '" .. cmd .. "' >/dev/null 2>&1") then
    fail("openssl could not make the upgrade certificate")
  end
end

--- STARTTLS between two evtcp ends: plaintext, both upgrade, the bytes
-- after the upgrade must come back whole; sometimes the client slips
-- plaintext in after its request (the upgrade must then fail, never
-- deliver it), sometimes one side closes or resets in the middle.
local upgrade_conns = setmetatable({}, { __mode = "k" }) -- for the report of what is left
local function op_upgrade()
  local l = evtcp.listen(0, { address = "127.0.0.1" })
  if not l then return end
  stats.upgrades = (stats.upgrades or 0) + 1
  local inject, abort = chance(0.2), chance(0.15)
  local payload = ("u"):rep(rand(70000))
  evtcp.spawn(function()
    local s = l:accept(2)
    l:terminate()
    if not s then return end
    upgrade_conns[s] = "server"
    local line = s:receive("l", 2)
    if line ~= "STARTTLS" then s:close() return end
    s:send("GO\n")
    local ok, err = s:startTLS(upgrade_tls)
    if inject and ok then fail("startTLS took plaintext sent after the request") end
    if not inject and not ok and not abort and err and not tostring(err.message):find("closed") then
      fail("a clean upgrade failed: %s", tostring(err.message))
    end
    if ok then
      local data = s:receive(#payload, 5)
      if data and data ~= payload then fail("the bytes after startTLS came back changed") end
      if data then s:send(data) end
    end
    s:close()
  end)
  evtcp.spawn(function()
    local c = evtcp.dial("127.0.0.1", l.port, { timeout = 2 })
    if not c then return end
    upgrade_conns[c] = "client"
    c:send(inject and "STARTTLS\nINJECTED\n" or "STARTTLS\n")
    if c:receive("l", 2) ~= "GO" then c:close() return end
    if abort then
      if chance(0.5) then c:reset() else c:close() end
      return
    end
    local ok = c:startTLS({ verify = false })
    if ok then
      c:send(payload)
      local back = c:receive(#payload, 5)
      if back and back ~= payload then fail("the echo over the upgraded connection came back changed") end
      if back then stats.upgraded = (stats.upgraded or 0) + 1 end
    end
    c:close()
  end)
end

local function op_bad_call()
  local f = pick({ evtcp.connect, evtcp.listen, evtcp.after, evtcp.run, evtcp.step, evtcp.sleep,
                   evtcp.dial, evtcp.spawn })
  if f == evtcp.run or f == evtcp.step then
    guarded(f, pick({ -1, "x", 0 / 0 }))
  else
    -- (math.huge is a valid forever for sleep: not at the top level)
    local first = pick({ nil, -1, "x", {}, 0 / 0, f ~= evtcp.sleep and math.huge or -2 })
    guarded(f, first, pick({ nil, -1, "x", {}, 70000 }))
  end
end

local function op_timer()
  local t = evtcp.after(pick({ 0, 0.01, 0.1 }), function()
    if chance(0.2) then chaos() end
    if chance(0.05) then raise() end
  end)
  if chance(0.3) then t:cancel() end
end

-- evtcp.signal: handlers on USR2 that raise, cancel themselves or act;
-- USR2 is sent to this process only while one is installed (else its
-- default action would end the fuzzer)
local live_signals = {} -- handle -> true while installed
local my_pid = tonumber(io.open("/proc/self/stat"):read("l"):match("^(%d+)"))
local function op_signal()
  local x = rand(10)
  if x <= 3 then
    local ok, h = guarded(evtcp.signal, pick({ "USR2", "SIGUSR2", "KILL", 7 }), pick({ function(handle)
      if chance(0.2) then handle:cancel() live_signals[handle] = nil end
      if chance(0.2) then chaos() end
      if chance(0.05) then raise() end
    end, "x" }))
    if ok and h then live_signals[h] = true end
  elseif x <= 5 then
    local h = next(live_signals)
    if h then
      if not h:cancel() then fail("cancel of an installed signal handler returned false") end
      live_signals[h] = nil
    end
  elseif next(live_signals) then
    os.execute("kill -USR2 " .. my_pid)
  end
end

--- evtcp.resolve in a coroutine or at the top level, and lookups that are
-- cancelled or dropped.
local function op_resolve()
  local name = pick({ "localhost", "127.0.0.1", "::1", "nowhere.invalid", "", 42, "x.example.com" })
  local timeout = pick({ nil, 0, 0.01, 1, -1 })
  if chance(0.5) then
    evtcp.spawn(function()
      local ok, addrs, err = pcall(evtcp.resolve, name, timeout)
      if ok and not addrs and (type(err) ~= "table" or (err.kind ~= "dns" and err.kind ~= "timeout")) then
        fail("resolve failed without an error object of kind dns or timeout: %s", tostring(err))
      end
      if not ok and not acceptable(addrs) then fail("resolve raised: %s", tostring(addrs)) end
    end)
  elseif chance(0.5) then
    local r = require("evtcp.core").lookup("localhost", function() end)
    if chance(0.5) then r:cancel() end
  else
    guarded(evtcp.resolve, name, timeout)
  end
end

local ops = {
  { op_listen, 3 }, { op_connect, 20 }, { op_send, 25 }, { op_method, 20 }, { op_listener, 4 },
  { op_coroutine, 6 }, { op_bad_call, 5 }, { op_timer, 5 }, { op_signal, 1 }, { op_resolve, 2 },
  { op_upgrade, 1 },
}
local total = 0
for _, o in ipairs(ops) do total = total + o[2] end
local function random_op()
  local x = rand(total)
  for _, o in ipairs(ops) do
    x = x - o[2]
    if x <= 0 then return o[1] end
  end
end

chaos = function()
  local x = rand(4)
  if x == 1 then op_method() elseif x == 2 then op_send()
  elseif x == 3 then op_listener() else
    local ok = pcall(evtcp.step) -- re-entering must raise, not crash
    if ok then fail("evtcp.step inside a callback did not raise") end
  end
end

--- One pass of the loop: errors must be deliberate or misuse.
local function pump(timeout)
  local ok, err = pcall(evtcp.step, timeout or 0)
  if not ok and not acceptable(err) then fail("internal error from step: %s", tostring(err)) end
end

---------------------------------------------------------------- run
local t0 = os.clock()
for i = 1, N do
  stats.ops = i
  random_op()()
  if chance(0.02) then
    collectgarbage(chance(0.1) and "collect" or "step")
    stats.collected = stats.collected + 1
  end
  if i % 2000 == 0 then -- let go of what is finished and checked
    local live = {}
    for _, r in ipairs(records) do
      if not (r.terminated == 1 and (not r.sink or r.checked or not r.peer_rec)) and not r.detached then
        live[#live + 1] = r
      else
        stats.finished = (stats.finished or 0) + 1
      end
    end
    records = live
  end
  if i % 5 == 0 then pump(0) end
  if i % 200 == 0 then pump(0.01) end
  -- bound what is live: old connections are closed, old listeners ended
  if #conns > 300 then
    for j = 1, 100 do
      local r = record_of[conns[j]]
      if r and not r.client then r.spoiled = true end -- a sink closed first
      pcall(conns[j].close, conns[j])
    end
    table.move(conns, 101, #conns, 1) for j = #conns - 99, #conns do conns[j] = nil end
  end
  if #listeners > 8 then
    pcall(listeners[1].terminate, listeners[1])
    table.remove(listeners, 1)
  end
end

-- the end: resume and close everything, let it all finish
for h in pairs(live_signals) do h:cancel() end
local function is_sink(c) return record_of[c] and record_of[c].sink end
for _, c in ipairs(conns) do
  pcall(c.resume, c)
  if not is_sink(c) then pcall(c.close, c) end
end
-- sinks are not closed: they read to the end their clients' closes make
for _, r in ipairs(records) do
  if r.conn then
    pcall(r.conn.resume, r.conn)
    if not r.sink then pcall(r.conn.close, r.conn) end
  end
end
-- A close() waits for a connect in progress to flush what is queued, and a
-- TLS client talking to a plain sink never finishes its handshake: after a
-- few rounds what is still open is reset (its stream is then not checked).
local deadline = os.time() + 60
local rounds = 0
while os.time() < deadline do
  local ok, res = pcall(evtcp.run, 2)
  if ok and res then break end
  if not ok and not acceptable(res) then fail("internal error at the end: %s", tostring(res)) end
  for _, l in ipairs(listeners) do pcall(l.terminate, l) end
  rounds = rounds + 1
  for _, c in ipairs(conns) do
    if rounds >= 3 and not c.closed then
      if record_of[c] then record_of[c].spoiled = true end
      pcall(c.reset, c)
    end
    if rounds >= 3 or not is_sink(c) then pcall(c.close, c) end
  end
  if rounds >= 3 then -- clients no longer in conns or records, too
    for c, r in pairs(record_of) do
      if r.client == c and not c.closed then r.spoiled = true pcall(c.reset, c) end
    end
  end
  if rounds >= 4 then -- sinks kept half-open (allowHalfOpen) after their client's end
    for c, r in pairs(record_of) do
      if not c.closed then
        if not r.got_end then r.spoiled = true end
        pcall(c.close, c)
      end
    end
  end
end
if os.time() >= deadline then
  local live = {}
  for _, c in ipairs(conns) do if not c.closed then live[#live + 1] = tostring(c) end end
  local all = {}
  for _, c in ipairs(conns) do all[#all + 1] = c end
  for _, r in ipairs(records) do if r.conn then all[#all + 1] = r.conn end end
  for _, c in ipairs(all) do
    local flags = c:_flags()
    if c.closed and not flags:find("anchors=0 ", 1, true) then live[#live + 1] = "closed but anchored [" .. flags .. "]" end
  end
  for _, v in pairs(debug.getregistry()) do -- anchored objects are registry references
    if getmetatable(v) == "TCPConnection" then live[#live + 1] = "anchored: " .. tostring(v) .. " [" .. v:_flags() .. "]" end
    if getmetatable(v) == "TCPListener" then live[#live + 1] = "anchored: " .. tostring(v) end
  end
  for c, role in pairs(upgrade_conns) do
    if not c.closed then live[#live + 1] = "STARTTLS " .. role .. " [" .. c:_flags() .. "]" end
  end
  for _, r in ipairs(records) do
    if r.conn and not r.conn.closed then
      local peer = "?"
      for _, cr in ipairs(records) do
        if cr.client and cr.client.localPort == r.peer_port then
          peer = tostring(cr.client) .. " " .. table.concat(cr.log, ",") .. (cr.detached and " detached" or "")
        end
      end
      live[#live + 1] = tostring(r.conn) .. " " .. r.role .. " " .. table.concat(r.log, ",") .. " [" ..
        r.conn:_flags() .. (r.swapped and " swapped" or "") .. "] <- " .. peer
    end
  end
  fail("the loop did not finish at the end: %d anchored, live: %s", require("evtcp.core").activeCount(),
       table.concat(live, "; "))
end

---------------------------------------------------------------- checks
local observed, terminated = 0, 0
for _, r in ipairs(records) do
  if #r.log > 0 and not r.detached then
    observed = observed + 1
    if r.terminated ~= 1 then fail("a %s connection never got onTerminate (%s)", r.role, table.concat(r.log, ",")) end
    terminated = terminated + 1
  end
end

-- every accepted byte arrives: a client that ended cleanly (onShutdown,
-- no reset or shutdown of its own) delivered what send() accepted: it did
-- connect, and a sink peer that saw the whole stream got exactly those bytes
for _, r in ipairs(records) do
  local sent = table.concat(r.sent)
  if r.client and not r.spoiled and r.ended == "onShutdown" and #sent > 0 and not r.no_events then
    if r.log[1] ~= "onConnection" then
      fail("send() accepted %d bytes, then the connection ended without connecting (%s)", #sent,
           table.concat(r.log, ","))
    end
  end
end
for _, r in ipairs(records) do
  if r.sink and r.read_end == "closed" then try_check(r) end
end

-- no error is dropped: every deliberate one came out somewhere
for id = 1, raised do
  if not caught[id] then fail("deliberate error #%d of %d was raised by a callback and never came out", id, raised) end
end

os.execute("rm -rf " .. sock_dir .. " " .. cert_dir)

print(("fuzz: seed %d, %d operations, %d connections (%d observed, all terminated once), " ..
       "%d listeners (%d Unix-socket tries), %d streams checked (%d bytes), %d STARTTLS pairs (%d echoed over TLS), " ..
       "%d pooled (%d taken up again), %d misuse errors, %d deliberate errors, " ..
       "%d forced collections, %.1f s CPU: passed"):format(SEED, stats.ops, stats.connections,
       observed + (stats.finished or 0), stats.listeners, stats.unix or 0, stats.checked_streams, stats.checked_bytes,
       stats.upgrades or 0, stats.upgraded or 0, stats.pooled or 0, stats.reused or 0, stats.bad_args,
       stats.deliberate, stats.collected, os.clock() - t0))
