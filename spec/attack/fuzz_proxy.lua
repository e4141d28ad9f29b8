--- The PROXY header fuzzer (part of make fuzz): clients of a proxyProtocol
-- listener send generated headers -- v1 and v2, valid ones (TCP4, TCP6,
-- UNKNOWN, LOCAL, Unix, with TLVs) and broken ones (truncated, oversized,
-- unknown versions, commands, families and protocols, address blocks too
-- short, lines without CRLF, garbage) -- with a payload in the same write or
-- after, the whole split into tiny writes at random points. Each case knows
-- what the specification says:
--   * a valid header: the connection is offered with the address it names
--     (the real peer for UNKNOWN, LOCAL, UNSPEC and Unix), and the payload
--     comes back (echoed) byte for byte;
--   * a broken or truncated one: the client is closed with nothing echoed,
--     and the listener's onError (kind io) says why.
-- FUZZ_PROXY cases (default 1500), FUZZ_SEED; exits 1 on a mismatch.
local evtcp = require("evtcp")

local CASES = tonumber(os.getenv("FUZZ_PROXY")) or 1500
local SEED = tonumber(os.getenv("FUZZ_SEED")) or 1
local AT_ONCE = 8

local R = require("attack.random")(SEED, 41)
local rand, chance, pick = R.rand, R.chance, R.pick

local stats = { cases = 0, valid = 0, broken = 0, truncated = 0, writes = 0 }

local function fail(case, fmt, ...)
  io.stderr:write(("FUZZ_PROXY FAILURE (seed %d, case %d, %s): "):format(SEED, case.id, case.what)
    .. fmt:format(...) .. ("\n  header: %q\n"):format(case.header))
  os.exit(1)
end

local function be16(n) return string.char(n >> 8 & 255, n & 255) end
local V2_SIG = "\r\n\r\n\0\r\nQUIT\n"

local function random_bytes(n)
  local t = {}
  for i = 1, n do t[i] = string.char(rand(256) - 1) end
  return table.concat(t)
end

local function ipv4() return { rand(223), rand(256) - 1, rand(256) - 1, rand(254) } end
local function ipv6() return { 0x2001, 0xdb8, rand(65535), 0, 0, 0, 0, rand(65535) } end
local function v4_text(a) return table.concat(a, ".") end
local function v6_text(a) return ("%x:%x:%x::%x"):format(a[1], a[2], a[3], a[8]) end
local function v4_bin(a) return string.char(a[1], a[2], a[3], a[4]) end
local function v6_bin(a)
  local t = {}
  for i = 1, 8 do t[i] = be16(a[i]) end
  return table.concat(t)
end

--- A v2 header: version/command byte, family byte, block.
local function v2(vc, fam, block) return V2_SIG .. string.char(vc, fam) .. be16(#block) .. block end

--- A header and what must come of it: expect "ok" with ip/port (nil: the
-- real peer), or "bad".
local function generate()
  local x = rand(20)
  local port = rand(65536) - 1
  if x <= 3 then -- v1 TCP4
    local a = ipv4()
    return { what = "v1 TCP4", expect = "ok", ip = v4_text(a), port = port,
             header = ("PROXY TCP4 %s 10.0.0.1 %d 443\r\n"):format(v4_text(a), port) }
  elseif x == 4 then -- v1 TCP6
    local a = ipv6()
    return { what = "v1 TCP6", expect = "ok", ip = v6_text(a), port = port,
             header = ("PROXY TCP6 %s 2001:db8::1 %d 443\r\n"):format(v6_text(a), port) }
  elseif x == 5 then
    return { what = "v1 UNKNOWN", expect = "ok",
             header = pick({ "PROXY UNKNOWN\r\n", "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", "PROXY UNKNOWN junk\r\n" }) }
  elseif x == 6 then -- broken v1
    return { what = "v1 broken", expect = "bad", header = pick({
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
      "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
      "PROXY TCP4 " .. ("1"):rep(rand(120)) .. "\r\n", "PROXY " .. ("9"):rep(110), "PROXY\r\n" .. ("x"):rep(20),
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n" }) }
  elseif x <= 10 then -- v2 PROXY over IPv4 or IPv6, with TLVs
    local tlvs = chance(0.5) and "" or ("\x04" .. be16(rand(40)) .. random_bytes(rand(60)))
    if chance(0.5) then
      local a = ipv4()
      return { what = "v2 TCP4", expect = "ok", ip = v4_text(a), port = port,
               header = v2(0x21, 0x11, v4_bin(a) .. v4_bin({ 10, 0, 0, 1 }) .. be16(port) .. be16(443) .. tlvs) }
    end
    local a = ipv6()
    return { what = "v2 TCP6", expect = "ok", ip = v6_text(a), port = port,
             header = v2(0x21, 0x21, v6_bin(a) .. v6_bin({ 0x2001, 0xdb8, 0, 0, 0, 0, 0, 1 }) .. be16(port)
                         .. be16(443) .. tlvs) }
  elseif x == 11 then -- the real peer stays: LOCAL (any family), UNSPEC, a Unix stream
    return pick({
      { what = "v2 LOCAL", expect = "ok", header = v2(0x20, pick({ 0x00, 0x11, 0xdb }), random_bytes(rand(30) - 1)) },
      { what = "v2 UNSPEC", expect = "ok", header = v2(0x21, 0x00, random_bytes(rand(30) - 1)) },
      { what = "v2 Unix", expect = "ok", header = v2(0x21, 0x31, random_bytes(216 + rand(20) - 1)) },
    })
  elseif x <= 14 then -- broken v2
    local fam = pick({ 0x12, 0x22, 0x32, 0x41, 0x13, 0x10, 0x01, 0xdb, 0xff })
    return pick({
      { what = "v2 family " .. fam, expect = "bad", header = v2(0x21, fam, random_bytes(216)) },
      { what = "v2 version", expect = "bad", header = v2(pick({ 0x11, 0x31, 0xf1, 0x01 }), 0x11, random_bytes(12)) },
      { what = "v2 command", expect = "bad", header = v2(pick({ 0x22, 0x2f }), 0x11, random_bytes(12)) },
      { what = "v2 short IPv4", expect = "bad", header = v2(0x21, 0x11, random_bytes(rand(12) - 1)) },
      { what = "v2 short IPv6", expect = "bad", header = v2(0x21, 0x21, random_bytes(rand(36) - 1)) },
      { what = "v2 short Unix", expect = "bad", header = v2(0x21, 0x31, random_bytes(rand(216) - 1)) },
    })
  elseif x <= 16 then -- a valid header cut short, then the client's end
    local c = generate()
    while c.expect ~= "ok" do c = generate() end
    c.header = c.header:sub(1, rand(#c.header - 1))
    c.what, c.expect, c.truncated = "truncated " .. c.what, "bad", true
    return c
  elseif x == 17 then -- oversized: a v2 length far beyond what comes
    return { what = "v2 oversized", expect = "bad", truncated = true,
             header = V2_SIG .. "\x21\x11" .. be16(1000 + rand(64000)) .. random_bytes(rand(100)) }
  elseif x == 18 then
    return { what = "not a header", expect = "bad", header = pick({ "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      "PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n", V2_SIG:sub(1, 11) .. "X" .. random_bytes(20), random_bytes(20) }) }
  end
  -- the signature's first bytes, then anything
  local h = pick({ "PROXY ", V2_SIG }) .. random_bytes(rand(120))
  return { what = "random after a signature", expect = "any", header = h }
end

local function start_case()
  stats.cases = stats.cases + 1
  local case = generate()
  case.id = stats.cases
  case.payload = case.truncated and "" or random_bytes(rand(300) - 1)
  local l
  l = assert(evtcp.listen(0, { address = "127.0.0.1", proxyProtocol = true, readTimeout = 5,
    onConnection = function(_, _, ev)
      case.offered = { ev.ip, ev.port }
      return {
        onConnection = function(_, c) case.remote = { c.remoteAddress, c.remotePort } end,
        onData = function(_, c, e) c:send(e.data) end,
        onEnd = function(_, c) c:close() end,
      }
    end,
    onError = function(_, _, ev)
      case.errors = (case.errors or 0) + 1
      case.error = ev.error
    end }))
  case.listener = l
  local echoed = {}
  local c = assert(evtcp.connect("127.0.0.1", l.port, {
    onData = function(_, _, e) echoed[#echoed + 1] = e.data end,
    onEnd = function(_, c) c:close() end,
    onShutdown = function() case.client_done = true end,
    onError = function() case.client_done = true end, -- a reset when the server closes on unread bytes
  }))
  case.echoed = echoed
  local bytes = case.header .. case.payload
  local at = 0
  local function write_some()
    if c.closed then return end
    if at >= #bytes then c:shutdown() return end
    local n = pick({ 1, 1, 2, 3, 7, 15, 16, 17, 64, 500 })
    c:send(bytes:sub(at + 1, at + n))
    stats.writes = stats.writes + 1
    at = at + n
    if chance(0.3) then evtcp.after(pick({ 0, 0.002 }), write_some) else write_some() end
  end
  write_some()
  case.started = os.time()
  return case
end

local function check(case)
  local echoed = table.concat(case.echoed)
  if case.expect == "any" then return end -- garbage: no crash, an end; nothing more is known
  if case.expect == "ok" then
    if not case.offered then
      fail(case, "a valid header was refused: %s", case.error and case.error.message or "no error")
    end
    local ip, port = case.ip or "127.0.0.1", case.port
    if case.offered[1] ~= ip or (port and case.offered[2] ~= port) then
      fail(case, "offered as %s port %s, the header names %s port %s", tostring(case.offered[1]),
           tostring(case.offered[2]), ip, tostring(port))
    end
    if case.remote and (case.remote[1] ~= case.offered[1] or case.remote[2] ~= case.offered[2]) then
      fail(case, "remoteAddress %s:%s differs from the event's", tostring(case.remote[1]), tostring(case.remote[2]))
    end
    if echoed ~= case.payload then fail(case, "the payload came back as %d of %d bytes", #echoed, #case.payload) end
    stats.valid = stats.valid + 1
  elseif case.expect == "bad" then
    if case.offered then fail(case, "a broken header was accepted (as %s)", tostring(case.offered[1])) end
    if case.errors ~= 1 then fail(case, "%s listener errors, not 1", tostring(case.errors)) end
    if case.error.kind ~= "io" then fail(case, "the listener's error is of kind %s", case.error.kind) end
    if #echoed > 0 then fail(case, "bytes came back from a refused client") end
    stats.broken = stats.broken + 1
    if case.truncated then stats.truncated = stats.truncated + 1 end
  end
end

require("attack.cases")(CASES, AT_ONCE, start_case, function(case)
  -- done: the client ended, and the listener saw the outcome (a refused
  -- client's error can come just after the client saw its close)
  if not (case.client_done and (case.offered or case.errors or os.time() - case.started > 8)) then return false end
  check(case)
  case.listener:terminate()
  return true
end, function(case) fail(case, "the case did not end within 30 s") end)
assert(evtcp.run(10), "the loop did not finish")
print(("fuzz_proxy: seed %d, %d headers in %d writes: %d valid ones offered with their address and payload, "
  .. "%d broken ones refused (%d truncated): passed"):format(SEED, stats.cases, stats.writes, stats.valid,
  stats.broken, stats.truncated))
