-- conn:startTLS: a plain connection upgraded in place, both sides, both
-- styles; the refusal of plaintext buffered before the handshake (the
-- STARTTLS injection attacks); real peers: openssl s_client -starttls smtp
-- and imap, and a PostgreSQL server's SSLRequest.
local evtcp = require("evtcp")
local H = require("helper")

local tls, dir -- a self-signed certificate for localhost

local function server_tls() return { cert = tls.cert, key = tls.key } end
local function client_tls() return { ca = tls.cert } end

describe("startTLS", function()
  setup(function() tls, dir = H.self_signed() end)
  teardown(function() os.execute("rm -rf " .. dir) end)
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  describe("in coroutines", function()
    it("upgrades both sides: plaintext before, TLS after, verified by the name dialled", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local got = {}
      evtcp.spawn(function()
        local s = l:accept(10)
        s:send("220 ready\r\n")
        got.request = s:receive("*l")
        s:send("220 go ahead\r\n")
        got.before = s.tls
        got.server = { s:startTLS(server_tls()) }
        got.server_protocol = s.tls.protocol
        got.secret = s:receive("*l")
        s:send("250 ok over TLS\r\n")
        s:close()
      end)
      H.go(function()
        local c = assert(evtcp.dial("localhost", l.port))
        assert.are.equal("220 ready", c:receive("*l"))
        c:send("STARTTLS\r\n")
        assert.are.equal("220 go ahead", c:receive("*l"))
        assert.is_nil(c.tls)
        assert.are.same({ true }, { c:startTLS(client_tls()) })
        assert.are.equal("TLSv1.3", c.tls.protocol)
        assert.matches("CN=localhost", c.tls.peerCertificate.subject)
        c:send("SECRET\r\n")
        assert.are.equal("250 ok over TLS", c:receive("*l"))
        assert.is_nil(c:receive("*l"))
        c:close()
      end)
      l:terminate()
      assert.are.equal("STARTTLS", got.request)
      assert.is_nil(got.before)
      assert.are.same({ true }, got.server)
      assert.are.equal("TLSv1.3", got.server_protocol)
      assert.are.equal("SECRET", got.secret)
    end)

    it("what was queued before the call goes in the clear, first, however much", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local clear = H.bytes(4 << 20, 3)
      local ok
      evtcp.spawn(function()
        local s = l:accept(10)
        s:send(clear) -- most of it still queued when startTLS is called
        ok = s:startTLS(server_tls())
        s:send("after")
        s:close()
      end)
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        assert.are.equal(clear, c:receive(#clear))
        assert.is_true(c:startTLS({ ca = tls.cert, serverName = "localhost" }))
        assert.are.equal("after", c:receive("a"))
        c:close()
      end, 30)
      l:terminate()
      assert.is_true(ok)
    end)

    it("a failed handshake gives nil and the error, kind tls, and closes the connection", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local server_result
      evtcp.spawn(function()
        local s = l:accept(10)
        server_result = { s:startTLS(server_tls()) }
      end)
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        local ok, err = c:startTLS({ serverName = "localhost" }) -- the system's CAs do not know ours
        assert.is_nil(ok)
        assert.are.equal("tls", err.kind)
        assert.matches("certificate verify failed", err.message)
        assert.is_true(c.closed)
      end)
      H.run_until(function() return server_result end, "the server's result")
      l:terminate()
      assert.is_nil(server_result[1])
      assert.are.equal("tls", server_result[2].kind)
    end)
  end)

  describe("in callbacks", function()
    it("returns true at once; onUpgrade follows; sends made meanwhile go encrypted, after the handshake", function()
      local log, server_log = {}, {}
      local l = H.server(function()
        return {
          framing = "line",
          onConnection = function(_, s) s:send("220 ready\r\n") end,
          onData = function(_, s, ev)
            server_log[#server_log + 1] = ev.data
            if ev.data == "STARTTLS" then
              s:send("220 go ahead\r\n")
              server_log[#server_log + 1] = tostring(s:startTLS(server_tls()))
              server_log[#server_log + 1] = tostring(s.tls)
            elseif ev.data == "QUIT" then
              s:send("221 bye " .. s.tls.protocol .. "\r\n")
              s:close()
            end
          end,
          onUpgrade = function(_, s, ev) server_log[#server_log + 1] = ev.type .. " " .. s.tls.protocol end,
        }
      end)
      local rec = H.recorder({
        framing = "line",
        onData = function(_, c, ev)
          log[#log + 1] = ev.data
          if ev.data == "220 ready" then
            c:send("STARTTLS\r\n")
          elseif ev.data == "220 go ahead" then
            log[#log + 1] = tostring(c:startTLS(client_tls()))
            log[#log + 1] = tostring(c.tls)
            c:send("QUIT\r\n") -- queued until the handshake is done
          end
        end,
        onUpgrade = function(_, c, ev) log[#log + 1] = ev.type .. " " .. c.tls.protocol end,
      })
      evtcp.connect("localhost", l.port, rec)
      H.run_until(rec.terminated, "the session")
      l:terminate()
      assert.are.same({ "220 ready", "220 go ahead", "true", "nil", "upgrade TLSv1.3", "221 bye TLSv1.3" }, log)
      assert.are.same({ "STARTTLS", "true", "nil", "upgrade TLSv1.3", "QUIT" }, server_log)
      assert.are.same({}, rec.errors)
    end)

    it("a handshake failure is onError of kind tls, then onTerminate", function()
      local l = H.server(function() -- answers the ClientHello by closing
        return { onData = function(_, s) s:close() end, onConnection = function(_, s) s:send("go\n") end }
      end)
      local rec = H.recorder({
        onData = function(_, c) assert.is_true(c:startTLS(client_tls())) end, -- nobody answers in TLS
        onUpgrade = function() error("no upgrade") end,
      })
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(function() return #rec.errors > 0 end, "the failure")
      l:terminate()
      H.run_until(rec.terminated, "the end")
      assert.are.equal("tls", rec.errors[1].kind)
      assert.are.same({ "connection", "data", "error", "terminate" }, rec.log)
      assert.matches("closed the connection during the TLS handshake", rec.errors[1].message)
    end)
  end)

  describe("ends after the upgrade, while the other side still sends", function()
    for _, how in ipairs({ "close", "reset", "shutdown" }) do
      it(how .. "() over the upgraded connection ends both sides, the server's send sees it", function()
        local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
        local server = {}
        evtcp.spawn(function()
          local s = l:accept(10)
          assert(s:receive("l", 5) == "STARTTLS")
          s:send("GO\n")
          assert(s:startTLS(server_tls()))
          local chunk = ("x"):rep(16384)
          for _ = 1, 2000 do -- 32 MiB at most: the client ends long before
            local ok, err = s:send(chunk)
            if not ok then server.send_err = err break end
          end
          s:wait(10)
          server.closed, server.errors = s.closed, s.errors
        end)
        local client
        H.go(function()
          local c = assert(evtcp.dial("127.0.0.1", l.port))
          c:send("STARTTLS\n")
          assert.are.equal("GO", c:receive("l", 5))
          assert.is_true(c:startTLS({ ca = tls.cert, serverName = "localhost" }))
          assert.are.equal(1000, #c:receive(1000, 5)) -- the server is sending
          c[how](c)
          if how == "shutdown" then -- our side only: the server's bytes still come, over TLS
            assert.are.equal(50000, #c:receive(50000, 5))
            c:close()
          end
          c:wait(10)
          client = { closed = c.closed, errors = c.errors }
        end, 30)
        H.run_until(function() return server.closed end, "the server's end", 20)
        l:terminate()
        assert.is_true(client.closed)
        assert.are.same({}, client.errors) -- our own close, shutdown or reset is no error of ours
        assert.are.equal("closed", server.send_err)
        if how == "reset" then
          assert.are.equal("reset", server.errors[1] and server.errors[1].kind)
        end
      end)
    end
  end)

  describe("refuses plaintext buffered before the handshake (STARTTLS injection)", function()
    it("on the server: a command slipped in after STARTTLS, in the same write", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local result
      evtcp.spawn(function()
        local s = l:accept(10)
        assert.are.equal("STARTTLS", s:receive("*l"))
        s:send("220 go ahead\r\n")
        result = { s:startTLS(server_tls()) }
      end)
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        c:send("STARTTLS\r\nRCPT TO:<attacker@example.test>\r\n") -- one write: CVE-2011-0411
        c:receive("*l")
        c:wait(5)
      end)
      l:terminate()
      assert.is_nil(result[1])
      assert.are.equal("tls", result[2].kind)
      assert.matches("STARTTLS injection", result[2].message)
      assert.matches("^startTLS refused: 33 bytes came in the clear", result[2].message)
    end)

    it("on the client: bytes after the server's go-ahead, in the same write (CVE-2021-23222)", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      evtcp.spawn(function()
        local s = l:accept(10)
        s:send("220 go ahead\r\nFAKE 250 reply\r\n")
        s:receive()
        s:close()
      end)
      local log = {}
      local rec = H.recorder({
        framing = "line",
        onData = function(_, c, ev)
          log[#log + 1] = ev.data
          if ev.data == "220 go ahead" then log[#log + 1] = c:startTLS(client_tls()) end
        end,
      })
      evtcp.connect("localhost", l.port, rec)
      H.run_until(rec.terminated, "the end")
      l:terminate()
      assert.are.same({ "220 go ahead", true }, log) -- the fake reply never arrives, not even as plaintext
      assert.are.equal("tls", rec.errors[1].kind)
      assert.matches("STARTTLS injection", rec.errors[1].message)
    end)

    it("with nothing buffered the same exchange upgrades (the specs above can fail)", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local result
      evtcp.spawn(function()
        local s = l:accept(10)
        assert.are.equal("STARTTLS", s:receive("*l"))
        s:send("220 go ahead\r\n")
        result = { s:startTLS(server_tls()) }
        s:close()
      end)
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        c:send("STARTTLS\r\n")
        c:receive("*l")
        assert.is_true(c:startTLS({ ca = tls.cert, serverName = "localhost" }))
        c:close()
      end)
      H.run_until(function() return result end, "the server's result")
      l:terminate()
      assert.are.same({ true }, result)
    end)
  end)

  describe("misuse raises", function()
    it("on a TLS connection, a closed one, one still connecting; bad options name startTLS", function()
      local l = H.server(function() return {} end, { tls = server_tls() })
      local plain = H.server(function() return {} end)
      H.go(function()
        local c = assert(evtcp.dial("localhost", l.port, { tls = client_tls() }))
        assert.has_error(function() c:startTLS(client_tls()) end, "evtcp: startTLS on a connection that is TLS already")
        c:close()
        local p = assert(evtcp.dial("127.0.0.1", plain.port))
        assert.has_error(function() p:startTLS({ minversion = "1.3" }) end,
          "bad argument #1 to 'startTLS' (option 'tls' has no key 'minversion' on a client)")
        assert.has_error(function() p:startTLS({ sni = {} }) end,
          "bad argument #1 to 'startTLS' (option 'tls' has no key 'sni' on a client)")
        assert.is_nil(p.tls) -- nothing changed
        p:shutdown()
        assert.has_error(function() p:startTLS() end, "evtcp: startTLS after shutdown() or close()")
        p:close()
        assert.has_error(function() p:startTLS() end, "evtcp: startTLS on a closed connection")
      end)
      local c = evtcp.connect("127.0.0.1", plain.port, {})
      assert.has_error(function() c:startTLS() end,
        "evtcp: startTLS on a connection that is still connecting (wait until it is open)")
      c:close()
      l:terminate()
      plain:terminate()
    end)

    it("a server side needs cert and key; a missing file is the upgrade's failure, naming it", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local results = {}
      evtcp.spawn(function()
        local s = l:accept(10)
        results.raised = select(2, pcall(s.startTLS, s, { ca = tls.cert }))
        results.missing = { s:startTLS({ cert = dir .. "/none.pem", key = tls.key }) }
        results.closed = s.closed
      end)
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        c:wait(5)
      end)
      l:terminate()
      assert.matches("option 'tls' of a listener needs cert and key", results.raised)
      assert.is_nil(results.missing[1])
      assert.are.equal("tls." .. "cert '" .. dir .. "/none.pem': No such file or directory", results.missing[2].message)
      assert.is_true(results.closed)
    end)
  end)

  describe("against real peers", function()
    -- A small SMTP server (RFC 3207) that upgrades, in a coroutine per client.
    local function smtp_server()
      return H.server(function()
        return {
          framing = "line",
          onConnection = function(_, s) s:send("220 evtcp ESMTP\r\n") end,
          onData = function(_, s, ev)
            local line = ev.data:gsub("\r$", "")
            if line:match("^EHLO") then
              s:send("250-evtcp greets you\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
            elseif line == "STARTTLS" then
              s:send("220 2.0.0 Ready to start TLS\r\n")
              s:startTLS(server_tls())
            elseif line == "QUIT" then
              s:send("221 bye from " .. (s.tls and s.tls.protocol or "plaintext") .. "\r\n")
              s:close()
            end
          end,
        }
      end)
    end

    it("openssl s_client -starttls smtp upgrades, verifies, and talks over TLS", function()
      local l = smtp_server()
      local text, status = H.peer_run(("printf 'QUIT\\r\\n' | openssl s_client -quiet -verify_return_error -starttls smtp "
        .. "-connect 127.0.0.1:%d -servername localhost -verify_hostname localhost -CAfile %s"):format(l.port, tls.cert))
      l:terminate()
      assert.are.equal(0, status, text)
      assert.matches("221 bye from TLSv1%.3", text)
    end)

    it("examples/smtp_starttls.lua upgrades, verifies the name and says EHLO again over TLS", function()
      local l = smtp_server()
      local text, status = H.peer_run(("lua5.4 examples/smtp_starttls.lua %d 127.0.0.1 %s localhost"):format(l.port, tls.cert),
        30, true)
      l:terminate()
      assert.are.equal(0, status, text)
      assert.matches("C: STARTTLS\nS: 220 2.0.0 Ready to start TLS\n%-%- TLS: TLSv1%.3", text)
      assert.matches("TLSv1%.3.*C: EHLO client.example\nS: 250%-evtcp greets you.*S: 221 bye from TLSv1%.3", text)
    end)

    it("examples/smtp_starttls.lua refuses a certificate for another name", function()
      local l = smtp_server()
      local cmd = ("lua5.4 examples/smtp_starttls.lua %d 127.0.0.1 %s other.example"):format(l.port, tls.cert)
      local text, status = H.peer_run(cmd, 30, true)
      l:terminate()
      assert.are_not.equal(0, status, text)
      assert.matches("C: STARTTLS", text)
      assert.not_matches("bye from TLS", text)
    end)

    describe("a PostgreSQL server (ssl = on, clients only over TLS)", function()
      local pg
      setup(function() pg = H.postgres(tls) end)
      teardown(function() if pg then pg.stop() end end)

      -- One backend message: its type byte and body.
      local function message(c)
        local kind = assert(c:receive(1, 10))
        local len = string.unpack(">i4", assert(c:receive(4, 10)))
        return kind, assert(c:receive(len - 4, 10))
      end
      local params = "user\0postgres\0database\0postgres\0\0"
      local startup = string.pack(">i4i4", 8 + #params, 196608) .. params

      it("SSLRequest, 'S', startTLS, then the authentication request over TLS", function()
        H.go(function()
          local c = assert(evtcp.dial("127.0.0.1", pg.port))
          c:send(string.pack(">i4i4", 8, 80877103))
          assert.are.equal("S", c:receive(1, 10))
          assert.is_true(c:startTLS({ ca = tls.cert, serverName = "localhost" }))
          assert.matches("^TLSv1%.[23]$", c.tls.protocol)
          c:send(startup)
          local kind, body = message(c)
          assert.are.equal("R", kind)
          assert.are.equal(10, string.unpack(">i4", body)) -- SASL
          assert.matches("SCRAM%-SHA%-256", body)
          c:close()
        end, 20)
      end)

      it("without TLS the same startup is rejected (the spec above can fail)", function()
        H.go(function()
          local c = assert(evtcp.dial("127.0.0.1", pg.port))
          c:send(startup)
          local kind, body = message(c)
          assert.are.equal("E", kind)
          assert.matches("no encryption", body)
          c:close()
        end, 20)
      end)

      it("examples/pg_ssl.lua does the handshake a user copies", function()
        local text, status = H.peer_run(("lua5.4 examples/pg_ssl.lua %d 127.0.0.1 %s"):format(pg.port, tls.cert), 30, true)
        assert.are.equal(0, status, text)
        assert.matches("tls\tTLSv1%.3", text)
        assert.matches("authentication request\t10\tSCRAM%-SHA%-256", text)
      end)
    end)

    it("openssl s_client -starttls imap", function()
      local l = H.server(function()
        return {
          framing = "line",
          onConnection = function(_, s) s:send("* OK [CAPABILITY IMAP4rev1 STARTTLS] evtcp ready\r\n") end,
          onData = function(_, s, ev)
            local tag, cmd = ev.data:gsub("\r$", ""):match("^(%S+) (%u+)")
            if cmd == "CAPABILITY" then
              s:send("* CAPABILITY IMAP4rev1 STARTTLS\r\n" .. tag .. " OK done\r\n")
            elseif cmd == "STARTTLS" then
              s:send(tag .. " OK Begin TLS negotiation now\r\n")
              s:startTLS(server_tls())
            elseif cmd == "LOGOUT" then
              s:send("* BYE over " .. (s.tls and s.tls.protocol or "plaintext") .. "\r\n" .. tag .. " OK\r\n")
              s:close()
            end
          end,
        }
      end)
      local text, status = H.peer_run(("printf 'a LOGOUT\\r\\n' | openssl s_client -quiet -verify_return_error -starttls imap "
        .. "-connect 127.0.0.1:%d -servername localhost -verify_hostname localhost -CAfile %s"):format(l.port, tls.cert))
      l:terminate()
      assert.are.equal(0, status, text)
      assert.matches("%* BYE over TLSv1%.3", text)
    end)
  end)
end)
