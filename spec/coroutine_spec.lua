-- Blocking style (API section 6): spawn, dial, receive, accept, and the
-- three contexts a waiting call can be made from.
local evtcp = require("evtcp")
local H = require("helper")

--- A server whose accepted connections are handed to serve(conn) in a
-- coroutine (accept loop written in blocking style).
local function co_server(serve, count)
  local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
  evtcp.spawn(function()
    for _ = 1, count or 1 do
      local conn, err = l:accept(10)
      if not conn then error("accept: " .. tostring(err)) end
      evtcp.spawn(serve, conn)
    end
    l:terminate()
  end)
  return l
end

--- A raw peer made with callbacks: sends `chunks` (with pauses), then does `finish`.
local function feeder(chunks, finish)
  return H.server(function()
    return { onConnection = function(_, c)
      local i = 0
      local function next_chunk()
        i = i + 1
        if c.closed then return end
        if chunks[i] then c:send(chunks[i]) evtcp.after(0.01, next_chunk)
        elseif finish == "reset" then c:reset()
        elseif finish == "close" then c:close() end
      end
      next_chunk()
    end, onData = function() end }
  end)
end

describe("blocking style", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  describe("spawn", function()
    it("runs the function in a coroutine with its arguments, from the loop", function()
      local got
      local co = evtcp.spawn(function(a, b, c) got = { a, b, c, coroutine.isyieldable() } end, 1, nil, 3)
      assert.are.equal("thread", type(co))
      assert.is_nil(got)
      assert.is_true(evtcp.run(5))
      assert.are.same({ 1, nil, 3, true }, got)
    end)

    it("interleaves coroutines that sleep", function()
      local order = {}
      for _, name in ipairs({ "a", "b" }) do
        evtcp.spawn(function()
          for i = 1, 3 do
            order[#order + 1] = name .. i
            evtcp.sleep(0.01)
          end
        end)
      end
      assert.is_true(evtcp.run(5))
      assert.are.same({ "a1", "b1", "a2", "b2", "a3", "b3" }, order)
    end)

    it("propagates an error of a spawned coroutine out of run, with the coroutine's traceback", function()
      local function inner() error("broken inside") end
      evtcp.spawn(function() evtcp.sleep(0.01) inner() end)
      local ok, err = pcall(evtcp.run, 5)
      assert.is_false(ok)
      assert.matches("broken inside", err)
      assert.matches("in %a+ 'inner'", err)
      assert.is_true(evtcp.run(1))
    end)

    it("checks its argument", function()
      assert.has_error(function() evtcp.spawn(5) end, "bad argument #1 to 'spawn' (function expected, got number)")
    end)
  end)

  describe("dial", function()
    it("returns an open connection", function()
      local l = H.echo_server()
      local conn, err
      H.go(function()
        conn, err = evtcp.dial("localhost", l.port)
        conn:send("x")
        assert.are.equal("x", conn:receive())
        conn:close()
        assert.is_true(conn:wait(5))
      end)
      l:terminate()
      assert.is_nil(err)
      assert.is_true(conn.closed)
    end)

    it("returns nil and the error object when connecting fails", function()
      local port = H.free_port()
      local results = {}
      evtcp.spawn(function()
        results.refused = { evtcp.dial("127.0.0.1", port) }
        results.dns = { evtcp.dial("nowhere.invalid", port) }
      end)
      assert.is_true(evtcp.run(5))
      assert.is_nil(results.refused[1])
      assert.are.equal("refused", results.refused[2].kind)
      assert.is_nil(results.dns[1])
      assert.are.equal("dns", results.dns[2].kind)
      -- at top level too
      local conn, e = evtcp.dial("127.0.0.1", port)
      assert.is_nil(conn)
      assert.are.equal("refused", e.kind)
    end)
  end)

  describe("receive", function()
    it("reads by pattern: what is there, n bytes, lines (\\n and \\r\\n), everything", function()
      local l = feeder({ "hel", "lo", " wor", "ld\r\nsecond line\nthird", "\nrest of", " it" }, "close")
      local got = {}
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        got.some = c:receive()
        got.five = c:receive(2)
        got.zero = c:receive(0)
        got.line1 = c:receive("l")
        got.line2 = c:receive("*l")
        got.line3 = c:receive("l")
        got.all = c:receive("*a")
        got.after = { c:receive("a") }
        got.closed = { c:receive() }
        got.closed_n = { c:receive(3) }
        c:close()
      end)
      l:terminate()
      assert.are.equal("hel", got.some)
      assert.are.equal("lo", got.five)
      assert.are.equal("", got.zero)
      assert.are.equal(" world", got.line1)
      assert.are.equal("second line", got.line2)
      assert.are.equal("third", got.line3)
      assert.are.equal("rest of it", got.all)
      assert.are.same({ "" }, got.after)
      assert.are.same({ nil, "closed", "" }, got.closed)
      assert.are.same({ nil, "closed", "" }, got.closed_n)
    end)

    it("gives nil, 'timeout', partial when the time is up, and the next call goes on from there", function()
      local l = feeder({ "abcd", "ef" }, nil)
      local got = {}
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        got.n = { c:receive(10, 0.2) }
        got.line = { c:receive("l", 0.05) }
        c:send("")
        got.empty = { c:receive(nil, 0.05) }
        c:close()
      end)
      l:terminate()
      assert.are.same({ nil, "timeout", "abcdef" }, got.n)
      assert.are.same({ nil, "timeout", "" }, got.line)
      assert.are.same({ nil, "timeout", "" }, got.empty)
    end)

    it("gives nil, 'closed', partial when the peer closes first", function()
      local l = feeder({ "1234" }, "close")
      local got
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        got = { c:receive(10) }
      end)
      l:terminate()
      assert.are.same({ nil, "closed", "1234" }, got)
    end)

    it("gives nil, the error's message, partial when the peer resets", function()
      local l = feeder({ "12" }, "reset")
      local got
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        got = { c:receive("a") }
      end)
      l:terminate()
      assert.is_nil(got[1])
      assert.matches("reset", got[2])
      assert.are.equal("12", got[3])
    end)

    it("cannot be used on a connection with onData", function()
      local l = H.echo_server()
      local c = evtcp.connect("127.0.0.1", l.port, { onData = function() end })
      assert.has_error(function() c:receive() end,
        "evtcp: this connection has an onData callback; it cannot also be read with receive")
      c:close()
      l:terminate()
    end)

    it("checks its arguments", function()
      local l = H.echo_server()
      local c = evtcp.connect("127.0.0.1", l.port)
      assert.has_error(function() c:receive("x") end)
      assert.has_error(function() c:receive(-1) end)
      assert.has_error(function() c:receive(nil, -1) end)
      assert.has_error(function() c:receive({}) end)
      c:close()
      l:terminate()
    end)
  end)

  describe("the three contexts", function()
    it("at top level, a waiting call drives the loop and other callbacks run meanwhile", function()
      local l = H.echo_server()
      local ticks = 0
      local function tick() ticks = ticks + 1 if ticks < 5 then evtcp.after(0.01, tick) end end
      evtcp.after(0.01, tick)
      local c = assert(evtcp.dial("127.0.0.1", l.port))
      assert.is_nil((c:receive(1, 0.1)))
      c:send("top")
      assert.are.equal("top", c:receive(3, 5))
      c:close()
      assert.is_true(c:wait(5))
      l:terminate()
      assert.is_true(ticks >= 5)
    end)

    it("in a coroutine evtcp did not start, it drives the loop too", function()
      local l = H.echo_server()
      local result = coroutine.wrap(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        c:send("wrapped")
        local r = c:receive(7, 5)
        c:close()
        return r
      end)()
      l:terminate()
      assert.are.equal("wrapped", result)
    end)

    it("in a plain callback, it raises the re-entrance error", function()
      local l = H.echo_server()
      local errors = {}
      local c = evtcp.connect("127.0.0.1", l.port)
      evtcp.after(0, function()
        for _, f in ipairs({
          function() c:receive(1) end,
          function() evtcp.dial("127.0.0.1", l.port) end,
          function() c:wait(1) end,
          function() evtcp.sleep(0.1) end,
          function() l:accept() end,
        }) do
          local ok, err = pcall(f)
          errors[#errors + 1] = ok and "no error" or err
        end
        c:close()
      end)
      H.run_until(function() return #errors == 5 end, "the callback")
      l:terminate()
      assert.are.equal(5, #errors)
      for i = 1, 4 do assert.matches("the loop is already running %(use a coroutine%)", errors[i]) end
      assert.matches("onConnection callback; it cannot also accept", errors[5])
    end)
  end)

  describe("a callback that raises", function()
    -- the error leaves run(); a coroutine waiting for the same change must
    -- still be woken by the next run, not left waiting on a closed object
    it("does not keep a coroutine waiting on a connection that ended meanwhile", function()
      local l = H.echo_server()
      local c = evtcp.connect("127.0.0.1", l.port, {
        onConnection = function(_, conn) conn:close() end,
        onTerminate = function() error("onTerminate raised") end,
      })
      local woken
      evtcp.spawn(function() woken = c:wait() end)
      local ok, err = pcall(evtcp.run, 5)
      assert.is_false(ok)
      assert.matches("onTerminate raised", err)
      l:terminate()
      assert.is_true(evtcp.run(5))
      assert.is_true(woken)
    end)

    it("does not keep a coroutine waiting on a listener that ended meanwhile", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1",
        onTerminate = function() error("listener onTerminate raised") end }))
      local woken
      evtcp.spawn(function() woken = l:wait() end)
      evtcp.after(0.01, function() l:terminate() end)
      local ok, err = pcall(evtcp.run, 5)
      assert.is_false(ok)
      assert.matches("listener onTerminate raised", err)
      assert.is_true(evtcp.run(5))
      assert.is_true(woken)
    end)
  end)

  describe("accept", function()
    it("returns the next client, or nil, 'timeout'", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local got = {}
      evtcp.spawn(function()
        got.first = { l:accept(0.05) }
        local c = assert(l:accept(5))
        got.peer = c.remotePort
        got.data = c:receive(5)
        c:close()
        l:terminate()
        got.after = { l:accept(1) }
      end)
      local client
      evtcp.after(0.2, function()
        client = evtcp.connect("127.0.0.1", l.port)
        client:send("hello")
      end)
      assert.is_true(H.cleanup())
      assert.are.same({ nil, "timeout" }, got.first)
      assert.are.equal(client.localPort, got.peer)
      assert.are.equal("hello", got.data)
      assert.are.same({ nil, "closed" }, got.after)
    end)

    it("serves a thousand concurrent coroutine clients", function()
      local p = io.popen("ulimit -n")
      local limit = tonumber(p:read("a"))
      p:close()
      if limit and limit < 2200 then pending("needs 2200 file descriptors, the limit is " .. limit) return end
      local n = 1000
      local l = co_server(function(c)
        local line = c:receive("l")
        c:send(line, "\n")
        c:close()
      end, n)
      local answers = 0
      for i = 1, n do
        evtcp.spawn(function()
          local c = assert(evtcp.dial("127.0.0.1", l.port))
          c:send("client " .. i .. "\n")
          if c:receive("l") == "client " .. i then answers = answers + 1 end
          c:close()
        end)
      end
      assert.is_true(evtcp.run(60))
      assert.are.equal(n, answers)
    end)
  end)

  describe("memory", function()
    it("is bounded for a slow reader: send waits in the writer, input pauses at highWaterMark", function()
      local total, chunk, hwm = 64 << 20, 64 * 1024, 1 << 20
      local pattern = H.bytes(65521, 77) -- a prime period: misplaced bytes show
      local max_buffered, max_read, received, bad = 0, 0, 0, nil
      local l = co_server(function(c)
        while true do
          local data = c:receive(nil, 10)
          if not data then break end
          if not bad and data ~= H.repeat_slice(pattern, received, #data) then bad = received end
          received = received + #data
          if #data > max_read then max_read = #data end
          if received % (8 << 20) < #data then evtcp.sleep(0.02) end -- a slow reader
        end
        c:close()
      end)
      evtcp.spawn(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port, { highWaterMark = hwm }))
        local sent = 0
        while sent < total do
          assert(c:send(H.repeat_slice(pattern, sent, chunk)))
          sent = sent + chunk
          if c.bufferedAmount > max_buffered then max_buffered = c.bufferedAmount end
        end
        c:close()
      end)
      assert.is_true(evtcp.run(120))
      assert.is_nil(bad, "bytes differ from offset " .. tostring(bad))
      assert.are.equal(total, received)
      assert.is_true(max_buffered <= hwm + chunk, "bufferedAmount reached " .. max_buffered)
      -- the reader's input stops growing near highWaterMark (one read more at most)
      assert.is_true(max_read <= hwm + 64 * 1024, "one receive got " .. max_read)
    end)

    -- A sender that never gets room: 64 sends of 1 MiB to a peer that does
    -- not read. Without the wait while connecting, every send returned at
    -- once and all 64 MiB piled up in evtcp's buffer.
    local function never_reading(start, certs)
      local hwm, chunk = 256 * 1024, string.rep("m", 1 << 20)
      local sends, max_buffered, conn = 0, 0, nil
      local writer = evtcp.spawn(function()
        conn = start(hwm)
        for _ = 1, 64 do
          if not conn:send(chunk) then break end
          sends = sends + 1
          if conn.bufferedAmount > max_buffered then max_buffered = conn.bufferedAmount end
        end
      end)
      -- the writer waits for room that never comes: the loop runs a while
      local deadline = H.now() + 1
      while H.now() < deadline do evtcp.step(0.05) end
      assert.is_true(sends < 64, "all 64 MiB were queued")
      assert.is_true(max_buffered <= hwm + #chunk, "bufferedAmount reached " .. max_buffered)
      assert.is_true(conn.bufferedAmount <= hwm + #chunk, "bufferedAmount is " .. conn.bufferedAmount)
      assert.equal("suspended", coroutine.status(writer))
      conn:reset() -- wakes the writer: send says closed
      H.run_until(function() return coroutine.status(writer) == "dead" end, "the writer to end")
      return certs
    end

    it("send waits for room on a connection that is still connecting", function()
      local peer
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
        return { onConnection = function(_, c) peer = c; c:pause() end } -- never reads
      end }))
      never_reading(function(hwm)
        return assert(evtcp.connect("127.0.0.1", l.port, { highWaterMark = hwm })) -- still resolving
      end)
      peer:close()
      l:terminate()
      assert.is_true(evtcp.run(10))
    end)

    it("send waits for room on a TLS listener's accept() during the handshake", function()
      local certs, dir = H.self_signed()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", tls = certs, highWaterMark = 256 * 1024 }))
      local client = assert(evtcp.connect("127.0.0.1", l.port, { tls = { verify = false },
        onConnection = function(_, c) c:pause() end })) -- never reads
      local state
      never_reading(function()
        local s = assert(l:accept(10)) -- the listener's highWaterMark
        state = tostring(s):match("%((%a+)%)")
        return s
      end)
      assert.equal("connecting", state) -- the handshake was still going
      client:close()
      l:terminate()
      assert.is_true(evtcp.run(10))
      os.execute("rm -rf " .. dir)
    end)
  end)
end)
