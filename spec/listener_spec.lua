local evtcp = require("evtcp")
local H = require("helper")

describe("TCPListener", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  it("listens on a free port with port 0 and tells which", function()
    local l = H.server(function() return {} end)
    assert.is_true(l.port > 0)
    assert.are.equal("127.0.0.1", l.address)
    assert.is_false(l.closed)
    assert.are.equal(0, l.connections)
    assert.are.same({}, l.errors)
    assert.matches("TCPListener", tostring(l))
    assert.has_error(function() l.port = 1 end)
    assert.has_error(function() l.anything = 1 end)
    l:terminate()
  end)

  it("calls onConnection(listener, event) as a method, then the new connection's own onConnection", function()
    local order, seen = {}, {}
    local options = { address = "127.0.0.1" }
    function options:onConnection(listener, ev)
      seen.self, seen.listener, seen.ev = self, listener, ev
      order[#order + 1] = "listener"
      return { onConnection = function(_, conn, cev)
        order[#order + 1] = "connection " .. cev.type
        seen.conn_ip, seen.conn_port = cev.ip, cev.port
        conn:send("welcome")
        conn:close()
      end }
    end
    local l = assert(evtcp.listen(0, options))
    local rec = H.recorder()
    local client = evtcp.connect("127.0.0.1", l.port, rec)
    H.run_until(rec.terminated, "the client to be served")
    l:terminate()
    assert.are.same({ "listener", "connection connection" }, order)
    assert.are.equal(options, seen.self)
    assert.are.equal(l, seen.listener)
    assert.are.equal("connection", seen.ev.type)
    assert.are.equal("127.0.0.1", seen.ev.ip)
    assert.are.equal(client.localPort, seen.ev.port)
    assert.are.equal(client.localPort, seen.conn_port)
    assert.are.equal("welcome", rec.data())
  end)

  it("refuses a client when onConnection returns nil or false: closed at once", function()
    for _, answer in ipairs({ false, "nil" }) do
      local l = H.server(function() if answer then return nil end return false end)
      local rec = H.recorder()
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "the refused client to end")
      assert.are.equal(0, l.connections)
      assert.are.equal("terminate", rec.log[#rec.log])
      assert.is_nil(rec.count.onData)
      l:terminate()
    end
  end)

  it("counts live connections", function()
    local server_conns = {}
    local l = H.server(function()
      return { onConnection = function(_, c) server_conns[#server_conns + 1] = c end }
    end)
    local clients = {}
    for i = 1, 3 do clients[i] = evtcp.connect("127.0.0.1", l.port, { onShutdown = function() end }) end
    H.run_until(function() return l.connections == 3 end, "three connections")
    server_conns[1]:close()
    H.run_until(function() return l.connections == 2 end, "one to go away")
    for _, c in ipairs(clients) do c:close() end
    H.run_until(function() return l.connections == 0 end, "all to go away")
    l:terminate()
  end)

  it("terminate() frees the port, calls onTerminate once, and established connections go on", function()
    local terminated = 0
    local server_conn
    local l = H.server(function()
      return { onConnection = function(_, c) server_conn = c end,
               onData = function(_, c, ev) c:send(ev.data) end }
    end, { onTerminate = function(_, listener, ev)
      terminated = terminated + 1
      assert.are.equal("terminate", ev.type)
      assert.is_true(listener.closed)
    end })
    local port = l.port
    local rec = H.recorder()
    local client = evtcp.connect("127.0.0.1", port, rec)
    H.run_until(function() return server_conn ~= nil and rec.count.onConnection end, "the connection")
    l:terminate()
    l:terminate()
    l:close()
    assert.is_true(l.closed)
    assert.is_true(l:wait(1))
    -- the port is free again
    local again = assert(evtcp.listen(port, { address = "127.0.0.1" }))
    again:terminate()
    -- and the established connection still works
    client:send("still here")
    H.run_until(function() return rec.data() == "still here" end, "the echo after terminate")
    client:close()
    H.run_until(rec.terminated, "the client to end")
    assert.are.equal(1, terminated)
  end)

  it("listens on IPv6 ::1", function()
    if not H.has_ipv6() then pending("no IPv6 loopback here") return end
    local l = H.echo_server({ address = "::1" })
    assert.are.equal("::1", l.address)
    local rec = H.recorder({ onConnection = function(_, c) c:send("6") end, onData = function(_, c) c:close() end })
    evtcp.connect("::1", l.port, rec)
    H.run_until(rec.terminated, "the IPv6 echo")
    assert.are.equal("6", rec.data())
    l:terminate()
  end)

  it("takes a backlog", function()
    local l = H.echo_server({ backlog = 4 })
    local rec = H.recorder({ onConnection = function(_, c) c:close() end })
    evtcp.connect("127.0.0.1", l.port, rec)
    H.run_until(rec.terminated, "a connection")
    l:terminate()
  end)

  it("without onConnection is not anchored and lets clients wait in the backlog", function()
    local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
    assert.is_true(evtcp.run(1)) -- nothing keeps the loop busy
    local rec = H.recorder()
    local c = evtcp.connect("127.0.0.1", l.port, rec)
    H.run_until(function() return rec.count.onConnection end, "the kernel to accept")
    evtcp.sleep(0.05)
    assert.are.same({ "connection" }, rec.log)
    c:close()
    l:terminate()
  end)

  it("is closed by <close> at the end of the scope", function()
    local port
    do
      local l <close> = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function() end }))
      port = l.port
    end
    local again = assert(evtcp.listen(port, { address = "127.0.0.1" }))
    again:terminate()
  end)

  it("options that would do nothing or take anything are argument errors that name the port as #1", function()
    -- the port is argument #1 (listen's own userdata sits first inside)
    assert.has_error(function() evtcp.listen(1.5, {}) end,
      "bad argument #1 to 'listen' (number has no integer representation)")
    -- a connect timeout does not apply to a listener: it was read and ignored
    assert.has_error(function() evtcp.listen(0, { timeout = 5 }) end,
      "bad argument #2 to 'listen' (option 'timeout' is a connect timeout, for connect and dial; a listener "
      .. "has none (readTimeout and writeTimeout apply to accepted connections))")
    -- reusePort took any value; it is a boolean, as ipv6Only and proxyProtocol
    for _, name in ipairs({ "reusePort", "ipv6Only", "proxyProtocol" }) do
      assert.has_error(function() evtcp.listen(0, { [name] = "yes" }) end,
        "bad argument #2 to 'listen' (option '" .. name .. "' must be a boolean)")
    end
    local l = assert(evtcp.listen(0, { address = "127.0.0.1", reusePort = false, ipv6Only = false }))
    l:terminate()
    evtcp.run(1)
  end)
end)
