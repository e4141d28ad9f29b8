-- TLS: certificates are made at test time with the openssl command line: a
-- throwaway CA, a server certificate for localhost, a wrong-name one, an
-- expired one, and a client certificate.
local evtcp = require("evtcp")
local H = require("helper")

local dir = os.tmpname()
os.remove(dir)

local sh = H.sh

local read = H.read

local function make_certs()
  os.execute("mkdir -p " .. dir)
  local d = dir
  sh(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
    .. "-subj '/CN=evtcp test CA'"):format(d))
  local function leaf(name, cn, san, days)
    sh(("cd %s && openssl req -newkey rsa:2048 -nodes -keyout %s.key -out %s.csr -subj '/CN=%s'"):format(d, name, name, cn))
    sh(("cd %s && printf 'subjectAltName=%s\\n' > %s.ext"):format(d, san, name))
    sh(("cd %s && openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out %s.pem -days %d -extfile %s.ext")
      :format(d, name, name, days, name))
  end
  leaf("server", "localhost", "DNS:localhost,IP:127.0.0.1", 2)
  leaf("wrong", "wrong.example", "DNS:wrong.example", 2)
  leaf("expired", "localhost", "DNS:localhost,IP:127.0.0.1", 0)
  leaf("client", "evtcp client", "DNS:client.example", 2)
  leaf("alpha", "alpha.example.test", "DNS:alpha.example.test", 2)
  leaf("wild", "*.wild.example.test", "DNS:*.wild.example.test", 2)
end

local function path(name) return dir .. "/" .. name end

local function tls_server(cert, make, extra)
  local tls = { cert = path(cert .. ".pem"), key = path(cert .. ".key") }
  for k, v in pairs(extra or {}) do tls[k] = v end
  return H.server(make, { tls = tls })
end

local function echo(extra)
  return H.recorder(setmetatable({ onData = function(_, c, ev) c:send(ev.data) end }, { __index = extra }))
end

describe("TLS", function()
  setup(function()
    make_certs()
    evtcp.sleep(1.1) -- the 0-day certificate is now expired
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  it("connects an evtcp client to an evtcp server, verified, with the core's event order", function()
    local server_side
    local l = tls_server("server", function()
      server_side = echo()
      return server_side
    end)
    local info
    local rec
    rec = H.recorder({ tls = { ca = path("ca.pem") }, onConnection = function(_, c)
      info = c.tls
      c:send("over ", "tls")
    end, onData = function(_, c) if rec.data():sub(-8) == "over tls" then c:close() end end })
    local conn = evtcp.connect("localhost", l.port, rec)
    conn:send("early ")  -- before the handshake: sent once it is done
    H.run_until(rec.terminated, "the TLS exchange")
    H.run_until(server_side.terminated, "the server side")
    l:terminate()
    assert.are.same({ "connection", "data", "close", "terminate" },
      { rec.log[1], rec.log[2], rec.log[#rec.log - 1], rec.log[#rec.log] })
    assert.are.equal("early over tls", rec.data())
    assert.matches("^TLSv1%.[23]$", info.protocol)
    assert.is_string(info.cipher)
    assert.are.equal("/CN=localhost", info.peerCertificate.subject)
    assert.are.equal("/CN=evtcp test CA", info.peerCertificate.issuer)
    assert.are.same({ "connection", "data", "close", "terminate" },
      { server_side.log[1], server_side.log[2], server_side.log[#server_side.log - 1], server_side.log[#server_side.log] })
    assert.is_nil(conn.tls) -- closed
  end)

  it("carries 4 MiB both ways byte for byte", function()
    local payload = H.bytes(4 * 1024 * 1024, 31)
    local l = tls_server("server", function() return echo() end)
    local rec
    rec = H.recorder({ tls = { ca = path("ca.pem") },
      onConnection = function(_, c) c:send(payload) end,
      onData = function(_, c) if #rec.data() >= #payload then c:close() end end })
    evtcp.connect("127.0.0.1", l.port, rec)
    H.run_until(rec.terminated, "4 MiB over TLS", 60)
    l:terminate()
    assert.is_nil(rec.count.onError)
    assert.is_true(rec.data() == payload)
  end)

  it("half-closes: shutdown() sends close_notify and FIN, the answer still arrives", function()
    local tail = H.bytes(300000, 5)
    local l = tls_server("server", function()
      return { onData = function(_, c, ev) if ev.data:find("question") then c:send(tail) end end }
    end)
    local rec = H.recorder({ tls = { ca = path("ca.pem") }, onConnection = function(_, c)
      c:send("question")
      c:shutdown()
    end })
    evtcp.connect("localhost", l.port, rec)
    H.run_until(rec.terminated, "the answer")
    l:terminate()
    assert.is_true(rec.data() == tail)
    assert.are.equal("close", rec.log[#rec.log - 1])
  end)

  it("works in blocking style too", function()
    local l = tls_server("server", function() return echo() end)
    H.go(function()
      local c = assert(evtcp.dial("localhost", l.port, { tls = { ca = path("ca.pem") } }))
      c:send("line one\r\nline two\n")
      assert.are.equal("line one", c:receive("l", 5))
      assert.are.equal("line two", c:receive("*l", 5))
      c:close()
    end)
    l:terminate()
  end)

  it("runs over a Unix socket, verified against tls.serverName", function()
    local sock = dir .. "/tls.sock"
    local l = assert(evtcp.listen("unix:" .. sock, {
      tls = { cert = path("server.pem"), key = path("server.key") },
      onConnection = function() return echo() end,
    }))
    local info
    H.go(function()
      local c = assert(evtcp.dial("unix:" .. sock, nil, { tls = { ca = path("ca.pem"), serverName = "localhost" } }))
      info = c.tls
      c:send("over unix\n")
      assert.are.equal("over unix", c:receive("l", 5))
      c:close()
      -- the certificate names localhost, not wrong.example: refused
      local none, err = evtcp.dial("unix:" .. sock, nil, { tls = { ca = path("ca.pem"), serverName = "wrong.example" } })
      assert.is_nil(none)
      assert.are.equal("tls", err.kind)
    end)
    l:terminate()
    assert.are.equal("/CN=localhost", info.peerCertificate.subject)
    assert.has_error(function() evtcp.connect("unix:" .. sock, nil, { tls = { ca = path("ca.pem") } }) end,
      "bad argument #3 to 'connect' (TLS over a Unix socket needs tls.serverName (the name the certificate "
      .. "is checked against), or tls.verify = false)")
  end)

  it("takes PEM text instead of paths", function()
    local l = H.server(function() return echo() end, { tls = {
      cert = read(path("server.pem")), key = read(path("server.key")) } })
    local rec = H.recorder({ tls = { ca = read(path("ca.pem")) },
      onConnection = function(_, c) c:send("pem") end, onData = function(_, c) c:close() end })
    evtcp.connect("localhost", l.port, rec)
    H.run_until(rec.terminated, "the PEM exchange")
    l:terminate()
    assert.are.equal("pem", rec.data())
  end)

  it("takes a CA folder", function()
    sh(("mkdir -p %s/cadir && cp %s %s/cadir/ && openssl rehash %s/cadir"):format(dir, path("ca.pem"), dir, dir))
    local l = tls_server("server", function() return echo() end)
    local rec = H.recorder({ tls = { ca = dir .. "/cadir" },
      onConnection = function(_, c) c:close() end })
    evtcp.connect("localhost", l.port, rec)
    H.run_until(rec.terminated, "the connection")
    l:terminate()
    assert.are.equal("connection", rec.log[1])
    assert.is_nil(rec.count.onError)
  end)

  describe("failures are errors of kind 'tls' with OpenSSL's reason", function()
    local function expect_failure(cert, client_tls, reason, host)
      local server_errors = {}
      local l = tls_server(cert, function()
        return { onError = function(_, _, ev) server_errors[#server_errors + 1] = ev.error end }
      end)
      local rec = H.recorder({ tls = client_tls })
      local conn = evtcp.connect(host or "localhost", l.port, rec)
      H.run_until(rec.terminated, "the failure")
      l:terminate()
      assert.are.same({ "error", "terminate" }, rec.log)
      assert.are.equal("tls", rec.errors[1].kind)
      assert.are.equal("openssl", rec.errors[1].componentSignature)
      assert.matches(reason, rec.errors[1].message)
      assert.are.equal("tls", conn.errors[1].kind)
      return server_errors
    end

    it("an untrusted certificate (the system store does not know our CA)", function()
      local server_errors = expect_failure("server", true, "certificate verify failed")
      H.run_until(function() return #server_errors > 0 end, "the server to see the alert")
      assert.are.equal("tls", server_errors[1].kind)
    end)

    it("a name mismatch", function()
      expect_failure("wrong", { ca = path("ca.pem") }, "certificate verify failed %(hostname mismatch%)")
    end)

    it("a serverName that does not match, on an IP literal", function()
      expect_failure("server", { ca = path("ca.pem"), serverName = "other.example" }, "hostname mismatch", "127.0.0.1")
    end)

    it("an expired certificate", function()
      expect_failure("expired", { ca = path("ca.pem") }, "certificate has expired")
    end)

    it("a file that cannot be read", function()
      local rec = H.recorder()
      rec.tls = { ca = dir .. "/no-such-file.pem" }
      evtcp.connect("localhost", 1, rec)
      H.run_until(rec.terminated, "the failure")
      assert.are.same({ "error", "terminate" }, rec.log)
      assert.are.equal("tls", rec.errors[1].kind)
      -- the file is named, with the system's reason (not OpenSSL's "system lib")
      assert.are.equal("tls.ca '" .. dir .. "/no-such-file.pem': No such file or directory", rec.errors[1].message)
      assert.are.equal("ENOENT", rec.errors[1].errName)
      local l, msg = evtcp.listen(0, { address = "127.0.0.1", tls = { cert = dir .. "/none.pem", key = dir .. "/none.key" } })
      assert.is_nil(l)
      assert.are.equal("tls.cert '" .. dir .. "/none.pem': No such file or directory", msg)
    end)

    it("a handshake the peer aborts", function()
      local l = H.server(function() return { onConnection = function(_, c) c:close() end } end)
      local rec = H.recorder({ tls = { ca = path("ca.pem") } })
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "the aborted handshake")
      l:terminate()
      assert.are.same({ "error", "terminate" }, rec.log)
      assert.are.equal("tls", rec.errors[1].kind)
    end)

    it("verify = false is the way to skip the check", function()
      local l = tls_server("wrong", function() return echo() end)
      local rec = H.recorder({ tls = { verify = false }, onConnection = function(_, c) c:send("x") end,
                               onData = function(_, c) c:close() end })
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "the unverified exchange")
      l:terminate()
      assert.are.equal("x", rec.data())
    end)
  end)

  describe("client certificates", function()
    it("are asked for with ca + verify, and checked", function()
      local accepted = 0
      local l = tls_server("server", function()
        return { onConnection = function(_, c) accepted = accepted + 1 c:send("welcome") end, onShutdown = function() end }
      end, { ca = path("ca.pem"), verify = true })
      local with = H.recorder({ tls = { ca = path("ca.pem"), cert = path("client.pem"), key = path("client.key") },
        onData = function(_, c) c:close() end })
      evtcp.connect("localhost", l.port, with)
      H.run_until(with.terminated, "the client with a certificate")
      local without = H.recorder({ tls = { ca = path("ca.pem") } })
      evtcp.connect("localhost", l.port, without)
      H.run_until(without.terminated, "the client without one")
      l:terminate()
      assert.are.equal("welcome", with.data())
      assert.are.equal(1, accepted)
      assert.is_nil(without.count.onData)
      assert.are.equal(1, (without.count.onError or 0) + (without.count.onShutdown or 0))
    end)
  end)

  describe("real peers", function()
    it("an evtcp client talks to openssl s_server", function()
      local port = H.free_port()
      local out = os.tmpname()
      os.execute(("%stimeout 20 openssl s_server -accept 127.0.0.1:%d -cert %s -key %s -www -naccept 1 >%s 2>&1 &")
        :format(H.peer, port, path("server.pem"), path("server.key"), out))
      local rec
      local deadline = H.now() + 10
      repeat
        rec = H.recorder({ tls = { ca = path("ca.pem") },
          onConnection = function(_, c) c:send("GET / HTTP/1.0\r\n\r\n") end })
        evtcp.connect("localhost", port, rec)
        H.run_until(rec.terminated, "s_server's answer", 20)
        if not rec.count.onConnection then evtcp.sleep(0.1) end
      until rec.count.onConnection or H.now() > deadline
      os.remove(out)
      assert.matches("^HTTP/1%.0 200 ok", rec.data())
      assert.are.equal("close", rec.log[#rec.log - 1])
    end)

    it("openssl s_client talks to an evtcp server", function()
      local l = tls_server("server", function()
        return { onData = function(_, c, ev) c:send(ev.data) c:close() end }
      end)
      local out, flag = os.tmpname(), os.tmpname()
      os.remove(flag)
      os.execute(("(echo hello-from-s_client | %stimeout 20 openssl s_client -connect 127.0.0.1:%d " ..
        "-servername localhost -CAfile %s -verify_return_error -quiet -ign_eof >%s 2>&1; echo done >%s) &")
        :format(H.peer, l.port, path("ca.pem"), out, flag))
      H.run_until(function()
        local f = io.open(flag)
        if f then f:close() end
        return f ~= nil
      end, "s_client to finish", 20)
      l:terminate()
      local got = read(out)
      os.remove(out)
      os.remove(flag)
      assert.matches("hello%-from%-s_client", got)
    end)
  end)

  describe("bad tls options", function()
    it("raise an argument error naming the field", function()
      local function raises(pattern, f)
        local ok, err = pcall(f)
        assert.is_false(ok)
        assert.matches(pattern, err)
      end
      raises("option 'tls' must be true or a table", function() evtcp.connect("h", 1, { tls = "yes" }) end)
      raises("option 'tls.ca' must be a string", function() evtcp.connect("h", 1, { tls = { ca = 5 } }) end)
      raises("option 'tls.verify' must be a boolean", function() evtcp.connect("h", 1, { tls = { verify = "no" } }) end)
      raises("needs both cert and key", function() evtcp.connect("h", 1, { tls = { cert = "x" } }) end)
      raises("listener needs cert and key", function() evtcp.listen(0, { address = "127.0.0.1", tls = {} }) end)
      raises("option 'tls' must be a table with cert and key", function() evtcp.listen(0, { tls = true }) end)
    end)
  end)

  it("has an example that serves and dials TLS", function()
    local f = io.popen(("lua5.4 examples/tls_echo.lua %s %s %s 2>&1")
      :format(path("server.pem"), path("server.key"), path("ca.pem")))
    local out = f:read("a")
    assert.is_true(f:close(), out)
    assert.matches("^connected with TLSv1%.[23], [%w_-]+, to /CN=localhost\nechoed: hello over TLS\n$", out)
  end)

  it("has a client example that trusts a private CA, and refuses a certificate that names another host", function()
    local outs = {}
    for _, cert in ipairs({ "server", "wrong" }) do
      local l = tls_server(cert, function() return echo() end)
      local out = os.tmpname()
      os.execute(("(lua5.4 examples/tls_client.lua localhost %d %s 'over a private CA' > %s 2>&1; echo \"exit $?\" >> %s) &")
        :format(l.port, path("ca.pem"), out, out))
      H.run_until(function() return H.read(out):find("exit %d") ~= nil end, "the example to finish", 15)
      outs[cert] = H.read(out)
      os.remove(out)
      l:terminate()
    end
    assert.matches("^connected: TLSv1%.[23], [%w_-]+, server /CN=localhost\nreply: over a private CA\nexit 0\n$", outs.server)
    assert.matches("^failed: .*%(tls%)\nexit 1\n$", outs.wrong)
  end)

  it("frees every OpenSSL object at lua_close with live TLS connections", function()
    local ok, out = H.lua_child(([[
      local evtcp = require("evtcp")
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", tls = { cert = %q, key = %q },
        onConnection = function() return { onData = function(_, c, ev) c:send(ev.data) end } end }))
      for i = 1, 3 do
        local c = evtcp.connect("localhost", l.port, { tls = { ca = %q }, onData = function() end })
        c:send(string.rep("t", 100000))
      end
      for _ = 1, 5 do evtcp.step(0.02) end
      print("closing")
    ]]):format(path("server.pem"), path("server.key"), path("ca.pem")))
    assert.is_true(ok, out)
    assert.are.equal("closing\n", out)
  end)

  --- Starts openssl s_server with extra flags on a free port; returns the
  -- port and a stop function. It serves -www pages to each connection.
  local function s_server(flags)
    local port = H.free_port()
    local out = os.tmpname()
    os.execute(("%stimeout 30 openssl s_server -accept 127.0.0.1:%d -cert %s -key %s -www %s >%s 2>&1 & echo $! >%s.pid")
      :format(H.peer, port, path("server.pem"), path("server.key"), flags, out, out))
    local deadline = H.now() + 10
    H.go(function()
      repeat
        local c = evtcp.dial("127.0.0.1", port)
        if c then c:close() return end
        evtcp.sleep(0.05)
      until H.now() > deadline
    end, 15)
    return port, function()
      os.execute("kill $(cat " .. out .. ".pid) 2>/dev/null")
      os.remove(out .. ".pid")
      local text = read(out)
      os.remove(out)
      return text
    end
  end

  --- Dials with tls options, sends a request, reads the answer (so that a
  -- TLS 1.3 ticket that follows the handshake is read too), closes.
  local function fetch(port, tls, request)
    local info, answer, err
    H.go(function()
      local c
      c, err = evtcp.dial("localhost", port, { tls = tls })
      if not c then return end
      info = c.tls
      c:send(request or "GET / HTTP/1.0\r\n\r\n")
      answer = c:receive("a", 10)
      c:close()
    end, 15)
    return info, answer, err
  end

  --- Runs openssl s_client (with input, and flags) against port in the
  -- background, the loop serving meanwhile; returns what it printed.
  local function s_client(port, input, flags)
    local out, flag = os.tmpname(), os.tmpname()
    os.remove(flag)
    os.execute(("(echo %s | %stimeout 20 openssl s_client -connect 127.0.0.1:%d %s >%s 2>&1; echo done >%s) &")
      :format(input, H.peer, port, flags, out, flag))
    H.run_until(function() local f = io.open(flag) if f then f:close() end return f ~= nil end, "s_client", 20)
    local text = read(out)
    os.remove(out)
    os.remove(flag)
    return text
  end

  describe("ALPN", function()
    local function alpn_server(alpn, seen)
      return tls_server("server", function()
        return echo({ onConnection = function(_, c) seen.server = c.tls and c.tls.alpn or "none" end,
                      onError = function(_, _, ev) seen.server_error = ev.error end })
      end, { alpn = alpn })
    end

    it("picks the server's first protocol that the client offers, told on both sides", function()
      local seen = {}
      local l = alpn_server({ "h2", "http/1.1" }, seen)
      local function try(client_alpn)
        local got
        seen.server = nil
        H.go(function()
          local c = assert(evtcp.dial("localhost", l.port, { tls = { ca = path("ca.pem"), alpn = client_alpn } }))
          got = c.tls.alpn or "none"
          c:close()
        end)
        H.run_until(function() return seen.server end, "the server's handshake")
        return got, seen.server
      end
      assert.same({ "h2", "h2" }, { try({ "http/1.1", "h2" }) })
      assert.same({ "http/1.1", "http/1.1" }, { try({ "http/1.1", "acme" }) })
      assert.same({ "none", "none" }, { try(nil) })
      l:terminate()
    end)

    it("takes protocol names up to 255 bytes, the limit its message gives, and a list of several", function()
      local long = string.rep("p", 254) .. "2"
      local seen = {}
      local l = alpn_server({ long, "h2" }, seen) -- the server's preference first
      local got
      H.go(function()
        local c = assert(evtcp.dial("localhost", l.port, { tls = { ca = path("ca.pem"),
          alpn = { long, string.rep("q", 255), string.rep("r", 255), "h2" } } }))
        got = c.tls.alpn
        c:close()
      end)
      H.run_until(function() return seen.server end, "the server's handshake")
      l:terminate()
      assert.equal(long, got)
      assert.equal(long, seen.server)
      assert.has_error(function() evtcp.connect("localhost", 1, { tls = { alpn = { string.rep("x", 256) } } }) end,
        "bad argument #3 to 'connect' (option 'tls.alpn': a protocol name is 1 to 255 bytes)")
      local many = {}
      for i = 1, 5 do many[i] = string.rep(tostring(i), 255) end
      assert.has_error(function() evtcp.connect("localhost", 1, { tls = { alpn = many } }) end,
        "bad argument #3 to 'connect' (option 'tls.alpn' is too long (1024 bytes in all, each name with its length byte))")
    end)

    it("fails the handshake with an error of kind tls naming ALPN when no protocol is common", function()
      local seen = {}
      local l = alpn_server({ "h2" }, seen)
      local c, err
      H.go(function() c, err = evtcp.dial("localhost", l.port, { tls = { ca = path("ca.pem"), alpn = { "spdy/3" } } }) end)
      H.run_until(function() return seen.server_error end, "the server's error")
      l:terminate()
      assert.is_nil(c)
      assert.equal("tls", err.kind)
      assert.matches("ALPN", err.message)
      assert.equal("tls", seen.server_error.kind)
      assert.matches("ALPN", seen.server_error.message)
    end)

    it("agrees with openssl s_server and s_client", function()
      local port, stop = s_server("-alpn h2,http/1.1")
      local info = fetch(port, { ca = path("ca.pem"), alpn = { "http/1.1" } })
      stop()
      assert.equal("http/1.1", info.alpn)
      local l = tls_server("server", function() return echo() end, { alpn = { "h2", "http/1.1" } })
      local text = s_client(l.port, "", "-alpn http/1.1,h2 -servername localhost -CAfile " .. path("ca.pem"))
      l:terminate()
      assert.matches("ALPN protocol: h2", text)
    end)

    it("rejects a malformed alpn option", function()
      assert.has_error(function() evtcp.connect("localhost", 1, { tls = { alpn = "h2" } }) end,
        "bad argument #3 to 'connect' (option 'tls.alpn' must be an array of protocol names)")
      assert.has_error(function() evtcp.connect("localhost", 1, { tls = { alpn = {} } }) end,
        "bad argument #3 to 'connect' (option 'tls.alpn' must name at least one protocol)")
      assert.has_error(function() evtcp.connect("localhost", 1, { tls = { alpn = { "" } } }) end,
        "bad argument #3 to 'connect' (option 'tls.alpn': a protocol name is 1 to 255 bytes)")
      assert.has_error(function()
        evtcp.listen(0, { tls = { cert = path("server.pem"), key = path("server.key"), alpn = { 2 } } })
      end, "bad argument #2 to 'listen' (option 'tls.alpn' must hold strings)")
    end)
  end)

  describe("certificates by SNI", function()
    local function sni_server()
      return tls_server("server", function() return echo() end, { sni = {
        ["alpha.example.test"] = { cert = path("alpha.pem"), key = path("alpha.key") },
        ["*.wild.example.test"] = { cert = read(path("wild.pem")), key = read(path("wild.key")) },
      } })
    end

    it("serves the certificate of the name the client asks for, wildcards as TLS matches them", function()
      local l = sni_server()
      local function subject(name, verify)
        local got
        H.go(function()
          local c, err = evtcp.dial("127.0.0.1", l.port, { tls = { ca = path("ca.pem"), serverName = name, verify = verify } })
          got = c and c.tls.peerCertificate.subject or err.message
          if c then c:close() end
        end)
        return got
      end
      assert.equal("/CN=alpha.example.test", subject("alpha.example.test"))
      assert.equal("/CN=alpha.example.test", subject("ALPHA.Example.Test"))
      assert.equal("/CN=*.wild.example.test", subject("x.wild.example.test"))
      assert.equal("/CN=localhost", subject("localhost"))                    -- the top-level certificate
      assert.equal("/CN=localhost", subject("a.b.wild.example.test", false)) -- a wildcard is one label
      assert.matches("hostname mismatch", subject("a.b.wild.example.test"))
      assert.equal("/CN=localhost", subject("wild.example.test", false))
      l:terminate()
    end)

    it("answers openssl s_client by its -servername", function()
      local l = sni_server()
      local text = s_client(l.port, "", "-servername alpha.example.test -verify_return_error -CAfile " .. path("ca.pem"))
      l:terminate()
      assert.matches("subject=CN ?= ?alpha%.example%.test", text)
      assert.matches("Verify return code: 0 %(ok%)", text)
    end)

    it("rejects a malformed sni option, and reports an unreadable certificate naming it", function()
      local function listen(sni)
        return evtcp.listen(0, { address = "127.0.0.1",
          tls = { cert = path("server.pem"), key = path("server.key"), sni = sni } })
      end
      assert.has_error(function() listen("x") end, "bad argument #2 to 'listen' (option 'tls.sni' must be a table of names)")
      assert.has_error(function() listen({ [1] = {} }) end,
        "bad argument #2 to 'listen' (option 'tls.sni': each key must be a host name)")
      assert.has_error(function() listen({ ["a.test"] = { cert = path("alpha.pem") } }) end,
        "bad argument #2 to 'listen' (option 'tls.sni[\"a.test\"]' needs cert and key strings)")
      assert.has_error(function() listen({ ["a.test"] = { key = path("alpha.key") } }) end,
        "bad argument #2 to 'listen' (option 'tls.sni[\"a.test\"]' needs cert and key strings)")
      local l, msg = listen({ ["a.test"] = { cert = dir .. "/missing.pem", key = path("alpha.key") } })
      assert.is_nil(l)
      assert.are.equal('tls.sni["a.test"]: tls.cert \'' .. dir .. "/missing.pem': No such file or directory", msg)
      collectgarbage()
    end)
  end)

  describe("session resumption", function()
    it("resumes a client's session with an evtcp server, told on both sides, for the same name only", function()
      local server_resumed = {}
      local l = tls_server("server", function()
        return { onConnection = function(_, c) server_resumed[#server_resumed + 1] = c.tls.resumed end,
                 onData = function(_, c, ev) c:send(ev.data) c:close() end }
      end)
      local first, answer = fetch(l.port, { ca = path("ca.pem") }, "hello")
      assert.equal("hello", answer)
      assert.is_false(first.resumed)
      local second = fetch(l.port, { ca = path("ca.pem") }, "again")
      assert.is_true(second.resumed, "the second connection to the same host and port resumes")
      -- another verified name (or other settings) never resumes that session
      local other = fetch(l.port, { ca = path("ca.pem"), serverName = "127.0.0.1" }, "x")
      assert.is_false(other.resumed)
      local unverified = fetch(l.port, { verify = false }, "y")
      assert.is_false(unverified.resumed)
      l:terminate()
      assert.same({ false, true, false, false }, server_resumed)
    end)

    for _, version in ipairs({ "-tls1_3", "-tls1_2", "-tls1_2 -no_ticket" }) do
      it("resumes with openssl s_server " .. version, function()
        local port, stop = s_server(version)
        local first, page = fetch(port, { ca = path("ca.pem") })
        local second = fetch(port, { ca = path("ca.pem") })
        stop()
        assert.matches("^HTTP/1%.0 200 ok", page)
        assert.equal(version:match("1_3") and "TLSv1.3" or "TLSv1.2", first.protocol)
        assert.is_false(first.resumed)
        assert.is_true(second.resumed)
      end)
    end
  end)
end)
