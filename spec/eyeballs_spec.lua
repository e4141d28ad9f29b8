-- Connecting to a name with several addresses (API.md section 8, Happy
-- Eyeballs, RFC 8305), against addresses that drop SYNs: a listener whose
-- accept queue is full (sockopt.blackhole) is, to a connect, a host that
-- does not answer. The names come from a hosts file of the spec's own
-- (evtcp.setResolver). What the kernel sees is read from /proc/net/tcp:
-- the attempts still connecting (SYN_SENT) to each address.
local evtcp = require("evtcp")
local H = require("helper")
local sockopt = require("sockopt")

--- A hosts file naming `name` with the addresses, in order.
local function hosts(name, ...)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  for _, ip in ipairs({ ... }) do f:write(ip, " ", name, "\n") end
  f:close()
  assert(evtcp.setResolver({ hosts = path }))
  os.remove(path)
end

--- Listeners on the same port of several addresses: for each address
-- "hole" (drops SYNs), "server" (an evtcp server that answers "hello from
-- <ip>" and closes) or "none" (refuses). Returns the port and a
-- function that frees them.
local function addresses(kinds)
  for _ = 1, 50 do -- a port free on every address
    local fds, listeners, port, ok = {}, {}, nil, true
    for _, k in ipairs(kinds) do
      local ip, kind = k[1], k[2]
      if kind == "hole" then
        local p, l, filler = sockopt.blackhole(ip, port or 0)
        if not p then ok = false break end
        port = p
        fds[#fds + 1], fds[#fds + 2] = l, filler
        k.listener_fd = l
      elseif kind == "server" then
        local l = evtcp.listen(port or 0, { address = ip, onConnection = function()
          return { onConnection = function(_, c) c:send("hello from " .. ip) c:close() end }
        end })
        if not l then ok = false break end
        port = l.port
        listeners[#listeners + 1] = l
      end
    end
    local function free()
      for _, fd in ipairs(fds) do sockopt.close(fd) end
      for _, l in ipairs(listeners) do l:terminate() end
    end
    if ok and port then return port, free end
    free()
  end
  error("no port free on every address")
end

--- Runs the loop until done() or limit seconds pass.
local function run_for(limit, done)
  local deadline = require("evtcp.core").now() + limit
  while not done() and require("evtcp.core").now() < deadline do evtcp.step(0.02) end
end

describe("connecting to a name with several addresses (Happy Eyeballs)", function()
  after_each(function()
    assert.is_true(evtcp.run(10), "the loop did not finish after the spec")
  end)

  it("a first address that drops packets costs attemptDelay, not the timeout", function()
    local port, free = addresses({ { "127.0.0.2", "hole" }, { "127.0.0.3", "server" } })
    hosts("silent-first.test", "127.0.0.2", "127.0.0.3")
    local got, err
    local c = evtcp.connect("silent-first.test", port, {
      timeout = 5,
      onData = function(_, _, ev) got = (got or "") .. ev.data end,
      onError = function(_, _, ev) err = ev.error end,
    })
    -- both attempts are in flight: the first was not abandoned for the second
    local both = false
    run_for(5, function()
      both = both or (sockopt.syn_sent("127.0.0.2", port) == 1 and c.closed == false)
      return c.closed
    end)
    assert.is_nil(err)
    assert.are.equal("hello from 127.0.0.3", got)
    assert.are.equal("127.0.0.3", c.remoteAddress)
    assert.is_true(both)
    -- the loser is closed, unseen: nothing still connects to the silent address
    assert.are.equal(0, sockopt.syn_sent("127.0.0.2", port))
    free()
  end)

  it("alternates the families, starting with the resolver's first address's", function()
    -- resolver order: 127.0.0.2, 127.0.0.3, ::1; tried: 127.0.0.2, ::1, 127.0.0.3
    local port, free = addresses({ { "127.0.0.2", "hole" }, { "127.0.0.3", "server" }, { "::1", "server" } })
    hosts("both-families.test", "127.0.0.2", "127.0.0.3", "::1")
    local c, got
    evtcp.spawn(function()
      c = assert(evtcp.dial("both-families.test", port, { timeout = 5 }))
      got = c:receive("a", 5)
      free()
    end)
    assert.is_true(evtcp.run(10))
    assert.are.equal("::1", c.remoteAddress)
    assert.are.equal("hello from ::1", got)
  end)

  it("never abandons a pending attempt: a slow first address that answers at last wins", function()
    local holes = { { "127.0.0.2", "hole" }, { "127.0.0.3", "hole" } }
    local port, free = addresses(holes)
    hosts("slow-first.test", "127.0.0.2", "127.0.0.3")
    local c = evtcp.connect("slow-first.test", port, { timeout = 20, attemptDelay = 0.1 })
    run_for(5, function() return sockopt.syn_sent("127.0.0.3", port) == 1 end)
    assert.are.equal(1, sockopt.syn_sent("127.0.0.2", port), "the first attempt was given up")
    assert.are.equal(1, sockopt.syn_sent("127.0.0.3", port), "the second attempt did not start")
    -- the first address gets room: its SYN's retransmission connects
    local taken = assert(sockopt.accept(holes[1].listener_fd))
    local up = false
    c.handler = { onConnection = function() up = true end }
    run_for(15, function() return up or c.closed end)
    assert.is_true(up)
    assert.are.equal("127.0.0.2", c.remoteAddress)
    assert.are.equal(0, sockopt.syn_sent("127.0.0.3", port))
    c:close()
    sockopt.close(taken)
    free()
  end)

  it("bounds the whole race by timeout, and closes every attempt", function()
    local port, free = addresses({ { "127.0.0.2", "hole" }, { "127.0.0.3", "hole" } })
    hosts("all-silent.test", "127.0.0.2", "127.0.0.3")
    local ok, err
    evtcp.spawn(function()
      ok, err = evtcp.dial("all-silent.test", port, { timeout = 0.6, attemptDelay = 0.1 })
    end)
    assert.is_true(evtcp.run(10))
    assert.is_nil(ok)
    assert.are.equal("timeout", err.kind)
    assert.are.equal(0, sockopt.syn_sent("127.0.0.2", port))
    assert.are.equal(0, sockopt.syn_sent("127.0.0.3", port))
    free()
  end)

  it("waits attemptDelay before the next address", function()
    local port, free = addresses({ { "127.0.0.2", "hole" }, { "127.0.0.3", "server" } })
    hosts("long-delay.test", "127.0.0.2", "127.0.0.3")
    local ok, err = evtcp.dial("long-delay.test", port, { timeout = 0.5, attemptDelay = 30 })
    assert.is_nil(ok)
    assert.are.equal("timeout", err.kind) -- the second address was never tried
    free()
  end)

  it("moves on at once from an address that refuses", function()
    local port, free = addresses({ { "127.0.0.2", "none" }, { "127.0.0.3", "server" } })
    hosts("refusing-first.test", "127.0.0.2", "127.0.0.3")
    local c = assert(evtcp.dial("refusing-first.test", port, { timeout = 10, attemptDelay = 30 }))
    assert.are.equal("127.0.0.3", c.remoteAddress)
    assert.are.equal("hello from 127.0.0.3", c:receive("a", 5))
    free()
  end)

  it("races TLS connections too: the handshake runs on the winner", function()
    local cert, dir = H.self_signed()
    local port, free = addresses({ { "127.0.0.2", "hole" } })
    local l = assert(evtcp.listen(port, { address = "127.0.0.3", tls = { cert = cert.cert, key = cert.key },
      onConnection = function() return { onConnection = function(_, c) c:send("over tls") c:close() end } end }))
    hosts("tls-race.test", "127.0.0.2", "127.0.0.3")
    local c = assert(evtcp.dial("tls-race.test", port, { timeout = 5, tls = { verify = false } }))
    assert.are.equal("127.0.0.3", c.remoteAddress)
    assert.is_table(c.tls)
    assert.are.equal("over tls", c:receive("a", 5))
    l:terminate()
    free()
    os.execute("rm -rf " .. dir)
  end)

  it("checks attemptDelay", function()
    for _, v in ipairs({ -1, "x", 0 / 0, {} }) do
      local ok, err = pcall(evtcp.connect, "127.0.0.1", 1, { attemptDelay = v })
      assert.is_false(ok)
      assert.matches("bad argument #3 to '[%w.]*connect' %(option 'attemptDelay' must be", err)
    end
  end)
end)

describe("evtcp.setResolver", function()
  it("answers the names of a hosts file, beside the system's", function()
    hosts("from-our-file.test", "127.0.0.9", "::1")
    assert.are.same({ "127.0.0.9", "::1" }, evtcp.resolve("from-our-file.test", 5))
    assert.are.equal("127.0.0.1", evtcp.resolve("localhost", 5)[1])
  end)

  it("reports a file it cannot read, and changes nothing", function()
    local before = evtcp.resolve("localhost", 5)
    local ok, msg = evtcp.setResolver({ hosts = "/nonexistent/hosts" })
    assert.is_nil(ok)
    assert.are.equal("hosts file '/nonexistent/hosts': No such file or directory", msg)
    assert.are.same(before, evtcp.resolve("localhost", 5))
  end)

  it("raises on an unknown option or a bad value", function()
    assert.has_error(function() evtcp.setResolver({ host = "/etc/hosts" }) end,
      "bad argument #1 to 'setResolver' (unknown option 'host')")
    assert.has_error(function() evtcp.setResolver({ hosts = 5 }) end,
      "bad argument #1 to 'setResolver' (option 'hosts' must be a string)")
    assert.has_error(function() evtcp.setResolver("x") end,
      "bad argument #1 to 'setResolver' (table expected, got string)")
  end)
end)
