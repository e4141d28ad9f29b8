local evtcp = require("evtcp")
local H = require("helper")

describe("TCPConnection", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  describe("connecting", function()
    it("reaches a listener by IPv4 literal, with the event order of section 4", function()
      local server, conns = H.echo_server()
      local rec = H.recorder({ onConnection = function(_, conn) conn:send("ping") end,
                               onData = function(_, conn, ev) if ev.data:find("g") then conn:close() end end })
      local conn = evtcp.connect("127.0.0.1", server.port, rec)
      H.run_until(rec.terminated, "the client to terminate")
      H.run_until(function() return conns[1] and conns[1].terminated() end, "the server side to terminate")
      server:terminate()
      assert.are.equal("ping", rec.data())
      assert.are.equal("connection", rec.log[1])
      assert.are.same({ "close", "terminate" }, { rec.log[#rec.log - 1], rec.log[#rec.log] })
      assert.are.equal(1, rec.count.onConnection)
      assert.is_nil(rec.count.onError)
      assert.is_true(conn.closed)
      local srv = conns[1]
      assert.are.same({ "connection", "data", "close", "terminate" }, srv.log)
    end)

    it("resolves localhost through /etc/hosts", function()
      local server = H.echo_server()
      local rec = H.recorder({ onConnection = function(_, conn) conn:close() end })
      local conn = evtcp.TCPConnection.new("localhost", server.port, rec)
      H.run_until(rec.terminated, "the connection to end")
      server:terminate()
      assert.are.same({ "connection", "close", "terminate" }, rec.log)
      assert.are.equal(server.port, conn.remotePort)
      assert.are.equal("127.0.0.1", conn.remoteAddress)
    end)

    it("reaches an IPv6 listener on ::1, written bare or in brackets", function()
      if not H.has_ipv6() then pending("no IPv6 loopback on this machine") return end
      local server = H.echo_server({ address = "::1" })
      for _, host in ipairs({ "::1", "[::1]" }) do
        local rec = H.recorder({ onConnection = function(_, conn) conn:send("v6") end,
                                 onData = function(_, conn) conn:close() end })
        local conn = evtcp.connect(host, server.port, rec)
        H.run_until(rec.terminated, "the IPv6 connection to end")
        assert.are.equal("v6", rec.data())
        assert.are.equal("::1", conn.remoteAddress)
        assert.are.equal("::1", conn.localAddress)
      end
      server:terminate()
    end)

    it("tries every address a name resolves to until one connects, and reports the last failure", function()
      -- a hosts file of our own, bound over /etc/hosts in a private mount
      -- namespace of the child only (the machine's file is not touched)
      if not os.execute(H.peer .. "unshare -m true 2>/dev/null") then
        pending("needs unshare -m (root) to give the child its own /etc/hosts") return
      end
      local hosts = os.tmpname()
      local f = assert(io.open(hosts, "w"))
      f:write("127.0.0.2 several.test\n::1 several.test\n127.0.0.1 several.test\n")
      f:write("127.0.0.3 none.test\n127.0.0.2 none.test\n")
      f:close()
      local script = os.tmpname()
      f = assert(io.open(script, "w"))
      f:write([[
        local evtcp = require("evtcp")
        local l = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
          return { onConnection = function(_, c) c:close() end } end }))
        local out = {}
        for _, name in ipairs({ "several.test", "none.test" }) do
          local c = evtcp.connect(name, l.port, {
            onConnection = function(_, c) out[#out + 1] = name .. " connected to " .. c.remoteAddress end,
            onError = function(_, _, ev) out[#out + 1] = name .. " " .. ev.error.kind end,
          })
          c:wait(10)
        end
        l:terminate()
        print(table.concat(out, "\n"))
      ]])
      f:close()
      local preload = os.getenv("LD_PRELOAD") or ""
      local p = io.popen(("%sunshare -m sh -c 'mount --bind %s /etc/hosts && LD_PRELOAD=\"%s\" exec timeout 60 lua5.4 %s' 2>&1")
        :format(H.peer, hosts, preload, script))
      local out = p:read("a")
      local ok = p:close()
      os.remove(hosts)
      os.remove(script)
      assert.is_true(ok, out)
      assert.are.equal("several.test connected to 127.0.0.1\nnone.test refused\n", out)
    end)

    it("sends what was queued before the connection was up, in order", function()
      local server = H.echo_server()
      local rec
      rec = H.recorder({ onData = function(_, conn)
        if rec.data():sub(-3) == "end" then conn:close() end
      end })
      local conn = evtcp.connect("localhost", server.port, rec)
      assert.is_true(conn:send("one ", "two ", 3, " ", 4.5, ""))
      assert.is_true(conn:send(""))
      assert.is_true(conn:send(" end"))
      assert.is_true(conn.bufferedAmount > 0)
      H.run_until(rec.terminated, "the echo")
      server:terminate()
      assert.are.equal("one two 3 4.5 end", rec.data())
    end)

    it("close() before the connection is established aborts it: onShutdown, onTerminate, no onConnection", function()
      local server = H.echo_server()
      local rec = H.recorder()
      local conn = evtcp.connect("localhost", server.port, rec)
      conn:close()
      conn:close()
      H.run_until(rec.terminated, "the aborted connection to end")
      server:terminate()
      assert.are.same({ "close", "terminate" }, rec.log)
      assert.is_true(conn.closed)
    end)
  end)

  describe("data", function()
    local function transfer(size, both_ways)
      local payload = H.bytes(size, size)
      local server_got = {}
      local server = H.server(function()
        return {
          onData = function(_, conn, ev)
            server_got[#server_got + 1] = ev.data
            if both_ways then conn:send(ev.data) end
          end,
          onShutdown = function() end,
        }
      end)
      local rec = H.recorder({ onConnection = function(_, conn)
        -- in pieces of varying size, so packets and events do not line up
        local pos, step = 1, 1
        while pos <= #payload do
          conn:send(payload:sub(pos, pos + step - 1))
          pos = pos + step
          step = step * 3 % 70001 + 1
        end
        if not both_ways then conn:close() end
      end })
      local conn = evtcp.connect("127.0.0.1", server.port, rec)
      if both_ways then
        H.run_until(function() return #rec.data() >= size end, "the echo of " .. size .. " bytes", 60)
        conn:close()
      end
      H.run_until(rec.terminated, "the transfer to end", 60)
      H.run_until(function() return #table.concat(server_got) >= size end, "the server to get everything", 60)
      server:terminate()
      assert.is_true(table.concat(server_got) == payload, "bytes differ at the server")
      if both_ways then assert.is_true(rec.data() == payload, "bytes differ on the way back") end
      assert.is_nil(rec.count.onError)
    end

    it("carries 4 MiB to the server byte for byte", function()
      transfer(4 * 1024 * 1024, false)
    end)

    it("carries 4 MiB both ways byte for byte", function()
      transfer(4 * 1024 * 1024, true)
    end)

    it("loses nothing that arrived with the peer's FIN: the echo of a shut-down client is whole", function()
      local server = H.echo_server()
      local payload = H.bytes(300000, 3)
      local rec = H.recorder({ onConnection = function(_, conn)
        conn:send(payload)
        conn:shutdown()
      end })
      local conn = evtcp.connect("127.0.0.1", server.port, rec)
      H.run_until(rec.terminated, "the echo to end")
      server:terminate()
      assert.is_true(rec.data() == payload)
      assert.are.same({ "close", "terminate" }, { rec.log[#rec.log - 1], rec.log[#rec.log] })
      assert.is_true(conn.closed)
    end)

    it("shutdown() is a half-close: an evtcp peer's answer, flushed after our FIN, arrives whole", function()
      local tail = H.bytes(2000000, 9)
      local server = H.server(function()
        return {
          onData = function(_, conn, ev)
            -- our FIN is on its way or in: the answer is flushed after it
            if ev.data:find("request", 1, true) then conn:send(tail) end
          end,
        }
      end)
      local rec = H.recorder({ onConnection = function(_, conn)
        conn:send("request")
        conn:shutdown()
        conn:shutdown()
        assert.are.same({ nil, "closed" }, { conn:send("more") })
      end })
      local conn = evtcp.connect("127.0.0.1", server.port, rec)
      H.run_until(rec.terminated, "the half-closed exchange to end")
      server:terminate()
      assert.is_true(rec.data() == tail)
      assert.are.same({ "close", "terminate" }, { rec.log[#rec.log - 1], rec.log[#rec.log] })
      assert.is_true(conn.closed)
    end)

    it("shutdown() is a half-close: socat reads to our FIN, then sends, and we read it all", function()
      local tail = H.bytes(500000, 11)
      local file = os.tmpname()
      local f = assert(io.open(file, "wb")); f:write(tail); f:close()
      local port = H.free_port()
      local socat = io.popen((H.peer .. "timeout 20 socat TCP4-LISTEN:%d,bind=127.0.0.1,reuseaddr " ..
        "SYSTEM:'cat >/dev/null; cat %s' 2>&1"):format(port, file), "r")
      local rec, conn
      local deadline = H.now() + 10
      repeat -- socat needs a moment to listen
        rec = H.recorder({ onConnection = function(_, c)
          c:send("anything the peer must read to the end")
          c:shutdown()
        end })
        conn = evtcp.connect("127.0.0.1", port, rec)
        H.run_until(function() return rec.count.onConnection or rec.terminated() end, "socat")
        if not rec.count.onConnection then evtcp.sleep(0.05) end
      until rec.count.onConnection or H.now() > deadline
      H.run_until(rec.terminated, "socat's answer", 20)
      socat:close()
      os.remove(file)
      assert.is_true(rec.data() == tail, "got " .. #rec.data() .. " bytes")
      assert.are.same({ "connection", "close", "terminate" },
        { rec.log[1], rec.log[#rec.log - 1], rec.log[#rec.log] })
      assert.is_true(conn.closed)
    end)

    it("send() returns nil, 'closed' once closed, and checks its arguments", function()
      local server = H.echo_server()
      local rec = H.recorder()
      local conn = evtcp.connect("127.0.0.1", server.port, rec)
      assert.has_error(function() conn:send({}) end, "bad argument #1 to 'send' (string expected, got table)")
      assert.has_error(function() conn:send("a", nil) end)
      conn:close()
      local ok, err = conn:send("x")
      assert.is_nil(ok)
      assert.are.equal("closed", err)
      H.run_until(rec.terminated, "close")
      server:terminate()
      ok, err = conn:send("x")
      assert.is_nil(ok)
      assert.are.equal("closed", err)
    end)
  end)

  describe("properties", function()
    it("has the properties of section 2, read-only except handler, and user fields", function()
      local server = H.echo_server()
      local rec = H.recorder({ onConnection = function(_, conn) conn:close() end })
      local conn = evtcp.connect("127.0.0.1", server.port, { noDelay = true })
      assert.is_false(conn.closed)
      assert.is_true(conn.noDelay)
      assert.are.equal(0, conn.bufferedAmount)
      assert.are.same({}, conn.errors)
      assert.are.equal(conn.errors, conn.errors)
      assert.is_nil(conn.tls)
      conn.handler = rec
      assert.are.equal(rec, conn.handler)
      assert.matches("noDelay must be a boolean", select(2, pcall(function() conn.noDelay = 1 end)))
      assert.matches("keepAlive must be", select(2, pcall(function() conn.keepAlive = "x" end)))
      for _, name in ipairs({ "closed", "errors", "remoteAddress", "remotePort",
                              "localAddress", "localPort", "bufferedAmount", "tls", "send", "close" }) do
        local ok, err = pcall(function() conn[name] = 1 end)
        assert.is_false(ok, name)
        assert.matches("read%-only", err)
      end
      conn.myField = "mine"
      conn[1] = "one"
      assert.are.equal("mine", conn.myField)
      assert.are.equal("one", conn[1])
      assert.is_nil(conn.other)
      H.run_until(rec.terminated, "the connection to end")
      server:terminate()
      assert.are.equal(server.port, conn.remotePort)
      assert.are.equal("127.0.0.1", conn.localAddress)
      assert.is_true(conn.localPort > 0)
      assert.matches("TCPConnection", tostring(conn))
    end)

    it("looks callbacks up at every event, so a callback may be swapped while running", function()
      local server = H.echo_server()
      local seen = {}
      local handler = {}
      function handler:onConnection(conn) conn:send("a") end
      function handler:onData(conn, ev)
        seen[#seen + 1] = "first:" .. ev.data
        self.onData = function(_, c, e) seen[#seen + 1] = "second:" .. e.data; c:close() end
        conn:send("b")
      end
      local conn = evtcp.connect("127.0.0.1", server.port, handler)
      H.run_until(function() return conn.closed end, "the swap")
      server:terminate()
      assert.are.same({ "first:a", "second:b" }, seen)
    end)

    it("calls callbacks as methods of a class instance (inherited through __index)", function()
      -- the seed's 4D class, in Lua
      local Client = {}
      Client.__index = Client
      function Client.new(port) return setmetatable({ port = port, info = {} }, Client) end
      function Client:connect() self.connection = evtcp.TCPConnection.new("127.0.0.1", self.port, self) end
      function Client:getInfo() self.connection:send("Information") end
      function Client:disconnect() self.connection:shutdown() end
      function Client:onConnection(conn, ev) self.info[#self.info + 1] = "established " .. ev.type end
      function Client:onData(conn, ev) self.info[#self.info + 1] = "data " .. ev.data end
      function Client:onShutdown() self.info[#self.info + 1] = "closed" end
      function Client:onError() self.info[#self.info + 1] = "error" end
      function Client:onTerminate() self.info[#self.info + 1] = "terminated" end
      local server = H.server(function()
        return { onData = function(_, conn, ev) conn:send(ev.data) conn:close() end }
      end)
      local client = Client.new(server.port)
      client:connect()
      client:getInfo()
      client:disconnect()
      H.run_until(function() return client.connection.closed end, "the class client")
      server:terminate()
      H.run(5)
      assert.are.same({ "established connection", "data Information", "closed", "terminated" }, client.info)
    end)

    it("replacing the handler replaces the callbacks", function()
      local server = H.echo_server()
      local first, second = H.recorder(), H.recorder({ onData = function(_, conn) conn:close() end })
      local conn = evtcp.connect("127.0.0.1", server.port, first)
      conn:send("x")
      H.run_until(function() return first.count.onConnection == 1 end, "connection")
      conn.handler = second
      H.run_until(second.terminated, "the second handler")
      server:terminate()
      assert.are.same({ "connection" }, first.log)
      assert.are.same({ "data", "close", "terminate" }, second.log)
      assert.has_error(function() conn.handler = 5 end)
    end)
  end)

  describe("wait()", function()
    it("drives the loop until the connection is closed, and honours its timeout", function()
      local server = H.echo_server()
      local conn = evtcp.connect("127.0.0.1", server.port, {
        onData = function(_, c) c:close() end })
      assert.is_false(conn:wait(0.05))
      conn:send("bye")
      assert.is_true(conn:wait(5))
      server:terminate()
      assert.has_error(function() conn:wait(-1) end)
    end)
  end)

  describe("closing from inside every callback", function()
    for _, how in ipairs({ "close", "reset" }) do
      for _, where in ipairs({ "onConnection", "onData", "onShutdown", "onTerminate" }) do
        it(how .. "() inside " .. where .. " keeps the order and ends once", function()
          local server = H.echo_server()
          local function end_it(_, conn)
            conn[how](conn)
            conn[how](conn)
            collectgarbage()
          end
          local extra = {}
          if where == "onConnection" then
            extra.onConnection = end_it
          else
            extra.onConnection = function(_, conn) conn:send("hi") end
            extra.onData = where == "onData" and end_it or function(_, conn) conn:close() end
            if where ~= "onData" then extra[where] = end_it end
          end
          local rec = H.recorder(extra)
          local conn = evtcp.connect("127.0.0.1", server.port, rec)
          H.run_until(rec.terminated, "the end")
          server:terminate()
          H.run(5)
          assert.are.equal(1, rec.count.onTerminate)
          assert.are.equal(1, rec.count.onShutdown)
          assert.is_nil(rec.count.onError)
          assert.are.equal("connection", rec.log[1])
          assert.are.same({ "close", "terminate" }, { rec.log[#rec.log - 1], rec.log[#rec.log] })
          assert.is_true(conn.closed)
        end)
      end
    end
  end)
end)
