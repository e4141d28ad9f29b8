-- Promises kept under attack: one spec per defect found by the adversarial
-- tests (issue 9). Crashes are reproduced in a child process, so a crash
-- fails the spec instead of ending the suite. Socket options are read back
-- from the kernel through the sockopt helper, never from the Lua flag.
local evtcp = require("evtcp")
local H = require("helper")
local sockopt = require("sockopt")

local sanitized = os.getenv("EVTCP_SANITIZE") ~= nil

--- Runs code in a child lua5.4; asserts it exited cleanly and printed `want`.
local function child_prints(code, want)
  local ok, out = H.lua_child(code)
  assert(ok, "the child failed:\n" .. out)
  assert.matches(want, out, 1, true)
  return out
end

local function self_signed()
  local d = os.tmpname()
  os.remove(d)
  assert(os.execute("mkdir -p " .. d))
  assert(os.execute(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout k.pem -out c.pem " ..
    "-days 2 -subj '/CN=localhost' >/dev/null 2>&1"):format(d)))
  return d .. "/c.pem", d .. "/k.pem"
end

describe("promises", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  describe("no Lua program crashes the process", function()
    it("a plain listener whose handler asks for tls serves plain TCP", function()
      child_prints([[
        local evtcp = require("evtcp")
        local l = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
          return { tls = true, onData = function(_, c, ev) c:send(ev.data) c:close() end }
        end }))
        local got = ""
        evtcp.connect("127.0.0.1", l.port, {
          onConnection = function(_, c) c:send("plain") end,
          onData = function(_, c, ev) got = got .. ev.data end,
          onTerminate = function() l:terminate() end,
        })
        evtcp.run(5)
        print("echo " .. got)
      ]], "echo plain")
    end)

    it("a handler whose __index terminates the listener during accept", function()
      child_prints([[
        local evtcp = require("evtcp")
        local l
        local handler = setmetatable({ address = "127.0.0.1" }, { __index = function(_, k)
          if k == "onConnection" and l then
            l:terminate()
            return function() return { onData = function(_, c) c:close() end } end
          end
        end })
        l = assert(evtcp.listen(0, handler))
        local c = evtcp.connect("127.0.0.1", l.port, { onConnection = function(_, c) c:send("x") end,
                                                       onTerminate = function() end })
        evtcp.run(3)
        collectgarbage()
        io.write("survived ", tostring(l.closed), "\n")
      ]], "survived true")
    end)

    it("a handler whose __index terminates the listener and refuses onConnection", function()
      child_prints([[
        local evtcp = require("evtcp")
        local l
        local handler = setmetatable({ address = "127.0.0.1" }, { __index = function(_, k)
          if k == "onConnection" then
            if l then l:terminate() return nil end
            return function() end
          end
        end })
        l = assert(evtcp.listen(0, handler))
        evtcp.connect("127.0.0.1", l.port, { onTerminate = function() end })
        evtcp.run(3)
        io.write("survived ", tostring(l.closed), "\n")
      ]], "survived true")
    end)

    it("a __gc that calls evtcp after the loop was finalized at lua_close", function()
      child_prints([[
        local evtcp
        -- made before the module: finalized after the loop at lua_close
        local late = setmetatable({}, { __gc = function()
          local ok1, e1 = pcall(evtcp.connect, "127.0.0.1", 9)
          local ok2, e2 = pcall(evtcp.step)
          local ok3, e3 = pcall(evtcp.listen, 0, { address = "127.0.0.1" })
          local ok4, e4 = pcall(evtcp.after, 1, print)
          io.write(tostring(ok1), " ", tostring(e1), "|", tostring(ok2), "|", tostring(ok3), "|", tostring(ok4), "\n")
        end })
        evtcp = require("evtcp")
        evtcp.connect("127.0.0.1", 9, {})
      ]], "false evtcp: the loop of this Lua state is closed")
    end)
  end)

  describe("nothing queued is lost", function()
    it("connect, send, close, run delivers the bytes", function()
      local rec
      local server = H.server(function() rec = H.recorder() return rec end)
      local c = evtcp.connect("127.0.0.1", server.port)
      c:send("x", "y")
      c:close()
      H.run_until(function() return rec and rec.terminated() end, "the server to see the close")
      server:terminate()
      assert.are.equal("xy", rec.data())
      assert.are.same({ "connection", "data", "close", "terminate" }, rec.log)
    end)

    it("connect, close with nothing queued aborts without onConnection", function()
      local log = {}
      local c = evtcp.connect("127.0.0.1", H.free_port(), {
        onConnection = function() log[#log + 1] = "connection" end,
        onShutdown = function() log[#log + 1] = "close" end,
        onTerminate = function() log[#log + 1] = "terminate" end,
      })
      c:close()
      H.run()
      assert.are.same({ "close", "terminate" }, log)
    end)

    it("bytes that came while the handler had no onData reach onData once it has one", function()
      local server = H.server(function()
        return { onConnection = function(_, c) c:send("early") end,
                 onData = function(_, c, ev) c:send(ev.data) end }
      end)
      local got = {}
      local handler = { onConnection = function() end }
      local c = evtcp.connect("127.0.0.1", server.port, handler)
      evtcp.after(0.2, function()
        c.handler = { onData = function(_, conn, ev)
          got[#got + 1] = ev.data
          if table.concat(got) == "early" then conn:send("late") end
          if table.concat(got) == "earlylate" then conn:close() end
        end }
      end)
      H.run_until(function() return c.closed end, "the connection to close")
      server:terminate()
      assert.are.equal("earlylate", table.concat(got))
    end)

    it("a handler table that gets onData back delivers the kept bytes first, in order", function()
      local server = H.server(function()
        return { onConnection = function(_, c) c:send("one") evtcp.after(0.2, function() c:send("two") end) end,
                 onData = function() end }
      end)
      local got = ""
      local handler = { onConnection = function() end }
      local c = evtcp.connect("127.0.0.1", server.port, handler)
      evtcp.after(0.1, function() handler.onData = function(_, _, ev) got = got .. ev.data end end)
      H.run_until(function() return got == "onetwo" end, "both parts")
      c:close()
      server:terminate()
    end)
  end)

  describe("lifetime", function()
    --- Connects with `options`, waits for ready(c), drops the connection and
    -- collects it: its descriptor must be gone at once, with no loop run.
    local function collected_closes_socket(server, options, ready)
      local before
      do
        local c = evtcp.connect("127.0.0.1", server.port, options)
        H.run_until(function() return ready(c) end, "connected")
        evtcp.run(0.1)
        before = sockopt.fds()
      end
      collectgarbage()
      collectgarbage()
      assert.are.equal(before - 1, sockopt.fds())
      server:terminate()
      evtcp.run(1)
    end

    it("a collected connection's socket is closed by __gc, without the loop running", function()
      local server = H.server(function() return { onData = function() end } end)
      collected_closes_socket(server, nil, function(c) return c.localPort ~= nil end)
    end)

    it("a collected client's TLS socket is closed by __gc too", function()
      local cert, key = self_signed()
      local server = assert(evtcp.listen(0, { address = "127.0.0.1", tls = { cert = cert, key = key },
        onConnection = function() return { onData = function() end } end }))
      collected_closes_socket(server, { tls = { verify = false } }, function(c) return c.tls ~= nil end)
    end)

    it("a connection without callbacks is anchored while it connects", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" })) -- no onConnection: not anchored
      local c = evtcp.connect("127.0.0.1", l.port)
      assert.is_true(evtcp.run(5))
      assert.is_not_nil(c.localPort, "run returned before connecting was processed")
      c:close()
      l:terminate()
    end)

    it("a closed connection read with receive holds no input reservation", function()
      if sanitized then pending("RSS under AddressSanitizer includes its quarantine") return end
      local rss = sockopt.heap -- bytes malloc has handed out
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local n, kept, served = 200, {}, 0
      collectgarbage()
      local before = rss()
      H.go(function()
        for i = 1, n do
          evtcp.spawn(function()
            local c = assert(evtcp.dial("127.0.0.1", l.port))
            c:send("line ", i, "\nand the rest")
            kept[#kept + 1] = c
          end)
          local s = assert(l:accept(5))
          assert(s:receive("l"))
          kept[#kept + 1] = s
          s:close()
          served = served + 1
        end
      end, 30)
      local grew = rss() - before
      assert.are.equal(n, served)
      assert.is_true(grew < 8 * 1024 * 1024, ("the heap grew by %d bytes for %d closed connections"):format(grew, n))
      for _, c in ipairs(kept) do c:close() end
      l:terminate()
    end)

    it("listen with tls frees its context when a later step raises", function()
      local cert, key = self_signed()
      local code = ([[
        local evtcp = require("evtcp")
        local opts = setmetatable({ address = "127.0.0.1", tls = { cert = %q, key = %q } },
          { __index = function(_, k) if k == "onConnection" then error("boom") end end })
        for _ = 1, 3 do assert(not pcall(evtcp.listen, 0, opts)) end
        print("raised")
      ]]):format(cert, key)
      if sanitized then child_prints(code, "raised") return end -- LSan checks the child
      if not os.execute("command -v valgrind >/dev/null 2>&1") then pending("valgrind is not installed") return end
      local path = os.tmpname()
      local f = assert(io.open(path, "w")) f:write(code) f:close()
      local p = io.popen("valgrind -q --leak-check=full --errors-for-leak-kinds=definite " ..
        "--show-leak-kinds=definite --error-exitcode=9 lua5.4 " .. path .. " 2>&1")
      local out = p:read("a")
      local ok = p:close()
      os.remove(path)
      assert(ok, out)
      assert.matches("raised", out, 1, true)
    end)
  end)

  describe("TLS under a hostile peer", function()
    local function tls_server(log)
      local cert, key = self_signed()
      return assert(evtcp.listen(0, { address = "127.0.0.1", tls = { cert = cert, key = key },
        onConnection = function()
          return { onData = function(_, c) c:send(string.rep("r", 100000)) end,
                   onShutdown = function() log[#log + 1] = "shutdown" end,
                   onError = function(_, _, ev) log[#log + 1] = ev.error.kind end,
                   onTerminate = function() log[#log + 1] = "terminate" end }
        end }))
    end

    it("a server answering a client that sent a request and closed at once ends", function()
      local log = {}
      local l = tls_server(log)
      for _ = 1, 3 do
        evtcp.connect("127.0.0.1", l.port, { tls = { verify = false },
          onConnection = function(_, c) c:send("request") c:close() end, onError = function() end })
      end
      H.run_until(function() return #log == 6 end, "three server connections to end", 5)
      l:terminate()
      for i = 1, 6, 2 do
        assert.are.equal("terminate", log[i + 1])
        assert.is_true(log[i] == "reset" or log[i] == "shutdown", log[i])
      end
    end)

    it("a reset by the peer is an error of kind reset", function()
      local log = {}
      local l = tls_server(log)
      for _ = 1, 3 do
        evtcp.connect("127.0.0.1", l.port, { tls = { verify = false },
          onConnection = function(_, c) c:send("request") c:reset() end })
      end
      H.run_until(function() return #log == 6 end, "three server connections to end", 5)
      l:terminate()
      assert.are.same({ "reset", "terminate", "reset", "terminate", "reset", "terminate" }, log)
    end)
  end)

  describe("errors raised by callbacks", function()
    it("a second pending error is raised by the next run, none vanish", function()
      local server = H.server(function() return { onData = function(_, c) c:close() end } end)
      evtcp.connect("127.0.0.1", server.port, {
        onConnection = function(_, c) c:send("x") end,
        onShutdown = function() error("first") end,
        onTerminate = function() error("second") end,
      })
      local seen = {}
      for _ = 1, 10 do
        local ok, err = pcall(evtcp.run, 5)
        if ok then break end
        seen[#seen + 1] = tostring(err):match("(%a+)\n") or tostring(err)
      end
      server:terminate()
      assert.are.same({ "first", "second" }, seen)
    end)

    it("every error of many failing connections comes out of some run", function()
      local server = H.server(function() return { onData = function(_, c) c:close() end } end)
      local raised = 0
      for i = 1, 20 do
        evtcp.connect("127.0.0.1", server.port, {
          onConnection = function(_, c) c:send("x") error("c" .. i) end,
          onShutdown = function() error("s" .. i) end,
          onTerminate = function() error("t" .. i) end,
        })
      end
      for _ = 1, 200 do
        local ok = pcall(evtcp.run, 5)
        if ok then break end
        raised = raised + 1
      end
      server:terminate()
      assert.are.equal(60, raised)
    end)
  end)

  describe("options reach the socket", function()
    --- A client connected to a server whose handler has `options`: the
    -- client, the accepted connection and the listener.
    local function connected_pair(options)
      local accepted
      local server = H.server(function()
        local h = { onConnection = function(_, c) accepted = c end, onData = function() end }
        for k, v in pairs(options or {}) do h[k] = v end
        return h
      end)
      local c = evtcp.connect("127.0.0.1", server.port, { onData = function() end })
      H.run_until(function() return accepted ~= nil and c.localPort ~= nil end, "accepted")
      return c, accepted, server
    end

    it("noDelay and keepAlive on an accepted connection", function()
      local c, accepted, server = connected_pair({ noDelay = true, keepAlive = 7 })
      local fd = assert(sockopt.find(server.port, c.localPort), "the accepted socket")
      assert.are.equal(1, sockopt.get(fd, "nodelay"))
      assert.are.equal(1, sockopt.get(fd, "keepalive"))
      assert.are.equal(7, sockopt.get(fd, "keepidle"))
      c:close() accepted:close() server:terminate()
    end)

    it("an accepted connection without keepAlive has no SO_KEEPALIVE", function()
      local c, accepted, server = connected_pair()
      local fd = assert(sockopt.find(server.port, c.localPort))
      assert.are.equal(0, sockopt.get(fd, "keepalive"))
      assert.are.equal(0, sockopt.get(fd, "nodelay"))
      c:close() accepted:close() server:terminate()
    end)

    it("noDelay and keepAlive assigned on an open connection reach the socket", function()
      local c, accepted, server = connected_pair()
      local fd = assert(sockopt.find(c.localPort, server.port))
      c.noDelay = true
      c.keepAlive = 9
      assert.are.equal(1, sockopt.get(fd, "nodelay"))
      assert.are.equal(9, sockopt.get(fd, "keepidle"))
      assert.are.equal(1, sockopt.get(fd, "keepalive"))
      c.keepAlive = false
      assert.are.equal(0, sockopt.get(fd, "keepalive"))
      c:close() accepted:close() server:terminate()
    end)

    it("the default backlog is the system's somaxconn", function()
      local somaxconn = tonumber(H.read("/proc/sys/net/core/somaxconn"))
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local p = io.popen(H.peer .. "ss -ltnH 'sport = :" .. l.port .. "'")
      local line = p:read("a")
      p:close()
      local backlog = tonumber(line:match("^%S+%s+%d+%s+(%d+)"))
      l:terminate()
      assert.are.equal(somaxconn, backlog, line)
    end)
  end)

  describe("waiting", function()
    it("a top-level receive with a timeout on a paused connection does not spin", function()
      -- a listener without onConnection holds one client and stops: with the
      -- client paused, nothing at all is pending in the loop
      local server = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local c = assert(evtcp.dial("127.0.0.1", server.port))
      c:pause()
      local cpu = os.clock()
      local data, err = c:receive(nil, 0.5)
      cpu = os.clock() - cpu
      assert.is_nil(data)
      assert.are.equal("timeout", err)
      assert.is_true(cpu < 0.25, ("receive burnt %.2f s of CPU"):format(cpu))
      c:close() server:terminate()
    end)

    it("receive('l') scans a long line once: the bytes searched grow with the line, not its square", function()
      -- a complexity check that counts work, not time (a CPU-time ratio on
      -- small figures failed on a loaded machine): a line that arrives in
      -- 64 KiB pieces was rescanned from its start at every piece (O(n^2))
      local core = require("evtcp.core")
      local function scanned_for(mib)
        local l = assert(evtcp.listen(0, { address = "127.0.0.1", highWaterMark = 64 << 20 }))
        local piece = string.rep("x", 65536)
        local before, after, got
        H.go(function()
          local c = assert(evtcp.dial("127.0.0.1", l.port))
          evtcp.spawn(function()
            for _ = 1, mib * 16 do c:send(piece) end
            c:send("\n")
          end)
          local s = assert(l:accept(5))
          before = core._counters().scanned
          got = s:receive("l")
          after = core._counters().scanned
          s:close() c:close()
        end, 60)
        l:terminate()
        assert.are.equal(mib << 20, #got)
        return after - before
      end
      local scanned = scanned_for(32)
      -- each byte once, and the line end: rescanning from the start at
      -- each of 512 arrivals would be about 256 times the line
      assert.is_true(scanned >= 32 << 20, ("only %d bytes scanned"):format(scanned))
      assert.is_true(scanned <= (32 << 20) + 64, ("%d bytes scanned for a 32 MiB line"):format(scanned))
    end)

    it("receive('l') finds a CRLF split across arrivals", function()
      local server = H.server(function()
        return { onConnection = function(_, c)
          c:send("abc\r")
          evtcp.after(0.1, function() c:send("\ndef\r") end)
          evtcp.after(0.2, function() c:send("x\n") c:close() end)
        end }
      end)
      local lines = {}
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", server.port))
        for _ = 1, 2 do lines[#lines + 1] = assert(c:receive("l")) end
      end)
      server:terminate()
      assert.are.same({ "abc", "def\rx" }, lines)
    end)
  end)

  describe("misuse gets a clear error", function()
    local function err_of(f, ...)
      local ok, e = pcall(f, ...)
      assert.is_false(ok)
      return tostring(e)
    end

    it("Lua-layer methods check self", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local c = evtcp.connect("127.0.0.1", l.port)
      assert.matches("bad argument #1 to 'wait' %(TCPConnection expected", err_of(c.wait, 42))
      assert.matches("bad argument #1 to 'accept' %(TCPListener expected", err_of(l.accept, c))
      assert.matches("bad argument #1 to 'wait' %(TCPListener expected", err_of(l.wait, {}))
      assert.matches("bad argument #1 to 'receive'", err_of(function() c.receive("x") end))
      c:close() l:terminate()
    end)

    it("argument errors name the function called", function()
      assert.matches("to 'dial'", err_of(evtcp.dial, 42, 1))
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      local c = evtcp.connect("127.0.0.1", l.port)
      assert.matches("to 'receive'", err_of(c.receive, c, "bogus"))
      assert.matches("to 'receive'", err_of(c.receive, c, -1))
      assert.matches("to 'sleep'", err_of(evtcp.sleep, 0 / 0))
      assert.matches("to 'wait'", err_of(c.wait, c, 0 / 0))
      assert.matches("to 'accept'", err_of(l.accept, l, -1))
      assert.matches("to 'after'", err_of(function() evtcp.after(0 / 0, print) end))
      c:close() l:terminate()
    end)

    it("an onConnection that returns a non-table says so", function()
      local server = H.server(function() return 42 end)
      evtcp.connect("127.0.0.1", server.port, { onData = function() end, onShutdown = function() end })
      local ok, err = pcall(evtcp.run, 5)
      server:terminate()
      assert.is_false(ok)
      assert.matches("onConnection must return a handler table", tostring(err))
    end)

    it("a callback that is not a function is named", function()
      local server = H.server(function() return { onData = 17 } end)
      local c = evtcp.connect("127.0.0.1", server.port, { onConnection = function(_, c) c:send("x") end })
      local ok, err = pcall(evtcp.run, 5)
      c:close()
      server:terminate()
      assert.is_false(ok)
      assert.matches("onData is a number, not a function", tostring(err))
    end)

    it("dial returns the connection when it connected, even if a callback closed it", function()
      local server = H.server(function() return { onData = function() end } end)
      local conn, err
      H.go(function()
        conn, err = evtcp.dial("127.0.0.1", server.port, { onConnection = function(_, c) c:close() end })
      end)
      server:terminate()
      assert.is_not_nil(conn, tostring(err))
      assert.is_true(conn.closed)
    end)
  end)
end)
