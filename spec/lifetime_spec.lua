local evtcp = require("evtcp")
local H = require("helper")

describe("lifetime", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  it("keeps a connection with callbacks alive without a reference, whatever the GC does", function()
    local server = H.echo_server()
    local done = {}
    for i = 1, 5 do
      evtcp.connect("127.0.0.1", server.port, {
        onConnection = function(_, c) collectgarbage() c:send("n" .. i) end,
        onData = function(_, c, ev) collectgarbage() done[#done + 1] = ev.data c:close() end,
      })
    end
    for _ = 1, 10 do collectgarbage() end
    H.run_until(function() collectgarbage() return #done == 5 end, "five echoes")
    server:terminate()
    table.sort(done)
    assert.are.same({ "n1", "n2", "n3", "n4", "n5" }, done)
  end)

  it("keeps a listener with onConnection alive without a reference", function()
    local port, seen
    do
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function(_, listener)
        seen = listener
        return { onData = function(_, c, ev) c:send(ev.data) end }
      end }))
      port = l.port
    end
    for _ = 1, 5 do collectgarbage() end
    local rec = H.recorder({ onConnection = function(_, c) c:send("alive") end,
                             onData = function(_, c) c:close() end })
    evtcp.connect("127.0.0.1", port, rec)
    H.run_until(rec.terminated, "the unreferenced listener to answer")
    assert.are.equal("alive", rec.data())
    seen:terminate()
  end)

  it("releases a connection without callbacks or references: the peer sees it close", function()
    local server, conns = H.echo_server()
    do
      local c = evtcp.connect("127.0.0.1", server.port)
      H.run_until(function() return conns[1] and conns[1].count.onConnection end, "the server to accept")
      assert.is_truthy(c)
    end
    H.run_until(function() collectgarbage() return conns[1].terminated() end, "the collected socket to close")
    assert.are.equal("close", conns[1].log[#conns[1].log - 1])
    server:terminate()
  end)

  it("flushes queued output of an unreferenced connection before releasing it", function()
    local got = {}
    local closed = false
    local server = H.server(function()
      return { onData = function(_, _, ev) got[#got + 1] = ev.data end,
               onShutdown = function() closed = true end }
    end)
    local payload = H.bytes(3 * 1024 * 1024, 5)
    do
      local c = evtcp.connect("127.0.0.1", server.port)
      c:send(payload)
    end
    H.run_until(function() collectgarbage() return closed end, "the flush and the close", 30)
    server:terminate()
    assert.is_true(table.concat(got) == payload)
  end)

  it("survives collectgarbage() in every callback and between every step of a 1 MiB echo", function()
    local server = H.server(function()
      return { onData = function(_, c, ev) collectgarbage() c:send(ev.data) end,
               onShutdown = function() collectgarbage() end,
               onTerminate = function() collectgarbage() end }
    end)
    local payload = H.bytes(1024 * 1024, 8)
    local rec
    rec = H.recorder({
      onConnection = function(_, c) collectgarbage() c:send(payload) end,
      onData = function(_, c) collectgarbage() if #rec.data() == #payload then c:close() end end,
      onShutdown = function() collectgarbage() end,
      onTerminate = function() collectgarbage() end,
    })
    evtcp.connect("127.0.0.1", server.port, rec)
    H.run_until(function() collectgarbage() return rec.terminated() end, "the echo", 30)
    server:terminate()
    assert.is_true(rec.data() == payload)
  end)

  it("closes a connection declared <close> at the end of its scope", function()
    local server, conns = H.echo_server()
    do
      local c <close> = evtcp.connect("127.0.0.1", server.port, { onShutdown = function() end })
      H.run_until(function() return conns[1] and conns[1].count.onConnection end, "the server to accept")
      c:send("last words")
    end
    H.run_until(function() return conns[1].terminated() end, "the server side to end")
    server:terminate()
    assert.are.equal("last words", conns[1].data())
  end)

  local live_objects_at_close = [[
    local evtcp = require("evtcp")
    local l = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
      return { onData = function(_, c, ev) c:send(ev.data) end }
    end }))
    local quiet = assert(evtcp.listen(0, { address = "127.0.0.1" }))
    local conns = {}
    for i = 1, 4 do
      conns[i] = evtcp.connect("127.0.0.1", l.port, { onData = function() end,
        onTerminate = function() error("no Lua may run at lua_close") end })
      conns[i]:send(string.rep("x", 200000))
    end
    evtcp.connect("localhost", l.port, { onShutdown = function() end }) -- via the resolver
    evtcp.connect("127.0.0.1", quiet.port, {}):send(string.rep("y", 5000000))
    evtcp.after(100, function() error("no Lua may run at lua_close") end)
    evtcp.step(0.05)
    evtcp.step(0.05)
    print("closing with " .. require("evtcp.core").activeCount() .. " anchored objects")
  ]]

  it("lua_close with live connections, listeners and timers frees all and calls no Lua", function()
    local ok, out = H.lua_child(live_objects_at_close)
    assert.is_true(ok, out)
    assert.matches("^closing with %d+ anchored objects\n$", out)
  end)

  it("lua_close leaks nothing under valgrind", function()
    if os.getenv("EVTCP_SANITIZE") then pending("valgrind does not run under AddressSanitizer") return end
    if not os.execute("command -v valgrind >/dev/null 2>&1") then pending("valgrind is not installed") return end
    local ok, out = H.lua_child([[
      local f = io.popen("valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect " ..
        "--error-exitcode=3 lua5.4 -e " .. string.format("%q", ]] .. string.format("%q", live_objects_at_close) .. [[) .. " 2>&1")
      local text = f:read("a")
      local ok, _, code = f:close()
      print(ok and "clean" or ("valgrind exit " .. tostring(code) .. "\n" .. text))
    ]])
    assert.is_true(ok, out)
    assert.matches("^clean\n$", out)
  end)
end)
