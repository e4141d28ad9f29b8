-- Control: timeouts, backpressure, abortive close, socket options (API
-- sections 2 and 3), each against real sockets on loopback.
local evtcp = require("evtcp")
local H = require("helper")

describe("control", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  describe("timeouts", function()
    it("timeout: connecting to a listener whose backlog is full fails with kind 'timeout'", function()
      -- without onConnection the listener takes one client and stops
      -- accepting; with backlog 1 the kernel queues one more and drops the
      -- SYNs of the others that arrive in the same burst
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", backlog = 1 }))
      local fillers, results = {}, {}
      for i = 1, 3 do fillers[i] = evtcp.connect("127.0.0.1", l.port, { onShutdown = function() end }) end
      local t0 = H.now()
      local conn = evtcp.connect("127.0.0.1", l.port, {
        timeout = 0.3,
        onConnection = function() results.connected = true end,
        onError = function(_, _, ev) results.kind = ev.error.kind results.at = H.now() - t0 end,
        onTerminate = function() results.done = true end,
      })
      H.run_until(function() return results.done end, "the connect timeout")
      for _, f in ipairs(fillers) do f:close() end
      l:terminate()
      assert.is_nil(results.connected)
      assert.are.equal("timeout", results.kind)
      assert.is_true(results.at >= 0.25, "timed out after " .. results.at)
      assert.are.equal("timeout", conn.errors[1].kind)
    end)

    it("readTimeout: a silent peer gives kind 'timeout', then the connection closes", function()
      local peer_closed = false
      local l = H.server(function() return { onShutdown = function() peer_closed = true end } end)
      local t0 = H.now()
      local at
      local rec = H.recorder({ onError = function() at = H.now() - t0 end })
      rec.readTimeout = 0.2
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "the read timeout")
      H.run_until(function() return peer_closed end, "the peer to see the close")
      l:terminate()
      assert.are.same({ "connection", "error", "terminate" }, rec.log)
      assert.are.equal("timeout", rec.errors[1].kind)
      assert.is_true(at >= 0.18)
    end)

    it("readTimeout is an inactivity timeout: traffic keeps it from expiring", function()
      local l = H.server(function()
        local n = 0
        return { onConnection = function(_, c)
          local function tick()
            n = n + 1
            if c.closed then return end
            if n <= 5 then c:send("t") evtcp.after(0.08, tick) else c:close() end
          end
          tick()
        end }
      end)
      local rec = H.recorder({ readTimeout = 0.25 })
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "the exchange")
      l:terminate()
      assert.is_nil(rec.count.onError)
      assert.are.equal("ttttt", rec.data())
    end)

    it("0 means no timeout, as nil, over plain TCP and TLS, for clients and accepted connections", function()
      -- it fired at once on plain TCP and never on TLS
      local certs, dir = H.self_signed()
      for _, tls in ipairs({ false, true }) do
        local accepted
        local l = H.server(function()
          accepted = H.recorder({ onConnection = function(_, c) evtcp.after(0.3, function() c:send("late") end) end })
          return accepted
        end, { readTimeout = 0, writeTimeout = 0, tls = tls and certs or nil })
        local rec = H.recorder({ readTimeout = 0, writeTimeout = 0, tls = tls and { verify = false } or nil,
          onData = function(_, c) c:close() end })
        evtcp.connect("127.0.0.1", l.port, rec)
        H.run_until(rec.terminated, "the late reply")
        l:terminate()
        assert.are.same({}, rec.errors)
        assert.are.same({}, accepted.errors)
        assert.are.equal("late", rec.data())
        -- setTimeouts(0) too
        local l2 = H.server(function() return { onConnection = function(_, c)
          evtcp.after(0.3, function() if not c.closed then c:send("x") end end)
        end } end, { tls = tls and certs or nil })
        local rec2 = H.recorder({ tls = tls and { verify = false } or nil,
          onConnection = function(_, c) c:setTimeouts(0, 0) end, onData = function(_, c) c:close() end })
        evtcp.connect("127.0.0.1", l2.port, rec2)
        H.run_until(rec2.terminated, "the late byte")
        l2:terminate()
        assert.are.same({}, rec2.errors)
        assert.are.equal("x", rec2.data())
      end
      os.execute("rm -rf " .. dir)
    end)

    it("writeTimeout: a peer that does not read gives kind 'timeout'", function()
      local reader
      local l = H.server(function()
        return { onConnection = function(_, c) reader = c c:pause() end }
      end)
      local block = string.rep("w", 1 << 20)
      local rec = H.recorder({ writeTimeout = 0.3, onConnection = function(_, c)
        for _ = 1, 64 do c:send(block) end
      end })
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "the write timeout")
      l:terminate()
      reader:close() -- paused, it would never read the FIN
      assert.are.equal("timeout", rec.errors[1].kind)
    end)

    it("setTimeouts sets and clears the inactivity timeouts of a live connection", function()
      local l = H.server(function() return {} end)
      local rec = H.recorder()
      local conn = evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(function() return rec.count.onConnection end, "connected")
      conn:setTimeouts(0.1, nil)
      conn:setTimeouts(nil, nil)
      evtcp.sleep(0.3)
      assert.is_nil(rec.count.onError)
      conn:setTimeouts(0.1)
      H.run_until(rec.terminated, "the new read timeout")
      l:terminate()
      assert.are.equal("timeout", rec.errors[1].kind)
    end)
  end)

  describe("backpressure", function()
    it("pause() stops onData for a while under a sending peer; resume() delivers every byte", function()
      local payload = H.bytes(2 * 1024 * 1024, 21)
      local l = H.server(function()
        return { onConnection = function(_, c) c:send(payload) c:close() end }
      end)
      local paused_at, during
      local rec
      rec = H.recorder({ onConnection = function(_, c)
        c:pause()
        c:pause()
        paused_at = #rec.data()
        evtcp.after(0.3, function()
          during = #rec.data()
          c:resume()
          c:resume()
        end)
      end })
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "the transfer")
      l:terminate()
      assert.are.equal(paused_at, during)
      assert.is_true(rec.data() == payload)
    end)

    it("onDrain fires once the queue is empty after a send, and bufferedAmount tells what waits", function()
      local got = 0
      local l = H.server(function()
        return { onData = function(_, _, ev) got = got + #ev.data end }
      end)
      local drains, max_buffered = 0, 0
      local conn = evtcp.connect("127.0.0.1", l.port, {
        onConnection = function(_, c)
          c:send(string.rep("d", 8 << 20))
          max_buffered = c.bufferedAmount
        end,
        onDrain = function(_, c, ev)
          assert.are.equal("drain", ev.type)
          assert.are.equal(0, c.bufferedAmount)
          drains = drains + 1
          if drains == 1 then c:send("small") else c:close() end
        end,
      })
      H.run_until(function() return conn.closed end, "the drains")
      H.run_until(function() return got == (8 << 20) + 5 end, "the server to get everything")
      l:terminate()
      assert.are.equal(2, drains)
      assert.is_true(max_buffered > 0)
    end)

    it("a slow reader: 256 MiB sent by onDrain, memory bounded, bytes checked", function()
      local total = 256 << 20
      local chunk = 64 * 1024
      local hwm = 1 << 20
      -- the stream is a pattern of prime period, so that a lost, doubled or
      -- reordered piece shows at the other end
      local period = 65521
      local pattern = H.bytes(period, 99)
      local function expected(offset, len) return H.repeat_slice(pattern, offset, len) end
      local received, bad = 0, nil
      local rng = 12345
      local function random()
        rng = (rng * 1103515245 + 12345) % 2147483648
        return rng / 2147483648
      end
      local l = H.server(function()
        return {
          onConnection = function(_, c)
            local function flip()
              if c.closed then return end
              if random() < 0.5 then c:pause() else c:resume() end
              evtcp.after(random() * 0.01, flip)
            end
            flip()
          end,
          onData = function(_, _, ev)
            if not bad and ev.data ~= expected(received, #ev.data) then bad = received end
            received = received + #ev.data
          end,
          onShutdown = function() end,
        }
      end)
      local sent, max_buffered = 0, 0
      local function pump(c)
        while sent < total and c.bufferedAmount < hwm do
          local n = math.min(chunk, total - sent)
          c:send(expected(sent, n))
          sent = sent + n
          if c.bufferedAmount > max_buffered then max_buffered = c.bufferedAmount end
        end
        if sent >= total then c:close() end
      end
      local conn = evtcp.connect("127.0.0.1", l.port, {
        highWaterMark = hwm,
        onConnection = function(_, c) pump(c) end,
        onDrain = function(_, c) pump(c) end,
      })
      H.run_until(function() return conn.closed end, "256 MiB to be sent", 300)
      H.run_until(function() return received == total end, "256 MiB to arrive", 300)
      l:terminate()
      local status = io.open("/proc/self/status"):read("a")
      print(("\n    slow reader: %d MiB checked, bufferedAmount peaked at %d bytes, peak RSS %s"):format(
        received >> 20, max_buffered, status:match("VmHWM:%s*(%d+ %a+)")))
      assert.is_nil(bad, "bytes differ from offset " .. tostring(bad))
      assert.is_true(max_buffered <= hwm + chunk, "bufferedAmount reached " .. max_buffered)
    end)
  end)

  describe("reset()", function()
    it("drops what is queued, sends RST (a LuaSocket peer sees a reset), and ends with onShutdown", function()
      local socket = require("socket")
      local peer = assert(socket.tcp())
      peer:settimeout(5)
      local rec = H.recorder({ onConnection = function(_, c)
        c:send(string.rep("q", 4 << 20)) -- more than the kernel takes
        c:reset()
        assert.are.same({ nil, "closed" }, { c:send("x") })
      end })
      local l = H.server(function() return rec end)
      assert(peer:connect("127.0.0.1", l.port))
      H.run_until(rec.terminated, "the reset to finish")
      l:terminate()
      assert.are.same({ "connection", "close", "terminate" }, rec.log)
      local got, err, partial = peer:receive(8 << 20)
      -- LuaSocket reports a reset as "closed" (it does so for one it made
      -- itself too); what shows the reset is the queued data that never came
      assert.is_nil(got)
      assert.are.equal("closed", err)
      assert.is_true(#partial < 4 << 20, "all the queued data arrived")
      peer:close()
    end)

    it("is seen by an evtcp peer as an error of kind 'reset'", function()
      local l = H.server(function()
        return { onConnection = function(_, c) c:send(string.rep("r", 4 << 20)) c:reset() end }
      end)
      local rec = H.recorder()
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "the peer's view of the reset")
      l:terminate()
      assert.are.same({ "connection", "error", "terminate" },
        { rec.log[1], rec.log[#rec.log - 1], rec.log[#rec.log] })
      assert.are.equal("reset", rec.errors[1].kind)
      assert.is_true(#rec.data() < 4 << 20)
    end)

    it("before the connection is up, aborts it", function()
      local l = H.server(function() return {} end)
      local rec = H.recorder()
      local conn = evtcp.connect("localhost", l.port, rec)
      conn:reset()
      H.run_until(rec.terminated, "the abort")
      l:terminate()
      assert.are.same({ "close", "terminate" }, rec.log)
    end)
  end)

  describe("socket options", function()
    it("noDelay and keepAlive are set on the socket", function()
      -- read back from the kernel (spec/sockopt.c), not from the Lua flag
      local sockopt = require("sockopt")
      local l = H.echo_server()
      local seen = {}
      local rec = H.recorder({ noDelay = true, keepAlive = 5,
        onConnection = function(_, c)
          local fd = assert(sockopt.find(c.localPort, l.port))
          for _, k in ipairs({ "nodelay", "keepalive", "keepidle" }) do seen[k] = sockopt.get(fd, k) end
          c:send("opt")
        end,
        onData = function(_, c) c:close() end })
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "the exchange")
      l:terminate()
      assert.are.equal("opt", rec.data())
      assert.are.same({ nodelay = 1, keepalive = 1, keepidle = 5 }, seen)
      -- keepAlive = true (the system's idle time) and false are accepted too
      evtcp.connect("127.0.0.1", 1, { keepAlive = true }):close()
      evtcp.connect("127.0.0.1", 1, { keepAlive = false }):close()
    end)

    it("reusePort lets two listeners share a port", function()
      local a = H.server(function() return {} end, { reusePort = true })
      local b, err = evtcp.listen(a.port, { address = "127.0.0.1", reusePort = true,
        onConnection = function() return {} end })
      assert.is_truthy(b, err)
      assert.are.equal(a.port, b.port)
      local c, _, code = evtcp.listen(a.port, { address = "127.0.0.1" })
      assert.is_nil(c)
      assert.are.equal(98, code)
      a:terminate()
      b:terminate()
    end)

    it("reusePort works across two processes", function()
      local a = H.server(function() return {} end, { reusePort = true })
      local ok, out = H.lua_child(([[
        local evtcp = require("evtcp")
        local l, err = evtcp.listen(%d, { address = "127.0.0.1", reusePort = true })
        print(l and l.port or err)
      ]]):format(a.port))
      a:terminate()
      assert.is_true(ok, out)
      assert.are.equal(a.port .. "\n", out)
    end)

    it("maxConnections refuses clients beyond the limit at once; they never reach onConnection", function()
      local offered = 0
      local l = H.server(nil, { maxConnections = 2, onConnection = function()
        offered = offered + 1
        return { onShutdown = function() end }
      end })
      local recs = {}
      for i = 1, 3 do
        recs[i] = H.recorder()
        evtcp.connect("127.0.0.1", l.port, recs[i])
        H.run_until(function() return recs[i].count.onConnection end, "client " .. i)
        evtcp.sleep(0.05)
      end
      H.run_until(recs[3].terminated, "the third client to be refused")
      assert.are.equal(2, offered)
      assert.are.equal(2, l.connections)
      assert.is_nil(recs[1].count.onTerminate)
      for i = 1, 2 do recs[i].conn:close() end
      H.run_until(function() return l.connections == 0 end, "the others to leave")
      -- below the limit again: accepted
      local rec = H.recorder({ onConnection = function(_, c) c:close() end })
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "a fourth client")
      H.run_until(function() return offered == 3 end, "the fourth to be offered")
      l:terminate()
    end)
  end)
end)
