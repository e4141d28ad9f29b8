local evtcp = require("evtcp")
local H = require("helper")

local function check_error_object(e)
  assert.are.equal("number", math.type(e.errCode) and "number")
  assert.are.equal("string", type(e.message))
  assert.are.equal("string", type(e.componentSignature))
  assert.are.equal("string", type(e.kind))
end

describe("errors", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  describe("as events", function()
    it("a refused connection gives onError (kind 'refused') then onTerminate, no onConnection", function()
      local port = H.free_port()
      local closed_inside
      local rec = H.recorder({ onError = function(_, conn) closed_inside = conn.closed end })
      local conn = evtcp.connect("127.0.0.1", port, rec)
      H.run_until(rec.terminated, "the refusal")
      assert.are.same({ "error", "terminate" }, rec.log)
      local e = rec.errors[1]
      check_error_object(e)
      assert.are.equal("refused", e.kind)
      assert.are.equal(111, e.errCode)
      assert.are.equal("libevent", e.componentSignature)
      assert.is_true(closed_inside)
      assert.are.equal(1, #conn.errors)
      assert.are.equal(e, conn.errors[1])
    end)

    it("a name that does not resolve gives kind 'dns', without sending a query", function()
      for _, name in ipairs({ "no-such-host.invalid", "x.INVALID.", "invalid" }) do
        local rec = H.recorder()
        local conn = evtcp.connect(name, 80, rec)
        H.run_until(rec.terminated, "the DNS failure")
        assert.are.same({ "error", "terminate" }, rec.log)
        assert.are.equal("dns", rec.errors[1].kind)
        assert.are.equal("dns", rec.errors[1].componentSignature)
        assert.are.equal("dns", conn.errors[1].kind)
      end
    end)

    it("a reset by the peer gives kind 'reset'", function()
      local server = H.server(function()
        return { onData = function(_, conn) conn:reset() end }
      end)
      local rec = H.recorder({ onConnection = function(_, conn) conn:send("please reset me") end })
      evtcp.connect("127.0.0.1", server.port, rec)
      H.run_until(rec.terminated, "the reset")
      server:terminate()
      assert.are.same({ "connection", "error", "terminate" }, rec.log)
      assert.are.equal("reset", rec.errors[1].kind)
      assert.are.equal(104, rec.errors[1].errCode)
    end)

    it("a peer that vanishes mid-write is an error event, not SIGPIPE", function()
      local ok, out = H.lua_child([[
        local evtcp = require("evtcp")
        local l = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
          return { onData = function(_, c) c:reset() end }
        end }))
        local kind
        local big = string.rep("x", 1 << 20)
        local conn = evtcp.connect("127.0.0.1", l.port, {
          onConnection = function(_, c) c:send("go") end,
          onData = function() end,
          onError = function(_, c, e) kind = e.error.kind end,
        })
        local t0 = require("evtcp.core").now()
        while not conn.closed and require("evtcp.core").now() - t0 < 10 do
          conn:send(big)
          evtcp.step(0.01)
        end
        l:terminate()
        print(kind)
      ]])
      assert.is_true(ok, out)
      assert.are.equal("reset\n", out)
    end)
  end)

  describe("bad arguments raise errors naming the function and the argument", function()
    local function raises(pattern, f, ...)
      local ok, err = pcall(f, ...)
      assert.is_false(ok, "no error for " .. pattern)
      assert.matches(pattern, err)
    end

    it("for connect", function()
      raises("bad argument #1 to '[%w.]*connect' %(string expected, got number%)", evtcp.connect, 123, 80)
      raises("bad argument #1 to '[%w.]*connect'", evtcp.connect, "", 80)
      raises("bad argument #2 to '[%w.]*connect' %(number expected, got string%)", evtcp.connect, "h", "80")
      raises("bad argument #2 to '[%w.]*connect' %(port must be in 1..65535%)", evtcp.connect, "h", 0)
      raises("bad argument #2 to '[%w.]*connect' %(port must be in 1..65535%)", evtcp.connect, "h", 65536)
      raises("bad argument #2 to '[%w.]*connect' %(number has no integer representation%)", evtcp.connect, "h", 80.5)
      raises("bad argument #3 to '[%w.]*connect' %(table expected, got number%)", evtcp.connect, "h", 80, 5)
      raises("option 'noDelay' must be a boolean", evtcp.connect, "h", 80, { noDelay = "yes" })
      raises("option 'timeout' must be >= 0", evtcp.connect, "h", 80, { timeout = -1 })
      raises("option 'readTimeout' must be a number", evtcp.connect, "h", 80, { readTimeout = "x" })
      raises("option 'writeTimeout' must be >= 0", evtcp.connect, "h", 80, { writeTimeout = -0.5 })
      raises("option 'keepAlive'", evtcp.connect, "h", 80, { keepAlive = -5 })
      raises("option 'highWaterMark' must be an integer >= 1", evtcp.connect, "h", 80, { highWaterMark = 0 })
      raises("option 'highWaterMark'", evtcp.connect, "h", 80, { highWaterMark = "big" })
    end)

    it("for listen", function()
      raises("bad argument #1 to '[%w.]*listen' %(number expected, got string%)", evtcp.listen, "x")
      raises("bad argument #1 to '[%w.]*listen' %(port must be in 0..65535%)", evtcp.listen, -1)
      raises("bad argument #1 to '[%w.]*listen' %(port must be in 0..65535%)", evtcp.listen, 70000)
      raises("bad argument #2 to '[%w.]*listen' %(table expected, got number%)", evtcp.listen, 0, 5)
      raises("option 'backlog'", evtcp.listen, 0, { address = "127.0.0.1", backlog = 0 })
      raises("option 'maxConnections'", evtcp.listen, 0, { address = "127.0.0.1", maxConnections = "3" })
      raises("option 'address' must be a string", evtcp.listen, 0, { address = 5 })
    end)

    it("for methods called on something that is not a connection", function()
      local server = H.echo_server()
      local conn = evtcp.connect("127.0.0.1", server.port, {})
      for _, name in ipairs({ "send", "close", "shutdown", "reset", "pause", "resume", "setTimeouts" }) do
        -- called as a program would: conn.send({}) instead of conn:send()
        local call = load("local conn, arg = ... return conn." .. name .. "(arg)")
        raises("bad argument #1 to '" .. name .. "' %(TCPConnection expected, got table%)", call, conn, {})
        raises("bad argument #1 to .-TCPConnection expected, got no value", conn[name])
      end
      raises("timeout must be a number >= 0", conn.wait, conn, "x")
      raises("read timeout must be >= 0", conn.setTimeouts, conn, -1)
      conn:close()
      server:terminate()
    end)

    it("and a TCPEvent cannot be changed", function()
      local server = H.echo_server()
      local event
      local conn = evtcp.connect("127.0.0.1", server.port, {
        onConnection = function(_, c, ev) event = ev c:close() end })
      H.run_until(function() return conn.closed end, "close")
      server:terminate()
      raises("a TCPEvent is immutable", function() event.type = "data" end)
      raises("a TCPEvent is immutable", function() event.other = 1 end)
      assert.are.equal("connection", event.type)
      assert.are.equal("127.0.0.1", event.ip)
      assert.are.equal(server.port, event.port)
      assert.is_nil(event.data)
      assert.is_nil(event.error)
      assert.matches("TCPEvent%(connection%)", tostring(event))
    end)
  end)

  describe("binding failures return nil, message, errCode", function()
    it("when the port is in use", function()
      local a = H.server(function() return {} end)
      local b, msg, code = evtcp.listen(a.port, { address = "127.0.0.1" })
      assert.is_nil(b)
      assert.are.equal(98, code)
      assert.matches("in use", msg)
      a:terminate()
    end)

    it("when the address is not one of this machine's, or not an IP address", function()
      local l, msg, code = evtcp.listen(0, { address = "192.0.2.1" })
      assert.is_nil(l)
      assert.are.equal(99, code)
      assert.are.equal("string", type(msg))
      l, msg, code = evtcp.listen(0, { address = "not-an-ip" })
      assert.is_nil(l)
      assert.matches("not%-an%-ip", msg)
      assert.are.equal(99, code)
    end)
  end)

  describe("names with an embedded NUL byte", function()
    -- C reads a string up to its first NUL: "localhost\0.example.com" was
    -- resolved and connected as localhost, so a program that checked the
    -- name it was given (an allow-list of *.example.com) was bypassed
    local nul_host = "localhost\0.example.com"
    it("are an argument error of resolve, dial and connect", function()
      assert.has_error(function() evtcp.resolve(nul_host) end,
        "bad argument #1 to 'resolve' (name must not contain a NUL byte)")
      assert.has_error(function() evtcp.connect(nul_host, 80) end,
        "bad argument #1 to 'connect' (address must not contain a NUL byte)")
      assert.has_error(function() evtcp.dial(nul_host, 80) end,
        "bad argument #1 to 'dial' (address must not contain a NUL byte)")
      assert.has_error(function() evtcp.connect("unix:/tmp/a.sock\0.bak") end,
        "bad argument #1 to 'connect' (address must not contain a NUL byte)")
      assert.has_error(function() evtcp.connect("127.0.0.1", 80, { localAddress = "127.0.0.1\0x" }) end,
        "bad argument #3 to 'connect' (option 'localAddress' must not contain a NUL byte)")
      assert.has_error(function() evtcp.connect("127.0.0.1", 80, { tls = { serverName = nul_host } }) end,
        "bad argument #3 to 'connect' (option 'tls.serverName' must not contain a NUL byte)")
      assert.has_error(function() evtcp.connect("127.0.0.1", 80, { tls = { ca = "/etc/ssl\0/x.pem" } }) end,
        "bad argument #3 to 'connect' (option 'tls.ca' must not contain a NUL byte)")
    end)

    it("are an argument error of listen, and nothing is bound", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir " .. dir))
      assert.has_error(function() evtcp.listen("unix:" .. dir .. "/a.sock\0.bak") end,
        "bad argument #1 to 'listen' (path must not contain a NUL byte)")
      assert.has_error(function() evtcp.listen(0, { address = "127.0.0.1\0junk" }) end,
        "bad argument #2 to 'listen' (option 'address' must not contain a NUL byte)")
      local p = io.popen("ls -A " .. dir)
      local listing = p:read("a")
      p:close()
      os.execute("rm -rf " .. dir)
      assert.are.equal("", listing) -- a.sock was not made
    end)
  end)

  describe("errName", function()
    it("names each failure symbolically, by layer, and listen returns the error object too", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local port = l.port
      -- in use: nil, message, errno, and the object
      local none, msg, code, obj = evtcp.listen(port, { address = "127.0.0.1" })
      assert.is_nil(none)
      assert.are.equal(98, code)
      assert.are.equal(msg, obj.message)
      assert.are.same({ "io", 98, "EADDRINUSE" }, { obj.kind, obj.errCode, obj.errName })
      l:terminate()
      evtcp.run(1)
      local c, err
      H.go(function() c, err = evtcp.dial("127.0.0.1", port) end) -- nobody listens now
      assert.is_nil(c)
      assert.are.same({ "refused", "ECONNREFUSED" }, { err.kind, err.errName })
      local addrs
      H.go(function() addrs, err = evtcp.resolve("nowhere.invalid") end)
      assert.is_nil(addrs)
      assert.are.same({ "dns", "EAI_NONAME" }, { err.kind, err.errName })
      assert.are.equal("EVTCP_IO", require("evtcp.core").newError("io", "evtcp", "x").errName)
      -- a TLS file that cannot be read: the system's errno, naming the file
      none, msg, code, obj = evtcp.listen(0, { tls = { cert = "/nonexistent/cert.pem", key = "/nonexistent/key.pem" } })
      assert.is_nil(none)
      assert.are.same({ "tls", 2, "ENOENT", "evtcp", msg }, { obj.kind, code, obj.errName, obj.componentSignature, obj.message })
      assert.matches("'/nonexistent/cert.pem'", msg)
      -- TLS settings OpenSSL refuses: errno EINVAL, OpenSSL's reason in the object
      none, msg, code, obj = evtcp.listen(0, { tls = { cert = "/etc/passwd", key = "/etc/passwd" } })
      assert.is_nil(none)
      assert.are.equal(msg, obj.message)
      assert.are.equal(22, code)
      assert.are.equal("tls", obj.kind)
      assert.are.equal("openssl", obj.componentSignature)
      assert.matches("^[A-Z_]+$", obj.errName)
    end)
  end)
end)
