-- The connection pool (API.md section 8): conn:setKeepAlive, the `pool`
-- option of dial/connect, reusedTimes. What is reused is checked on the
-- server's side, which counts the connections it accepted and sees each
-- one end, and on the client's local port.
local evtcp = require("evtcp")
local H = require("helper")

--- A server answering each chunk with "echo:<chunk>"; `sides` collects
-- its connections (each { conn =, ended = }).
local function server(options)
  local sides = {}
  local l = H.server(function()
    local side = {}
    sides[#sides + 1] = side
    return {
      onConnection = function(_, c) side.conn = c end,
      onData = function(_, c, ev) c:send("echo:" .. ev.data) end,
      onShutdown = function() side.ended = true end,
      onError = function() side.ended = true end,
    }
  end, options)
  return l, sides
end

--- One request on a connection from dial(): the answer.
local function request(c, what)
  assert(c:send(what))
  return c:receive(#what + 5, 5)
end

--- Waits in a coroutine until cond() holds (bounded).
local function wait_for(cond, what)
  for _ = 1, 1000 do
    if cond() then return end
    evtcp.sleep(0.01)
  end
  error("timed out waiting for " .. what, 2)
end

local function ended(sides)
  local n = 0
  for _, s in ipairs(sides) do if s.ended then n = n + 1 end end
  return n
end

describe("the connection pool", function()
  after_each(function()
    assert.is_true(H.cleanup(), "the loop did not finish after the spec")
  end)

  it("reuses a kept connection: the server accepts once, reusedTimes counts", function()
    local l, sides = server()
    H.go(function()
      local port
      for i = 0, 3 do
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        assert.are.equal(i, c.reusedTimes)
        port = port or c.localPort
        assert.are.equal(port, c.localPort)
        assert.are.equal("echo:r" .. i, request(c, "r" .. i))
        assert.is_true(c:setKeepAlive())
      end
    end)
    assert.are.equal(1, #sides)
    assert.are.equal(0, ended(sides))
    l:terminate()
    sides[1].conn:close()
  end)

  it("detaches the program's object: methods raise, closed is true, no event follows", function()
    local l, sides = server()
    local log = {}
    local c = evtcp.connect("127.0.0.1", l.port, {
      onConnection = function(_, conn) conn:send("x") end,
      onData = function(_, conn)
        log[#log + 1] = "data"
        assert.is_true(conn:setKeepAlive()) -- inside a callback too
      end,
      onShutdown = function() log[#log + 1] = "shutdown" end,
      onError = function() log[#log + 1] = "error" end,
      onTerminate = function() log[#log + 1] = "terminate" end,
    })
    H.run_until(function() return #log > 0 end, "the answer")
    for _, m in ipairs({ "send", "close", "reset", "shutdown", "pause", "setKeepAlive", "startTLS", "receive" }) do
      local ok, err = pcall(c[m], c, "x")
      assert.is_false(ok)
      assert.matches("evtcp: the connection was put in the pool %(setKeepAlive%)", err)
    end
    assert.is_true(c.closed)
    assert.is_nil(c.fd)
    assert.is_true(c:wait(1))
    do local _ <close> = c end -- a to-be-closed scope ends quietly
    evtcp.run(0.2)
    assert.are.same({ "data" }, log)
    assert.are.equal(0, ended(sides)) -- the socket lives on, in the pool
    l:terminate()
    sides[1].conn:close()
  end)

  it("takes a kept connection in the callback style too, onConnection from the loop", function()
    local l, sides = server()
    local got = {}
    local function once(n)
      local returned = false
      evtcp.connect("127.0.0.1", l.port, {
        onConnection = function(_, conn)
          got[#got + 1] = { reused = conn.reusedTimes, returned = returned }
          conn:send("c" .. n)
        end,
        onData = function(_, conn) conn:setKeepAlive() end,
      })
      returned = true
      H.run_until(function() return #got == n end, "onConnection")
      evtcp.run(0.1)
    end
    once(1)
    once(2)
    assert.are.same({ { reused = 0, returned = true }, { reused = 1, returned = true } }, got)
    assert.are.equal(1, #sides)
    l:terminate()
    sides[1].conn:close()
  end)

  it("drops a kept connection when the peer closes it: the next dial connects anew", function()
    local l, sides = server()
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", l.port))
      request(c, "a")
      assert.is_true(c:setKeepAlive())
      sides[1].conn:close()
      wait_for(function() return sides[1].conn.closed end, "the server's close")
      evtcp.sleep(0.1) -- the pool sees the FIN
      local c2 = assert(evtcp.dial("127.0.0.1", l.port))
      assert.are.equal(0, c2.reusedTimes)
      assert.are.equal("echo:b", request(c2, "b"))
      c2:close()
    end)
    assert.are.equal(2, #sides)
    l:terminate()
  end)

  it("drops a kept connection the peer sends to (a server speaking first is no idle one)", function()
    local l, sides = server()
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", l.port))
      request(c, "a")
      assert.is_true(c:setKeepAlive())
      sides[1].conn:send("unexpected")
      wait_for(function() return sides[1].ended end, "the pool to close it")
      local c2 = assert(evtcp.dial("127.0.0.1", l.port))
      assert.are.equal(0, c2.reusedTimes)
      assert.are.equal("echo:b", request(c2, "b"))
      c2:close()
    end)
    assert.are.equal(2, #sides)
    l:terminate()
  end)

  it("closes a kept connection after idleTimeout", function()
    local l, sides = server()
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", l.port))
      request(c, "a")
      assert.is_true(c:setKeepAlive(0.2))
      wait_for(function() return sides[1].ended end, "the idle timeout")
      local c2 = assert(evtcp.dial("127.0.0.1", l.port))
      assert.are.equal(0, c2.reusedTimes)
      c2:close()
    end)
    assert.are.equal(2, #sides)
    l:terminate()
  end)

  it("keeps at most poolSize per key, closing the one kept longest", function()
    local l, sides = server()
    H.go(function()
      local cs = {}
      for i = 1, 3 do
        cs[i] = assert(evtcp.dial("127.0.0.1", l.port))
        request(cs[i], "x" .. i)
      end
      local first = cs[1].localPort
      for i = 1, 3 do assert.is_true(cs[i]:setKeepAlive(10, 2)) end
      wait_for(function() return ended(sides) == 1 end, "the oldest to be closed")
      local again = {}
      for i = 1, 3 do again[i] = assert(evtcp.dial("127.0.0.1", l.port)) end
      local reused = 0
      for i = 1, 3 do
        if again[i].reusedTimes == 1 then reused = reused + 1 end
        assert.are_not.equal(first, again[i].localPort)
        again[i]:close()
      end
      assert.are.equal(2, reused)
    end)
    assert.is_true(sides[1].ended)
    assert.are.equal(4, #sides)
    l:terminate()
  end)

  it("keys by address and port unless `pool` names one", function()
    local l, sides = server()
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", l.port, { pool = "primary" }))
      request(c, "a")
      assert.is_true(c:setKeepAlive())
      local other = assert(evtcp.dial("127.0.0.1", l.port)) -- another key
      assert.are.equal(0, other.reusedTimes)
      other:close()
      local same = assert(evtcp.dial("127.0.0.1", l.port, { pool = "primary" }))
      assert.are.equal(1, same.reusedTimes)
      assert.are.equal("echo:b", request(same, "b"))
      same:close()
    end)
    assert.are.equal(2, #sides)
    l:terminate()
  end)

  it("keeps TLS sessions: no new handshake, the peer certificate still there", function()
    local tls, dir = H.self_signed()
    local handshakes = 0
    local l, sides = server({ tls = tls })
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", l.port, { tls = { verify = false } }))
      assert.are.equal("echo:t1", request(c, "t1"))
      local fingerprint = c.tls.peerCertificate.fingerprint
      assert.is_true(c:setKeepAlive())
      local plain = assert(evtcp.dial("127.0.0.1", l.port)) -- not TLS: not the same key
      assert.are.equal(0, plain.reusedTimes)
      plain:close()
      local again = assert(evtcp.dial("127.0.0.1", l.port, { tls = { verify = false } }))
      assert.are.equal(1, again.reusedTimes)
      assert.are.equal(fingerprint, again.tls.peerCertificate.fingerprint)
      for i = 2, 5 do assert.are.equal("echo:t" .. i, request(again, "t" .. i)) end
      again:close()
    end)
    for _, s in ipairs(sides) do if s.conn and s.conn.tls then handshakes = handshakes + 1 end end
    assert.are.equal(2, #sides) -- the TLS one, once, and the plain one
    assert.are.equal(1, handshakes)
    l:terminate()
    os.execute("rm -rf " .. dir)
  end)

  it("refuses what cannot be kept, closing it: unread data, a server's side, a closed one", function()
    local l, sides = server()
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", l.port))
      assert.are.equal("echo:a", request(c, "a"))
      sides[1].conn:send("more")
      assert.are.equal("m", c:receive(1, 5)) -- "ore" stays unread
      local ok, err = c:setKeepAlive()
      assert.is_nil(ok)
      assert.are.equal("cannot pool the connection: it has unread data", err)
      assert.is_true(c:wait(5))

      local d = assert(evtcp.dial("127.0.0.1", l.port))
      d:shutdown()
      ok, err = d:setKeepAlive()
      assert.is_nil(ok)
      assert.are.equal("cannot pool the connection: it was shut down", err)

      wait_for(function() return sides[2] and sides[2].conn end, "the server")
      ok, err = sides[2].conn:setKeepAlive()
      assert.is_nil(ok)
      assert.are.equal("cannot pool the connection: only connect's and dial's connections can be pooled", err)
      assert.is_true(sides[2].conn:wait(5))

      ok, err = c:setKeepAlive()
      assert.is_nil(ok)
      assert.are.equal("cannot pool the connection: closed", err)
    end)
    l:terminate()
  end)

  it("checks its arguments and the pool option", function()
    local l, sides = server()
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", l.port))
      assert.has_error(function() c:setKeepAlive(-1) end,
        "bad argument #1 to 'setKeepAlive' (idleTimeout must be a number of seconds >= 0)")
      assert.has_error(function() c:setKeepAlive(1, 0) end,
        "bad argument #2 to 'setKeepAlive' (poolSize must be an integer >= 1)")
      c:close()
    end)
    for _, v in ipairs({ 5, "", {} }) do
      local ok, err = pcall(evtcp.connect, "127.0.0.1", l.port, { pool = v })
      assert.is_false(ok)
      assert.matches("option 'pool' must be a non%-empty string", err)
    end
    l:terminate()
    assert.is_true(#sides <= 1)
  end)

  it("closes kept sockets at lua_close", function()
    local ok, out = H.lua_child([[
      local evtcp = require("evtcp")
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function()
        return { onData = function(_, c, ev) c:send(ev.data) end } end }))
      evtcp.spawn(function()
        for i = 1, 3 do
          local c = assert(evtcp.dial("127.0.0.1", l.port, { pool = "p" .. i % 2 }))
          c:send("x")
          c:receive(1, 5)
          assert(c:setKeepAlive())
        end
        l:terminate()
      end)
      evtcp.run(2)
      print("done")
      os.exit(0, true)
    ]])
    assert.is_true(ok, out)
    assert.matches("done", out)
  end)
end)
