-- Blocking style, complete (issue 10): full duplex, receiveUntil, bounded
-- reads, options on accepted connections, half-open.
local evtcp = require("evtcp")
local H = require("helper")
local sockopt = require("sockopt")

describe("blocking style", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  describe("full duplex", function()
    it("a reader and a writer wait on one connection, each woken by its own condition", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local reader_result, writer_done = "never returned", false
      local received = 0
      evtcp.spawn(function() -- the peer: silent for 0.3 s, then talks, then reads all
        local s = l:accept(5)
        evtcp.sleep(0.3)
        s:send("hello")
        while true do
          local d = s:receive()
          if not d then break end
          received = received + #d
        end
        s:close()
      end)
      evtcp.spawn(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port, { highWaterMark = 1024 }))
        evtcp.spawn(function() reader_result = tostring((c:receive())) end)
        evtcp.sleep(0.05)
        c:send(string.rep("x", 16 * 1024 * 1024)) -- waits for room
        writer_done = true
        evtcp.sleep(0.2)
        c:close()
      end)
      assert.is_true(evtcp.run(20))
      l:terminate()
      assert.are.equal("hello", reader_result)
      assert.is_true(writer_done)
      assert.are.equal(16 * 1024 * 1024, received)
    end)

    it("several coroutines accept on one listener, first come, first served", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local order, calls = {}, {}
      for i = 1, 3 do
        evtcp.spawn(function()
          calls[#calls + 1] = i
          local c = l:accept(5)
          order[#order + 1] = i .. ":" .. tostring(c and c:receive("l"))
          if c then c:close() end
        end)
      end
      H.run_until(function() return true end) -- the acceptors are waiting
      evtcp.step(0.05)
      for i = 1, 3 do
        local c = evtcp.connect("127.0.0.1", l.port)
        c:send("client" .. i .. "\n")
        evtcp.run(0.2)
        c:close()
      end
      H.run_until(function() return #order == 3 end, "three accepts")
      l:terminate()
      assert.are.same({ "1:client1", "2:client2", "3:client3" }, order)
      assert.are.same({ 1, 2, 3 }, calls) -- spawned coroutines start in order
    end)

    it("a second concurrent reader raises", function()
      local server = H.server(function() return {} end)
      local err
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", server.port))
        evtcp.spawn(function() c:receive() end)
        evtcp.sleep(0.05)
        local _, e = pcall(c.receive, c)
        err = e
        c:close()
      end)
      server:terminate()
      assert.matches("evtcp: connection is already being read by another coroutine", tostring(err), 1, true)
    end)

    it("a second writer waiting in send raises", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local err
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port, { highWaterMark = 1024 }))
        evtcp.spawn(function() c:send(string.rep("a", 8 << 20)) end) -- nobody reads: waits
        evtcp.sleep(0.1)
        local _, e = pcall(c.send, c, string.rep("b", 8 << 20))
        err = e
        c:reset()
      end)
      l:terminate()
      assert.matches("already being written by another coroutine", tostring(err), 1, true)
    end)

    it("run does not return true while a coroutine waits on a connection that can change", function()
      local server = H.server(function()
        return { onConnection = function(_, c) evtcp.after(0.3, function() c:send("late") c:close() end) end }
      end)
      local got
      evtcp.spawn(function()
        local c = assert(evtcp.dial("127.0.0.1", server.port))
        got = c:receive()
      end)
      H.run_until(function() return got ~= nil end, "the late data", 5)
      server:terminate()
      assert.are.equal("late", got)
    end)
  end)

  describe("receiveUntil and bounded reads", function()
    it("reads an HTTP head that arrives in pieces, the delimiter split too", function()
      local server = H.server(function()
        return { onConnection = function(_, c)
          local parts = { "GET / HTTP/1.1\r\nHo", "st: x\r\n\r", "\nbody-part" }
          for i, p in ipairs(parts) do evtcp.after(0.05 * i, function() c:send(p) end) end
          evtcp.after(0.3, function() c:close() end)
        end }
      end)
      local head, rest
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", server.port))
        head = assert(c:receiveUntil("\r\n\r\n"))
        rest = c:receive("a")
      end)
      server:terminate()
      assert.are.equal("GET / HTTP/1.1\r\nHost: x", head)
      assert.are.equal("body-part", rest)
    end)

    it("receiveUntil with a timeout, at the top level too", function()
      local server = H.server(function() return { onConnection = function(_, c) c:send("no end") end } end)
      local c = assert(evtcp.dial("127.0.0.1", server.port))
      local data, err, partial = c:receiveUntil("--", 0.2)
      assert.is_nil(data)
      assert.are.equal("timeout", err)
      assert.are.equal("no end", partial)
      c:close() server:terminate()
    end)

    it("a line or frame longer than highWaterMark gives 'too long'", function()
      local server = H.server(function()
        return { onConnection = function(_, c) c:send(string.rep("z", 10000)) end }
      end)
      local results = {}
      H.go(function()
        for _, how in ipairs({ "l", "until" }) do
          local c = assert(evtcp.dial("127.0.0.1", server.port, { highWaterMark = 1024 }))
          local data, err, partial
          if how == "l" then data, err, partial = c:receive("l")
          else data, err, partial = c:receiveUntil("\r\n") end
          results[how] = { data, err, partial and #partial >= 1024 }
          c:close()
        end
      end)
      server:terminate()
      assert.are.same({ nil, "too long", true }, results.l)
      assert.are.same({ nil, "too long", true }, results["until"])
    end)

    it("receive(n) and receiveUntil check their arguments", function()
      local server = H.server(function() return {} end)
      local c = evtcp.connect("127.0.0.1", server.port)
      for _, n in ipairs({ -1, 1.5 }) do
        local ok, err = pcall(function() c:receive(n) end)
        assert.is_false(ok)
        assert.matches("bad argument #2 to 'receive'", err)
      end
      local ok, err = pcall(function() c:receiveUntil("") end)
      assert.is_false(ok)
      assert.matches("bad argument #2 to 'receiveUntil'", err)
      c:close() server:terminate()
    end)
  end)

  describe("options on accepted connections", function()
    it("the listener's noDelay and keepAlive are defaults for accept() and onConnection", function()
      local seen = {}
      for _, style in ipairs({ "accept", "callback" }) do
        local opts = { address = "127.0.0.1", noDelay = true, keepAlive = 11 }
        local accepted
        if style == "callback" then
          opts.onConnection = function(_, _, ev)
            return { onConnection = function(_, c) accepted = c end, onData = function() end }
          end
        end
        local l = assert(evtcp.listen(0, opts))
        local c = evtcp.connect("127.0.0.1", l.port, { onData = function() end })
        if style == "accept" then H.go(function() accepted = l:accept(5) end) end
        H.run_until(function() return accepted and c.localPort end, "accepted")
        local fd = assert(sockopt.find(l.port, c.localPort))
        seen[style] = { sockopt.get(fd, "nodelay"), sockopt.get(fd, "keepidle"), accepted.noDelay }
        accepted:close() c:close() l:terminate()
      end
      assert.are.same({ 1, 11, true }, seen.accept)
      assert.are.same({ 1, 11, true }, seen.callback)
    end)

    it("a handler from onConnection overrides the listener's defaults", function()
      local accepted
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", noDelay = true, onConnection = function()
        return { noDelay = false, onConnection = function(_, c) accepted = c end, onData = function() end }
      end }))
      local c = evtcp.connect("127.0.0.1", l.port, { onData = function() end })
      H.run_until(function() return accepted and c.localPort end, "accepted")
      local fd = assert(sockopt.find(l.port, c.localPort))
      assert.are.equal(0, sockopt.get(fd, "nodelay"))
      accepted.noDelay = true -- assignable on an accepted connection
      assert.are.equal(1, sockopt.get(fd, "nodelay"))
      accepted:close() c:close() l:terminate()
    end)

    it("the listener's options are read once, by listen: a later change to its table is not seen", function()
      local opts = { address = "127.0.0.1", noDelay = true }
      local l = assert(evtcp.listen(0, opts))
      opts.noDelay = "yes" -- would be an option error if it were read again
      opts.keepAlive = 9
      local c = evtcp.connect("127.0.0.1", l.port, { onData = function() end })
      local accepted
      H.go(function() accepted = l:accept(5) end)
      H.run_until(function() return accepted and c.localPort end, "accepted")
      local fd = assert(sockopt.find(l.port, c.localPort))
      assert.are.same({ 1, 0 }, { sockopt.get(fd, "nodelay"), sockopt.get(fd, "keepalive") })
      accepted:close() c:close() l:terminate()
    end)

    it("the listener's readTimeout reaches accepted connections", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", readTimeout = 0.2 }))
      local err
      H.go(function()
        local c = evtcp.connect("127.0.0.1", l.port)
        local s = assert(l:accept(5))
        local _, e = s:receive()
        err = e
        c:close()
      end)
      l:terminate()
      assert.are.equal("read timeout", err)
    end)

    it("a listener's bad connection option is an error of listen", function()
      local ok, err = pcall(function() evtcp.listen(0, { address = "127.0.0.1", noDelay = "yes" }) end)
      assert.is_false(ok)
      assert.matches("bad argument #2 to 'listen' %(option 'noDelay' must be a boolean%)", err)
    end)
  end)

  describe("half-open", function()
    it("onEnd comes after the last onData; without allowHalfOpen evtcp closes after it", function()
      local log = {}
      local server = H.server(function()
        return {
          onData = function(_, c, ev) log[#log + 1] = "data" end,
          onEnd = function(_, c) log[#log + 1] = "end" c:send("bye") end,
          onShutdown = function() log[#log + 1] = "close" end,
        }
      end)
      local reply = ""
      evtcp.connect("127.0.0.1", server.port, {
        onConnection = function(_, c) c:send("request") c:shutdown() end,
        onData = function(_, _, ev) reply = reply .. ev.data end,
        onShutdown = function() end,
      })
      H.run_until(function() return log[#log] == "close" and reply == "bye" end, "the server to close")
      server:terminate()
      assert.are.same({ "data", "end", "close" }, log)
      assert.are.equal("bye", reply)
    end)

    it("with allowHalfOpen the program keeps sending after the peer's FIN, in both styles", function()
      local big = H.bytes(3 << 20, 5)
      local cb_server = H.server(function()
        return { allowHalfOpen = true, onData = function() end,
                 onEnd = function(_, c) evtcp.after(0.1, function() c:send(big) c:close() end) end }
      end)
      local co_listener = assert(evtcp.listen(0, { address = "127.0.0.1", allowHalfOpen = true }))
      evtcp.spawn(function()
        local s = co_listener:accept(5)
        s:receive("a") -- until the FIN
        evtcp.sleep(0.1)
        assert(s:send(big), "send after the peer's FIN")
        s:close()
      end)
      local replies = {}
      for i, port in ipairs({ cb_server.port, co_listener.port }) do
        H.go(function()
          local c = assert(evtcp.dial("127.0.0.1", port))
          c:send("request")
          c:shutdown()
          replies[i] = c:receive("a")
        end)
      end
      cb_server:terminate() co_listener:terminate()
      assert.are.equal(#big, #replies[1])
      assert.is_true(replies[1] == big)
      assert.is_true(replies[2] == big)
    end)

    it("in blocking style receive says closed at the FIN", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", allowHalfOpen = true }))
      local got = {}
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        local s = assert(l:accept(5))
        c:send("x")
        c:shutdown()
        got[1] = s:receive()
        got[2] = select(2, s:receive())
        got[3] = s:send("still")
        s:close()
        got[4] = c:receive("a")
      end)
      l:terminate()
      assert.are.same({ "x", "closed", true, "still" }, got)
    end)
  end)

  describe("examples/proxy_coroutines.lua", function()
    it("relays 16 MiB each way and the half-close, byte for byte", function()
      H.check_proxy("examples/proxy_coroutines.lua", 16)
    end)
  end)
end)
