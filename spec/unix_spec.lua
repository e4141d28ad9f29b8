-- Unix domain sockets ("unix:/path", "unix:@name") and adopted listening
-- sockets (evtcp.listen(nil, {fd = n})): the same TCPConnection and
-- TCPListener, checked against the file system and real peers (socat).
local evtcp = require("evtcp")
local H = require("helper")
local sockopt = require("sockopt")

local dir

local function exists(path)
  return os.execute("test -e " .. path) == true
end

local function is_socket(path)
  return os.execute("test -S " .. path) == true
end

local function contents(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

describe("Unix domain sockets", function()
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
  end)
  after_each(function()
    os.execute("rm -rf " .. dir)
    assert.is_true(H.cleanup(), "the loop did not finish after the spec")
  end)

  it("carries an echo in callback style; the path is the address and ports are nil", function()
    local path = dir .. "/echo.sock"
    local seen = {}
    local l = assert(evtcp.listen("unix:" .. path, {
      onConnection = function(_, _, ev)
        seen.accept_ip, seen.accept_port = ev.ip, ev.port
        return H.recorder({
          onConnection = function(_, c, e)
            seen.server = { c.remoteAddress, c.remotePort, c.localAddress, c.localPort, e.ip }
          end,
          onData = function(_, c, e) c:send(e.data:upper()) end,
        })
      end,
    }))
    assert.equal(path, l.address)
    assert.is_nil(l.port)
    assert.is_true(is_socket(path))
    local rec = H.recorder({
      onConnection = function(_, c, e)
        seen.client = { c.remoteAddress, c.remotePort, c.localPort, e.ip, e.port }
        c:send("hello over unix")
      end,
      onData = function(_, c) c:close() end,
    })
    evtcp.connect("unix:" .. path, nil, rec)
    H.run_until(rec.terminated, "the client to finish")
    l:terminate()
    H.run()
    assert.same({ "connection", "data", "close", "terminate" }, rec.log)
    assert.equal("HELLO OVER UNIX", rec.data())
    assert.equal(path, seen.accept_ip)
    assert.is_nil(seen.accept_port)
    assert.same({ path, nil, path, nil, path }, seen.server)
    assert.same({ path, nil, nil, path, nil }, seen.client)
    assert.is_false(exists(path), "terminate() removes the socket file")
  end)

  it("works in blocking style, and in Linux's abstract namespace without a file", function()
    local name = "unix:@evtcp-spec-" .. tostring(os.time()) .. "-" .. tostring(math.random(1e9))
    local l = assert(evtcp.listen(name))
    -- the handler may come second, there being no port to give
    local rec = H.recorder({ onConnection = function(_, c) c:close() end })
    evtcp.connect(name, rec)
    local probe = assert(l:accept(5))
    H.run_until(rec.terminated, "the handler given second")
    probe:close()
    assert.equal("connection", rec.log[1])
    local got
    evtcp.spawn(function()
      local s = assert(l:accept(5))
      local line = s:receive("l")
      s:send("echo: ", line, "\n")
      s:close()
    end)
    H.go(function()
      local c = assert(evtcp.dial(name, { noDelay = false }))
      c:send("ping\n")
      got = c:receive("a")
      c:close()
    end)
    assert.equal("echo: ping\n", got)
    assert.equal(name:sub(6), l.address)
    l:terminate()
  end)

  it("is a socket socat can talk to, both ways", function()
    local path = dir .. "/socat.sock"
    local l = assert(evtcp.listen("unix:" .. path, { onConnection = function()
      return { onData = function(_, c, e) c:send(e.data:reverse()) end }
    end }))
    -- socat runs in the background: the loop has to serve it meanwhile
    local out = dir .. "/socat.out"
    os.execute(H.peer .. "sh -c 'printf abc | timeout 5 socat -t 2 - UNIX-CONNECT:" .. path .. " > " .. out .. "' &")
    H.run_until(function() return contents(out) == "cba" end, "socat's reply")
    l:terminate()
    -- the other way: evtcp dials socat's listening socket
    local spath = dir .. "/peer.sock"
    local reply
    local p = io.popen(H.peer .. "timeout 5 socat UNIX-LISTEN:" .. spath .. " SYSTEM:'read x; echo got-$x' &")
    local deadline = H.now() + 5
    while not is_socket(spath) and H.now() < deadline do evtcp.sleep(0.02) end
    H.go(function()
      local c = assert(evtcp.dial("unix:" .. spath))
      c:send("hi\n")
      reply = c:receive("l")
      c:close()
    end)
    p:close()
    assert.equal("got-hi", reply)
    assert.is_nil(l.port)
  end)

  it("replaces a stale socket file, but not a live one nor a file that is no socket", function()
    local path = dir .. "/stale.sock"
    sockopt.stale_unix(path)
    assert.is_true(is_socket(path))
    local l = assert(evtcp.listen("unix:" .. path, { onConnection = function()
      return { onConnection = function(_, c) c:send("alive"); c:close() end }
    end }))
    -- a second listener on a live socket: address in use, and the file
    -- stays (the live server sees the probe as a client that says nothing)
    local none, msg, code = evtcp.listen("unix:" .. path)
    assert.is_nil(none)
    assert.matches("in use", msg)
    assert.equal(98, code) -- EADDRINUSE
    H.go(function() -- the first listener still works
      local c = assert(evtcp.dial("unix:" .. path))
      assert.equal("alive", c:receive("a"))
    end)
    l:terminate()
    assert.is_false(exists(path))
    -- a regular file is never removed
    local f = assert(io.open(path, "w")); f:write("precious"); f:close()
    none, msg = evtcp.listen("unix:" .. path)
    assert.is_nil(none)
    assert.matches("in use", msg)
    assert.equal("precious", H.read(path))
  end)

  it("removes the file when the listener is collected, but not one that replaced it", function()
    local path = dir .. "/gc.sock"
    assert(evtcp.listen("unix:" .. path)) -- not kept: collected below
    collectgarbage(); collectgarbage()
    assert.is_false(exists(path), "__gc removes the socket file")
    -- a listener whose file was replaced by another server leaves it alone
    local a = assert(evtcp.listen("unix:" .. path))
    os.remove(path)
    local b = assert(evtcp.listen("unix:" .. path))
    a:terminate()
    assert.is_true(is_socket(path), "the second server's socket is not ours to remove")
    b:terminate()
    assert.is_false(exists(path))
  end)

  it("reports a missing socket as refused, and a dead one too", function()
    local c, err = nil, nil
    H.go(function() c, err = evtcp.dial("unix:" .. dir .. "/nobody.sock") end)
    assert.is_nil(c)
    assert.equal("refused", err.kind)
    local path = dir .. "/dead.sock"
    sockopt.stale_unix(path)
    local rec = H.recorder()
    evtcp.connect("unix:" .. path, nil, rec)
    H.run()
    assert.same({ "error", "terminate" }, rec.log)
    assert.equal("refused", rec.errors[1].kind)
  end)

  it("reports permission denied on a socket file and on a folder, run as an unprivileged user", function()
    if not os.execute("command -v setpriv >/dev/null 2>&1 && [ \"$(id -u)\" = 0 ]") then
      pending("needs root and setpriv to become another user") return
    end
    local path = dir .. "/private.sock"
    local l = assert(evtcp.listen("unix:" .. path))
    os.execute("chmod 600 " .. path .. " && chmod 755 " .. dir)
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(([[
      local evtcp = require("evtcp")
      local c, err = evtcp.dial("unix:%s")
      print("dial", c, err.kind, err.message)
      print("listen", evtcp.listen("unix:%s/new.sock"))
    ]]):format(path, dir))
    f:close()
    os.execute("chmod 644 " .. script)
    local p = io.popen("setpriv --reuid=65534 --regid=65534 --clear-groups timeout 20 lua5.4 " .. script .. " 2>&1")
    local out = p:read("a")
    p:close()
    os.remove(script)
    l:terminate()
    assert.matches("dial\tnil\tio\tPermission denied\n", out)
    assert.matches("listen\tnil\tPermission denied\t13\tPermission denied %(io%)\n", out) -- and the error object
  end)

  it("keeps TCP options out of a Unix socket's way", function()
    local path = dir .. "/opts.sock"
    local l = assert(evtcp.listen("unix:" .. path, { noDelay = true, keepAlive = 30 }))
    local ok
    local keepalive
    H.go(function()
      evtcp.spawn(function()
        local s = l:accept(5)
        s.noDelay = true
        -- the listener's keepAlive default is not applied to the socket
        keepalive = sockopt.get(assert(sockopt.find_unix(path)), "keepalive")
        s:send(s:receive())
        s:close()
      end)
      local c = assert(evtcp.dial("unix:" .. path, nil, { noDelay = true, keepAlive = 10 }))
      c.keepAlive = false
      c:send("x")
      ok = c:receive("a") == "x"
    end)
    assert.is_true(ok)
    assert.equal(0, keepalive)
    l:terminate()
  end)

  it("rejects misuse with argument errors that name the function", function()
    assert.has_error(function() evtcp.connect("unix:/tmp/x.sock", 80) end,
      "bad argument #2 to 'connect' (port must be nil for a Unix socket)")
    assert.has_error(function() evtcp.connect("unix:", nil) end,
      "bad argument #1 to 'connect' (the socket path is empty)")
    assert.has_error(function() evtcp.connect("unix:/" .. ("x"):rep(200), nil) end,
      "bad argument #1 to 'connect' (the socket path is too long)")
    assert.has_error(function() evtcp.connect("unix:/tmp/x.sock", nil, { localPort = 4000 }) end,
      "bad argument #3 to 'connect' (localAddress and localPort do not apply to a Unix socket)")
    assert.has_error(function() evtcp.connect("unix:/tmp/x.sock", nil, { tls = true }) end)
    -- a handler with callbacks: the connection that never started is not kept alive
    assert.has_error(function() evtcp.connect("unix:/tmp/x.sock", nil, { localPort = 1, onError = print }) end)
    assert.has_error(function() evtcp.connect("unix:/tmp/x.sock", nil, { tls = true, onError = print }) end)
    collectgarbage()
    assert.equal(0, require("evtcp.core").activeCount())
    assert.has_error(function() evtcp.listen("unix:@") end,
      "bad argument #1 to 'listen' (the socket path is empty)")
    assert.has_error(function() evtcp.listen("unix:" .. dir .. "/a.sock", { address = "127.0.0.1" }) end,
      "bad argument #2 to 'listen' (option 'address' applies to a TCP port only)")
    assert.has_error(function() evtcp.listen("8080") end,
      "bad argument #1 to 'listen' (number expected, got string)")
    H.run()
  end)
end)

describe("adopting a listening socket (socket activation)", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  it("serves clients on a socket handed over by fd, and closes it at terminate", function()
    local fd, port = sockopt.tcp(true)
    local l = assert(evtcp.listen(nil, { fd = fd, noDelay = true, onConnection = function()
      return { onData = function(_, c, e) c:send(e.data) end, onEnd = function(_, c) c:close() end }
    end }))
    assert.equal(port, l.port)
    assert.equal("127.0.0.1", l.address)
    local got
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", port))
      c:send("adopted")
      c:shutdown()
      got = c:receive("a")
    end)
    assert.equal("adopted", got)
    local before = sockopt.fds()
    l:terminate()
    H.run()
    assert.equal(before - 1, sockopt.fds(), "terminate() closes the adopted socket")
    assert.is_nil(sockopt.listening(port))
  end)

  it("refuses a socket that does not listen, and leaves it open for its owner", function()
    local fd = sockopt.tcp(false)
    local l, msg, code = evtcp.listen(nil, { fd = fd })
    assert.is_nil(l)
    assert.equal("fd " .. fd .. " is not a listening stream socket", msg)
    assert.equal(22, code)
    assert.is_true(sockopt.close(fd), "the fd is still open, for its owner")
    l, msg = evtcp.listen(nil, { fd = fd })
    assert.is_nil(l)
    assert.matches("Bad file descriptor", msg)
  end)

  it("refuses a regular file and a pipe as documented, and leaves them open", function()
    local file = assert(sockopt.open("/etc/hostname"))
    local r, w = sockopt.pipe()
    for _, fd in ipairs({ file, r, w }) do
      local l, msg, code = evtcp.listen(nil, { fd = fd })
      assert.is_nil(l)
      assert.equal("fd " .. fd .. " is not a listening stream socket", msg)
      assert.equal(22, code)
      assert.is_true(sockopt.close(fd), "the fd is still open, for its owner")
    end
  end)

  it("refuses to adopt a socket a listener has already adopted", function()
    local fd, port = sockopt.tcp(true)
    local l = assert(evtcp.listen(nil, { fd = fd }))
    local again, msg, code = evtcp.listen(nil, { fd = fd })
    assert.is_nil(again)
    assert.equal("fd " .. fd .. " is already a listener's", msg)
    assert.equal(16, code) -- EBUSY
    assert.equal(port, sockopt.listening(port) and port) -- still the first one's, listening
    l:terminate()
    H.run()
    assert.is_nil(sockopt.listening(port))
    -- once terminated the number is free: a new socket may get it and be adopted
    local fd2 = sockopt.tcp(true)
    local l2 = assert(evtcp.listen(nil, { fd = fd2 }))
    l2:terminate()
    H.run()
  end)

  it("rejects misuse with argument errors", function()
    assert.has_error(function() evtcp.listen(nil) end,
      "bad argument #1 to 'listen' (port expected: a number, \"unix:/path\", or nil with option 'fd')")
    assert.has_error(function() evtcp.listen(nil, { fd = "3" }) end,
      "bad argument #2 to 'listen' (option 'fd' must be a file descriptor (an integer >= 0))")
    assert.has_error(function() evtcp.listen(nil, { fd = 3, address = "::1" }) end,
      "bad argument #2 to 'listen' (option 'address' applies to a TCP port only)")
  end)
end)
