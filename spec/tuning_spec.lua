-- TCP tuning (section 8): keepAlive's idle/interval/count, userTimeout,
-- setOption/getOption, conn.fd and fastOpen - each read back from the
-- kernel (spec/sockopt.c), for clients and for accepted connections.
local evtcp = require("evtcp")
local H = require("helper")
local sockopt = require("sockopt")

-- A connected pair: the client made with `options`, the server side
-- accepted with the listener's `defaults`; fn(client, server, cfd, sfd)
-- runs while both are open, sfd/cfd found from outside.
local function with_pair(options, defaults, fn)
  defaults = defaults or {}
  defaults.address = "127.0.0.1"
  local l = assert(evtcp.listen(0, defaults))
  H.go(function()
    local c = assert(evtcp.dial("127.0.0.1", l.port, options or {}))
    local s = l:accept(10)
    local cfd = assert(sockopt.find(c.localPort, l.port))
    local sfd = assert(sockopt.find(l.port, c.localPort))
    fn(c, s, cfd, sfd)
    c:close()
    s:close()
  end)
  l:terminate()
end

describe("TCP tuning", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  describe("keepAlive = { idle, interval, count }", function()
    it("sets all three on a client's socket and reads back as given", function()
      with_pair({ keepAlive = { idle = 7, interval = 3, count = 4 } }, nil, function(c, _, cfd)
        assert.are.same({ 1, 7, 3, 4 }, { sockopt.get(cfd, "keepalive"), sockopt.get(cfd, "keepidle"),
          sockopt.get(cfd, "keepintvl"), sockopt.get(cfd, "keepcnt") })
        assert.are.same({ idle = 7, interval = 3, count = 4 }, c.keepAlive)
      end)
    end)

    it("as a listener default on accepted sockets, and assignable", function()
      with_pair(nil, { keepAlive = { interval = 2, count = 9 } }, function(_, s, _, sfd)
        assert.are.same({ 1, 2, 9 }, { sockopt.get(sfd, "keepalive"), sockopt.get(sfd, "keepintvl"),
          sockopt.get(sfd, "keepcnt") })
        s.keepAlive = { idle = 11, interval = 5, count = 2 }
        assert.are.same({ 11, 5, 2 }, { sockopt.get(sfd, "keepidle"), sockopt.get(sfd, "keepintvl"),
          sockopt.get(sfd, "keepcnt") })
        s.keepAlive = false
        assert.are.equal(0, sockopt.get(sfd, "keepalive"))
        assert.is_false(s.keepAlive)
      end)
    end)

    it("bad tables raise naming the option", function()
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { keepAlive = { idle = 0 } }) end,
        "bad argument #3 to 'connect' (option 'keepAlive' idle must be 1..32767 seconds)")
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { keepAlive = { count = 500 } }) end,
        "bad argument #3 to 'connect' (option 'keepAlive' count must be 1..127 probes)")
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { keepAlive = { intervall = 1 } }) end,
        "bad argument #3 to 'connect' (option 'keepAlive' takes only idle, interval and count)")
      assert.has_error(function() evtcp.listen(0, { keepAlive = "yes" }) end,
        "bad argument #2 to 'listen' (option 'keepAlive' must be a number of seconds, a boolean or { idle, interval, count })")
    end)
  end)

  describe("userTimeout", function()
    it("sets TCP_USER_TIMEOUT on clients and accepted sockets, assignable", function()
      with_pair({ userTimeout = 2.5 }, { userTimeout = 7 }, function(c, s, cfd, sfd)
        assert.are.equal(2500, sockopt.get(cfd, "user_timeout"))
        assert.are.equal(7000, sockopt.get(sfd, "user_timeout"))
        assert.are.equal(2.5, c.userTimeout)
        s.userTimeout = 0.25
        assert.are.equal(250, sockopt.get(sfd, "user_timeout"))
        assert.are.equal(0.25, s.userTimeout)
        s.userTimeout = nil
        assert.are.equal(0, sockopt.get(sfd, "user_timeout"))
        assert.is_nil(s.userTimeout)
      end)
    end)

    it("bad values raise", function()
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { userTimeout = -1 }) end,
        "bad argument #3 to 'connect' (option 'userTimeout' must be 0..2147483 seconds)")
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { userTimeout = "1" }) end,
        "bad argument #3 to 'connect' (option 'userTimeout' must be a number of seconds)")
    end)
  end)

  describe("setOption / getOption", function()
    it("set and read back the socket itself, on both sides", function()
      with_pair(nil, nil, function(c, s, cfd, sfd)
        assert.is_true(c:setOption("rcvbuf", 65536))
        assert.are.equal(sockopt.get(cfd, "rcvbuf"), c:getOption("rcvbuf"))
        assert.are.equal(131072, sockopt.get(cfd, "rcvbuf")) -- Linux doubles it
        assert.is_true(s:setOption("tos", 0x10))
        assert.are.equal(0x10, sockopt.get(sfd, "tos"))
        assert.are.equal(0x10, s:getOption("tos"))
        assert.is_true(c:setOption("ttl", 17))
        assert.are.equal(17, sockopt.get(cfd, "ttl"))
        assert.is_true(c:setOption("linger", 3))
        assert.are.equal(3, sockopt.get(cfd, "linger"))
        assert.are.equal(3, c:getOption("linger"))
        assert.is_true(c:setOption("linger", false))
        assert.are.equal(-1, sockopt.get(cfd, "linger"))
        assert.is_false(c:getOption("linger"))
        assert.is_true(s:setOption("quickack", true))
        assert.is_true(s:setOption("nodelay", true))
        assert.are.equal(1, sockopt.get(sfd, "nodelay"))
        assert.is_true(s.noDelay)
        local ok = c:setOption("mark", 7) -- needs CAP_NET_ADMIN: true as root, else nil and why
        if ok then assert.are.equal(7, sockopt.get(cfd, "mark")) end
        assert.is_true(c:setOption("bindToDevice", "lo"))
        assert.are.equal("lo", c:getOption("bindToDevice"))
      end)
    end)

    it("an unknown name or a bad value is an argument error; a closed connection raises", function()
      with_pair(nil, nil, function(c)
        assert.has_error(function() c:setOption("rcvbufsize", 1) end)
        local ok, err = pcall(c.getOption, c, "nope")
        assert.is_false(ok)
        assert.matches("bad argument #2 to '.-getOption' %(no socket option 'nope' here %(there are: rcvbuf, sndbuf, linger", err)
        assert.has_error(function() c:setOption("rcvbuf", "big") end)
        assert.has_error(function() c:setOption("linger", true) end)
        c:close()
        assert.has_error(function() c:getOption("rcvbuf") end, "evtcp: socket option on a connection that is not open")
      end)
    end)
  end)

  describe("conn.fd", function()
    it("is the socket while open and nil once closed", function()
      with_pair(nil, nil, function(c, s, cfd, sfd)
        assert.are.equal(cfd, c.fd)
        assert.are.equal(sfd, s.fd)
        s:close()
        evtcp.sleep(0.05)
        assert.is_nil(s.fd)
      end)
    end)
  end)

  describe("fastOpen", function()
    it("a listener's fastOpen = qlen sets TCP_FASTOPEN on its socket", function()
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", fastOpen = 16 }))
      assert.are.equal(16, sockopt.get(assert(sockopt.listening(l.port)), "fastopen"))
      l:terminate()
      l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
      assert.are.equal(0, sockopt.get(assert(sockopt.listening(l.port)), "fastopen"))
      l:terminate()
      assert.has_error(function() evtcp.listen(0, { fastOpen = true }) end,
        "bad argument #2 to 'listen' (option 'fastOpen' must be an integer in 1..65535)")
    end)

    it("a connection's fastOpen = true sets TCP_FASTOPEN_CONNECT and still carries data both ways", function()
      local l = H.echo_server({ fastOpen = 8 })
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port, { fastOpen = true }))
        c:send("hello in the SYN")
        assert.are.equal("hello in the SYN", c:receive(16, 5))
        assert.are.equal(1, sockopt.get(c.fd, "fastopen_connect"))
        c:close()
        local p = assert(evtcp.dial("127.0.0.1", l.port))
        assert.are.equal(0, sockopt.get(p.fd, "fastopen_connect"))
        p:close()
      end)
      l:terminate()
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { fastOpen = 1 }) end,
        "bad argument #3 to 'connect' (option 'fastOpen' must be a boolean)")
    end)
  end)
end)
