-- Byte counters and IPv6-only listeners (issue 11), read back from the
-- traffic and from the kernel.
local evtcp = require("evtcp")
local H = require("helper")
local sockopt = require("sockopt")

describe("sockets", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  it("bytesRead and bytesWritten count the payload both ways", function()
    local server, conns = H.echo_server()
    local payload = H.bytes((1 << 20) + 10, 3)
    local got = 0
    local c = evtcp.connect("127.0.0.1", server.port, {
      onConnection = function(_, conn) conn:send(payload, 12345) end,
      onData = function(_, _, ev) got = got + #ev.data end })
    assert.are.equal(0, c.bytesRead)
    H.run_until(function() return got == #payload + 5 end, "the echo")
    local s = conns[1].conn
    assert.are.equal(#payload + 5, c.bytesWritten)
    assert.are.equal(#payload + 5, c.bytesRead)
    assert.are.equal(#payload + 5, s.bytesRead)
    assert.are.equal(#payload + 5, s.bytesWritten)
    c:close() server:terminate()
  end)

  it("a coroutine's sends before it next waits go out together, the first at once (strace)", function()
    local out, trace = H.strace_lua([[
      local evtcp = require("evtcp")
      local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      evtcp.spawn(function()
        local s = l:accept()
        s:receive(2)                                -- "go"
        for i = 1, 16 do s:send(("reply %02d\n"):format(i)) end -- pipelined answers
        s:close()
        l:close()
      end)
      evtcp.spawn(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        c:send("go")
        local all = c:receive("a")
        local want = {}
        for i = 1, 16 do want[i] = ("reply %02d\n"):format(i) end
        print(all == table.concat(want) and "intact" or ("damaged: " .. all))
      end)
      evtcp.run(5)
    ]], "sendmsg,writev,write,sendto")
    if not out then pending(trace) return end
    local sendmsg, writes = 0, 0
    for _, line in ipairs(trace) do
      if line:find("sendmsg%(") then sendmsg = sendmsg + 1 end
      if line:find("writev%(") then writes = writes + 1 end
    end
    assert.matches("intact", out)
    -- the client's "go" and the server's first reply are sent at once; the
    -- other 15 replies leave in one writev (16 sendmsg calls before)
    assert.is_true(sendmsg <= 2, ("%d sendmsg calls"):format(sendmsg))
    assert.is_true(writes >= 1 and writes <= 2, ("%d writev calls"):format(writes))
  end)

  it("bytesWritten does not count what reset() dropped", function()
    local l = assert(evtcp.listen(0, { address = "127.0.0.1" })) -- nobody reads
    local c = assert(evtcp.dial("127.0.0.1", l.port))
    c:send(string.rep("d", 32 << 20))
    local queued = c.bufferedAmount
    assert.is_true(queued > 0)
    c:reset()
    evtcp.run(1)
    assert.are.equal((32 << 20) - queued, c.bytesWritten)
    l:terminate()
  end)

  it("localAddress and localPort bind the outgoing socket, in both styles", function()
    local seen
    local server = H.server(function(ev) seen = { ev.ip, ev.port } return { onData = function() end } end)
    local port = H.free_port()
    local c = evtcp.connect("127.0.0.1", server.port, { localAddress = "127.0.0.2", localPort = port,
                                                       onData = function() end })
    H.run_until(function() return seen ~= nil end, "the server to see the client")
    assert.are.same({ "127.0.0.2", port }, seen)
    assert.are.equal("127.0.0.2", c.localAddress)
    assert.are.equal(port, c.localPort)
    local d
    H.go(function() d = assert(evtcp.dial("127.0.0.1", server.port, { localAddress = "127.0.0.3" })) end)
    assert.are.equal("127.0.0.3", d.localAddress)
    -- a local port in use is an error event, not a raise
    local e = evtcp.connect("127.0.0.1", server.port, { localAddress = "127.0.0.2", localPort = port,
                                                       onError = function() end })
    H.run_until(function() return e.closed end, "the bind to fail")
    assert.matches("in use", e.errors[1].message)
    c:close() d:close() server:terminate()
  end)

  it("checks localAddress and localPort", function()
    local function err(opts)
      local ok, e = pcall(function() evtcp.connect("127.0.0.1", 1, opts) end)
      assert.is_false(ok)
      return e
    end
    assert.matches("option 'localAddress' must be an IP address", err({ localAddress = "nowhere" }))
    assert.matches("option 'localPort' must be an integer in 0..65535", err({ localPort = 70000 }))
  end)

  it("ipv6Only sets IPV6_V6ONLY on the listening socket; otherwise it is dual-stack", function()
    if not H.has_ipv6() then pending("no IPv6 on this machine") return end
    -- the wildcard: Linux makes a socket bound to ::1 IPv6-only whatever the
    -- option says. It listens for a moment and gets no traffic.
    for _, only in ipairs({ true, false }) do
      local l = assert(evtcp.listen(0, { address = "::", ipv6Only = only }))
      local fd = assert(sockopt.listening(l.port))
      assert.are.equal(only and 1 or 0, sockopt.get(fd, "v6only"))
      l:terminate()
    end
    local ok, err = pcall(function() evtcp.listen(0, { address = "::1", ipv6Only = "yes" }) end)
    assert.is_false(ok)
    assert.matches("option 'ipv6Only' must be a boolean", err)
  end)
end)
