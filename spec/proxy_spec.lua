-- PROXY protocol (v1 text, v2 binary) on listeners with proxyProtocol = true:
-- against hand-made headers, malformed ones included, and a real HAProxy.
local evtcp = require("evtcp")
local H = require("helper")

local function be16(n) return string.char(n >> 8 & 255, n & 255) end

local V2_SIG = "\r\n\r\n\0\r\nQUIT\n"

--- A version 2 header: command (0 LOCAL, 1 PROXY), family byte, address
-- block, extra TLV bytes.
local function v2(command, family, block, tlvs)
  tlvs = tlvs or ""
  return V2_SIG .. string.char(0x20 | command, family) .. be16(#block + #tlvs) .. block .. tlvs
end

local function ipv4(a, b, c, d) return string.char(a, b, c, d) end

--- A proxyProtocol listener whose clients echo, recording what the
-- listener and each connection saw.
local function proxied_server(extra)
  local seen = { accepts = {}, conns = {}, errors = {} }
  local options = {
    address = "127.0.0.1",
    proxyProtocol = true,
    onConnection = function(_, _, ev)
      seen.accepts[#seen.accepts + 1] = { ev.ip, ev.port }
      return {
        onConnection = function(_, c, e)
          seen.conns[#seen.conns + 1] = { c.remoteAddress, c.remotePort, e.ip, e.port }
        end,
        onData = function(_, c, e) c:send(e.data) end,
      }
    end,
    onError = function(_, _, ev) seen.errors[#seen.errors + 1] = ev.error end,
  }
  for k, v in pairs(extra or {}) do options[k] = v end
  return assert(evtcp.listen(0, options)), seen
end

--- Sends the pieces (with a pause between them) and reads the answer
-- until the server closes or `want` bytes came.
local function talk(port, pieces, want)
  local got
  H.go(function()
    local c = assert(evtcp.dial("127.0.0.1", port))
    for i, p in ipairs(pieces) do
      if i > 1 then evtcp.sleep(0.02) end
      c:send(p)
    end
    local parts, n = {}, 0
    while n < (want or math.huge) do
      local d = c:receive(nil, 5)
      if not d then break end
      parts[#parts + 1] = d
      n = n + #d
    end
    got = table.concat(parts)
    c:close()
  end)
  return got
end

describe("PROXY protocol", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  it("takes the client's address from a v1 header, and loses none of the bytes after it", function()
    local l, seen = proxied_server()
    assert.equal("hello", talk(l.port, { "PROXY TCP4 192.0.2.7 10.0.0.1 51234 443\r\nhello" }, 5))
    assert.equal("after", talk(l.port, { "PROXY TCP6 2001:db8::1 2001:db8::2 4000 443\r\n", "after" }, 5))
    l:terminate()
    assert.same({ { "192.0.2.7", 51234 }, { "2001:db8::1", 4000 } }, seen.accepts)
    assert.same({ "192.0.2.7", 51234, "192.0.2.7", 51234 }, seen.conns[1])
    assert.same({ "2001:db8::1", 4000, "2001:db8::1", 4000 }, seen.conns[2])
    assert.same({}, seen.errors)
  end)

  it("reads a header that arrives a few bytes at a time", function()
    local l, seen = proxied_server()
    local header = "PROXY TCP4 198.51.100.9 10.0.0.1 60000 80\r\n"
    local pieces = {}
    for i = 1, #header, 4 do pieces[#pieces + 1] = header:sub(i, i + 3) end
    pieces[#pieces + 1] = "payload"
    assert.equal("payload", talk(l.port, pieces, 7))
    local bin = v2(1, 0x11, ipv4(203, 0, 113, 5) .. ipv4(10, 0, 0, 1) .. be16(1234) .. be16(443))
    pieces = { bin:sub(1, 3), bin:sub(4, 13), bin:sub(14, 20), bin:sub(21) .. "v2" }
    assert.equal("v2", talk(l.port, pieces, 2))
    l:terminate()
    assert.same({ { "198.51.100.9", 60000 }, { "203.0.113.5", 1234 } }, seen.accepts)
  end)

  it("reads v2 headers: IPv4 with TLVs, IPv6, and LOCAL (the balancer's own check)", function()
    local l, seen = proxied_server()
    local tlvs = "\x01" .. be16(2) .. "h2" .. "\x04" .. be16(300) .. ("n"):rep(300) -- ALPN, NOOP
    local block4 = ipv4(192, 0, 2, 200) .. ipv4(10, 1, 1, 1) .. be16(40000) .. be16(8443)
    assert.equal("four", talk(l.port, { v2(1, 0x11, block4, tlvs) .. "four" }, 4))
    local a6 = "\x20\x01\x0d\xb8" .. ("\0"):rep(11) .. "\x42"
    local block6 = a6 .. ("\0"):rep(15) .. "\1" .. be16(5555) .. be16(443)
    assert.equal("six", talk(l.port, { v2(1, 0x21, block6) .. "six" }, 3))
    assert.equal("local", talk(l.port, { v2(0, 0x00, "") .. "local" }, 5))
    l:terminate()
    assert.same({ "192.0.2.200", 40000 }, seen.accepts[1])
    assert.same({ "2001:db8::42", 5555 }, seen.accepts[2])
    assert.equal("127.0.0.1", seen.accepts[3][1]) -- LOCAL: the real peer
    assert.same({}, seen.errors)
  end)

  it("reports a missing or malformed header to the listener's onError (kind io) and goes on", function()
    local l, seen = proxied_server({ readTimeout = 0.3 })
    local bad = {
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",                     -- no header at all
      "PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n",               -- bad port
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",                  -- too many fields
      "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",                        -- wrong family
      "PROXY TCP4 " .. ("1"):rep(120) .. "\r\n",               -- no CRLF within 107 bytes
      "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",                    -- not TCP
      V2_SIG .. "\x31\x11" .. be16(12) .. ("\0"):rep(12),      -- version 3
      v2(1, 0x11, "\1\2\3"),                                   -- short address block
    }
    for _, b in ipairs(bad) do
      assert.equal("", talk(l.port, { b }), "the server closed the client: " .. b:sub(1, 20))
    end
    local t0 = H.now()
    assert.equal("", talk(l.port, {})) -- silent: the header never comes
    assert.is_true(H.now() - t0 >= 0.25)
    -- the listener goes on
    assert.equal("ok", talk(l.port, { "PROXY TCP4 192.0.2.1 10.0.0.1 1000 80\r\nok" }, 2))
    l:terminate()
    assert.equal(#bad + 1, #seen.errors)
    for _, e in ipairs(seen.errors) do
      assert.equal("io", e.kind)
      assert.matches("PROXY", e.message)
    end
    assert.matches("in time", seen.errors[#seen.errors].message)
    assert.same({ { "192.0.2.1", 1000 } }, seen.accepts)
  end)

  it("reads the shortest v1 header, PROXY UNKNOWN (HAProxy's health checks), and the payload after it intact", function()
    local l, seen = proxied_server()
    assert.equal("payload\n", talk(l.port, { "PROXY UNKNOWN\r\npayload\n" }, 8))
    assert.equal("ab", talk(l.port, { "PROXY UNKNOWN\r\na", "b" }, 2)) -- no newline after it at all
    assert.equal("x", talk(l.port, { "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nx" }, 1))
    l:terminate()
    assert.same({}, seen.errors)
    assert.equal(3, #seen.accepts)
    for _, a in ipairs(seen.accepts) do assert.equal("127.0.0.1", a[1]) end -- the real peer
  end)

  it("rejects v2 headers with an unknown family or protocol, and datagram ones", function()
    local l, seen = proxied_server()
    local block4 = ipv4(192, 0, 2, 1) .. ipv4(10, 0, 0, 1) .. be16(1) .. be16(2)
    local block6 = ("\1"):rep(32) .. be16(1) .. be16(2)
    local bad = {
      { 0xdb, block4 .. ("\0"):rep(24) }, -- unknown family and protocol
      { 0x41, block4 },                    -- family 4
      { 0x13, block4 },                    -- protocol 3
      { 0x10, block4 },                    -- IPv4 with no protocol
      { 0x12, block4 },                    -- UDP over IPv4
      { 0x22, block6 },                    -- UDP over IPv6
      { 0x32, ("\0"):rep(216) },           -- a Unix datagram socket
      { 0x31, ("\0"):rep(20) },            -- short Unix address block
    }
    for _, b in ipairs(bad) do
      assert.equal("", talk(l.port, { v2(1, b[1], b[2]) .. "no" }), ("family byte 0x%02x"):format(b[1]))
    end
    -- LOCAL ignores the family byte, and UNSPEC or a Unix stream keeps the real peer
    assert.equal("ok", talk(l.port, { v2(0, 0xdb, "") .. "ok" }, 2))
    assert.equal("ok", talk(l.port, { v2(1, 0x00, "") .. "ok" }, 2))
    assert.equal("ok", talk(l.port, { v2(1, 0x31, ("\0"):rep(216)) .. "ok" }, 2))
    l:terminate()
    assert.equal(#bad, #seen.errors)
    assert.matches("datagram", seen.errors[5].message)
    assert.matches("unknown address family", seen.errors[1].message)
    assert.equal(3, #seen.accepts)
  end)

  it("source port 0: event.port is 0, as remotePort", function()
    local l, seen = proxied_server()
    assert.equal("a", talk(l.port, { "PROXY TCP4 192.0.2.9 10.0.0.1 0 80\r\na" }, 1))
    local block = ipv4(192, 0, 2, 10) .. ipv4(10, 0, 0, 1) .. be16(0) .. be16(80)
    assert.equal("b", talk(l.port, { v2(1, 0x11, block) .. "b" }, 1))
    l:terminate()
    assert.same({ { "192.0.2.9", 0 }, { "192.0.2.10", 0 } }, seen.accepts)
    assert.same({ "192.0.2.9", 0, "192.0.2.9", 0 }, seen.conns[1])
    assert.same({ "192.0.2.10", 0, "192.0.2.10", 0 }, seen.conns[2])
  end)

  it("the header's readTimeout is a deadline: a client trickling a byte at a time is closed", function()
    local l, seen = proxied_server({ readTimeout = 0.5 })
    local header = "PROXY TCP4 192.0.2.1 10.0.0.1 1000 80\r\n"
    local sent = 0
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", l.port))
      for i = 1, #header - 2 do -- never finished: a byte every 0.1 s
        if #seen.errors > 0 then break end
        c:send(header:sub(i, i))
        sent = i
        evtcp.sleep(0.1)
      end
      assert.is_nil(c:receive(nil, 10)) -- the server has closed
      c:close()
    end, 30)
    l:terminate()
    assert.equal(1, #seen.errors)
    assert.matches("in time", seen.errors[1].message)
    assert.equal(0, #seen.accepts)
    local sent_at_error = sent
    -- re-armed by each byte (0.1 s apart, under the 0.5 s), the timeout
    -- only fired once the client stopped; a deadline fires while it trickles
    assert.is_true(sent_at_error < #header - 2, ("the header timed out after all %d bytes"):format(sent_at_error))
  end)

  it("readTimeout = 0 is no timeout for the header either, as for connections", function()
    local l, seen = proxied_server({ readTimeout = 0 })
    assert.equal("late", talk(l.port, { "PROXY TCP4 192.0.2.1 ", "10.0.0.1 1000 80\r\nlate" }, 4))
    l:terminate()
    assert.same({}, seen.errors)
  end)

  it("works with accept(): each client comes with its own address, in order", function()
    local l = assert(evtcp.listen(0, { address = "127.0.0.1", proxyProtocol = true }))
    local got = {}
    H.go(function()
      for i = 1, 3 do
        evtcp.spawn(function()
          local c = assert(evtcp.dial("127.0.0.1", l.port))
          c:send(("PROXY TCP4 192.0.2.%d 10.0.0.1 %d 80\r\nclient %d"):format(i, 1000 + i, i))
          c:receive("a", 5)
          c:close()
        end)
      end
      for _ = 1, 3 do
        local s = assert(l:accept(5))
        got[#got + 1] = { s.remoteAddress, s.remotePort, s:receive(8, 5) }
        s:close()
      end
    end)
    l:terminate()
    table.sort(got, function(a, b) return a[2] < b[2] end)
    for i = 1, 3 do
      assert.same({ "192.0.2." .. i, 1000 + i, "client " .. i }, got[i])
    end
  end)

  it("rejects a proxyProtocol option that is not a boolean", function()
    assert.has_error(function() evtcp.listen(0, { proxyProtocol = "yes" }) end,
      "bad argument #2 to 'listen' (option 'proxyProtocol' must be a boolean)")
  end)

  describe("behind a real HAProxy", function()
    if not os.execute("command -v haproxy >/dev/null 2>&1") then
      it("needs haproxy (make test installs it)", function() pending("haproxy is not installed") end)
      return
    end

    it("learns each client's address and port through send-proxy and send-proxy-v2", function()
      local l, seen = proxied_server()
      local p1, p2 = H.free_port(), H.free_port()
      local dir = os.tmpname()
      local cfg = dir .. ".cfg"
      local f = assert(io.open(cfg, "w"))
      f:write(([[
global
  maxconn 100
defaults
  mode tcp
  timeout connect 2s
  timeout client 5s
  timeout server 5s
frontend v1
  bind 127.0.0.1:%d
  default_backend v1
backend v1
  server evtcp 127.0.0.1:%d send-proxy
frontend v2
  bind 127.0.0.1:%d
  default_backend v2
backend v2
  server evtcp 127.0.0.1:%d send-proxy-v2
]]):format(p1, l.port, p2, l.port))
      f:close()
      local pidfile = dir .. ".pid"
      assert(os.execute(H.peer .. "haproxy -D -q -f " .. cfg .. " -p " .. pidfile))
      local ok, err = pcall(function()
        local ports = {}
        for _, front in ipairs({ p1, p2 }) do
          H.go(function()
            local c
            local deadline = H.now() + 5
            repeat -- haproxy may take a moment to bind
              c = evtcp.dial("127.0.0.1", front)
              if not c then evtcp.sleep(0.05) end
            until c or H.now() > deadline
            assert(c, "haproxy did not listen")
            ports[#ports + 1] = c.localPort
            c:send("through haproxy")
            local parts = {}
            while #table.concat(parts) < 15 do parts[#parts + 1] = assert(c:receive(nil, 5)) end
            assert.equal("through haproxy", table.concat(parts))
            c:close()
          end, 15)
        end
        H.run_until(function() return #seen.conns == 2 end, "both connections")
        assert.same({ "127.0.0.1", ports[1] }, seen.accepts[1])
        assert.same({ "127.0.0.1", ports[2] }, seen.accepts[2])
        assert.same({ "127.0.0.1", ports[1], "127.0.0.1", ports[1] }, seen.conns[1])
      end)
      os.execute("kill $(cat " .. pidfile .. ") 2>/dev/null")
      os.remove(cfg)
      os.remove(pidfile)
      os.remove(dir)
      l:terminate()
      assert(ok, err)
      assert.same({}, seen.errors)
    end)
  end)
end)
