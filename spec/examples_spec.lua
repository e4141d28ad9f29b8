-- The README's tour, the examples and the rockspec, run as a user would.
local evtcp = require("evtcp")
local H = require("helper")

local read = H.read

--- Starts an example in the background; returns its port and a stop function.
local function start_example(script, pattern)
  local log = os.tmpname()
  local pidfile = os.tmpname()
  os.execute(("lua5.4 %s 0 > %s 2>&1 & echo $! > %s"):format(script, log, pidfile))
  local pid = read(pidfile):match("%d+")
  local port
  local deadline = H.now() + 10
  repeat
    port = tonumber(read(log):match(pattern))
    if not port then evtcp.sleep(0.05) end
  until port or H.now() > deadline
  return port, function()
    os.execute("kill " .. pid .. " 2>/dev/null")
    local out = read(log)
    os.remove(log)
    os.remove(pidfile)
    return out
  end
end

describe("the README", function()
  it("has a tour that runs as written", function()
    local tour = read("README.md"):match("## A tour\n\n```lua\n(.-)```")
    assert.is_string(tour)
    local ok, out = H.lua_child(tour)
    assert.is_true(ok, out)
    assert.matches("client from 127%.0%.0%.1:%d+\n", out)
    assert.matches("echoed: hello, world\nclosed\n", out)
  end)

  it("has a blocking-style snippet that runs as written", function()
    local snippet = read("README.md"):match("## Blocking style, in coroutines\n.-```lua\n(.-)```")
    assert.is_string(snippet)
    local ok, out = H.lua_child(snippet)
    assert.is_true(ok, out)
    assert.are.equal("HELLO\tWORLD\n", out)
  end)

  it("shows the two commands", function()
    local readme = read("README.md")
    assert.truthy(readme:find("make demo", 1, true))
    assert.truthy(readme:find("make test", 1, true))
  end)
end)

describe("the examples", function()
  after_each(function() assert.is_true(H.cleanup()) end)

  it("echo server and the 4D-style client talk to each other", function()
    local port, stop = start_example("examples/echo_server.lua", "listening on [%d.]+:(%d+)")
    assert.is_number(port)
    local f = io.popen("lua5.4 examples/client.lua 127.0.0.1 " .. port .. " 2>&1")
    local out = f:read("a")
    local ok = f:close()
    local server_out = stop()
    assert.is_true(ok, out)
    assert.are.equal(("connection established to 127.0.0.1:%d\nreceived: Information\n" ..
      "connection closed\nconnection terminated\n"):format(port), out)
    assert.matches("joined", server_out)
  end)

  it("chat server passes a line from one member to the others", function()
    local port, stop = start_example("examples/chat_server.lua", "listening on port (%d+)")
    assert.is_number(port)
    local alice, bob = H.recorder(), H.recorder()
    local a = evtcp.connect("127.0.0.1", port, alice)
    H.run_until(function() return alice.count.onConnection end, "alice")
    local b = evtcp.connect("127.0.0.1", port, bob)
    H.run_until(function() return alice.data():find("joined") end, "bob's arrival")
    b:send("hello ", "alice\nand")
    b:send(" goodbye\n")
    H.run_until(function() return alice.data():find("and goodbye\n", 1, true) end, "bob's lines")
    a:close()
    H.run_until(function() return bob.data():find("left") end, "alice leaving")
    b:close()
    H.run_until(function() return bob.terminated() end, "bob leaving")
    stop()
    assert.matches(": hello alice\n127%.0%.0%.1:%d+: and goodbye\n", alice.data())
  end)
end)

describe("the rockspec", function()
  --- Runs cmd, failing with its output if it fails; returns the output.
  local function sh(cmd)
    local f = io.popen(cmd .. " 2>&1")
    local out = f:read("a")
    assert(f:close(), cmd .. "\n" .. out)
    return out
  end

  --- evtcp._VERSION as a program sees it with only the LuaRocks tree on its paths.
  local function version_in(tree)
    return sh(("cd / && env -u LUA_PATH -u LUA_CPATH lua5.4 -e 'package.path=%q package.cpath=%q " ..
      "print(require(\"evtcp\")._VERSION)'"):format(tree .. "/share/lua/5.4/?.lua;" .. tree .. "/share/lua/5.4/?/init.lua",
      tree .. "/lib/lua/5.4/?.so"))
  end

  it("lists every C source", function()
    local spec = read("evtcp-scm-1.rockspec")
    local p = io.popen("ls src/*.c")
    for file in p:lines() do
      assert.truthy(spec:find('"' .. file .. '"', 1, true), file .. " is missing from the rockspec")
    end
    p:close()
  end)

  it("runs from a checkout after make, with no environment set", function()
    if os.getenv("EVTCP_SANITIZE") then pending("the checkout's module is built without the sanitizer") return end
    local clean = "env -u LUA_PATH -u LUA_CPATH -u LD_PRELOAD "
    local f = io.popen(clean .. "timeout 5 lua5.4 examples/echo_server.lua 0 2>&1")
    local line = f:read("l")
    f:close()
    assert.matches("echo server listening on 127%.0%.0%.1:%d+", line)
    f = io.popen(clean .. "timeout 60 lua5.4 /usr/bin/busted spec/module_spec.lua 2>&1")
    local out = f:read("a")
    assert.is_true(f:close(), out)
    assert.matches("%d+ successes / 0 failures / 0 errors", out)
  end)

  it("both rockspecs pass luarocks lint, build, pack and install offline into fresh trees", function()
    if os.getenv("EVTCP_SANITIZE") then pending("the rock is built without the sanitizer") return end
    for _, spec in ipairs({ { "evtcp-0.1.0-1.rockspec", "0.1.0-1" }, { "evtcp-scm-1.rockspec", "scm-1" } }) do
      local rockspec, version = spec[1], spec[2]
      sh("luarocks --lua-version 5.4 lint " .. rockspec)
      local tree, tree2, dir = os.tmpname(), os.tmpname(), os.tmpname()
      os.remove(tree) os.remove(tree2) os.remove(dir)
      sh(("luarocks --lua-version 5.4 make --tree %s %s"):format(tree, rockspec))
      sh(("mkdir -p %s && cd %s && luarocks --lua-version 5.4 pack --tree %s evtcp %s"):format(dir, dir, tree, version))
      local rock = sh("ls " .. dir):match("(evtcp%-[%w.]+%-1%.[%w_%-]+%.rock)")
      assert(rock, "no .rock was packed for " .. rockspec)
      sh(("luarocks --lua-version 5.4 install --tree %s %s/%s"):format(tree2, dir, rock))
      local out = version_in(tree2)
      local installed = sh(("ls %s/lib/luarocks/rocks-5.4/evtcp/%s/"):format(tree2, version))
      os.execute(("rm -rf %s %s %s"):format(tree, tree2, dir))
      assert.are.equal("evtcp 0.1.0\n", out)
      assert.matches("docs", installed)
      assert.matches("examples", installed)
    end
  end)

  it("the release rockspec packs from its tag and the src.rock builds and loads, LICENSE and README with it", function()
    -- as a release would be made: in a clone of this checkout's HEAD, the
    -- tag the rockspec names, the placeholder URL swapped for git+file://,
    -- luarocks pack, then luarocks build of the src.rock into a fresh tree
    if os.getenv("EVTCP_SANITIZE") then pending("the rock is built without the sanitizer") return end
    local t = os.tmpname()
    os.remove(t)
    sh(("mkdir -p %s && git clone -q %s %s/src && cd %s/src && git tag v0.1.0"):format(t, os.getenv("PWD"), t, t))
    local spec = read("evtcp-0.1.0-1.rockspec")
    local placeholder = "git+https://example.invalid/evtcp.git"
    assert.truthy(spec:find(placeholder, 1, true), "the placeholder URL is kept until the public repository exists")
    local f = assert(io.open(t .. "/evtcp-0.1.0-1.rockspec", "w"))
    f:write((spec:gsub(placeholder:gsub("%p", "%%%0"), "git+file://" .. t .. "/src")))
    f:close()
    sh(("cd %s && luarocks --lua-version 5.4 pack evtcp-0.1.0-1.rockspec"):format(t))
    sh(("cd %s && luarocks --lua-version 5.4 build --tree %s/tree evtcp-0.1.0-1.src.rock"):format(t, t))
    local tree = t .. "/tree"
    local out = version_in(tree)
    local installed = sh(("ls %s/lib/luarocks/rocks-5.4/evtcp/0.1.0-1/conf"):format(tree))
    os.execute("rm -rf " .. t)
    assert.are.equal("evtcp 0.1.0\n", out)
    assert.matches("LICENSE", installed)
    assert.matches("README.md", installed)
  end)

  it("installs with luarocks, offline, and loads from any folder", function()
    if os.getenv("EVTCP_SANITIZE") then pending("the rock is built without the sanitizer") return end
    local tree = os.tmpname()
    os.remove(tree)
    local f = io.popen(("luarocks --lua-version 5.4 make --tree %s evtcp-scm-1.rockspec 2>&1"):format(tree))
    local out = f:read("a")
    assert.is_true(f:close(), out)
    f = io.popen(("cd / && env -u LUA_PATH -u LUA_CPATH lua5.4 -e 'package.path=%q package.cpath=%q " ..
      "local e = require(\"evtcp\") print(e.run(), package.searchpath(\"evtcp.core\", package.cpath))' 2>&1")
      :format(tree .. "/share/lua/5.4/?.lua;" .. tree .. "/share/lua/5.4/?/init.lua",
              tree .. "/lib/lua/5.4/?.so"))
    out = f:read("a")
    f:close()
    os.execute("rm -rf " .. tree)
    assert.are.equal("true\t" .. tree .. "/lib/lua/5.4/evtcp/core.so\n", out)
  end)
end)

describe("the examples users copy", function()
  after_each(function() assert.is_true(H.cleanup()) end)

  it("proxy.lua relays 16 MiB each way with backpressure, and the half-close", function()
    H.check_proxy("examples/proxy.lua", 16)
  end)

  it("reconnect_client.lua retries with a growing wait until the server is up", function()
    local port = H.free_port()
    local out = os.tmpname()
    os.execute(("lua5.4 examples/reconnect_client.lua %d 127.0.0.1 10 > %s 2>&1 &"):format(port, out))
    evtcp.sleep(0.5) -- refused meanwhile: attempts 1 to 3
    local l = assert(evtcp.listen(port, { address = "127.0.0.1", onConnection = function()
      return { onConnection = function(_, c) c:send("welcome\n") end, onData = function() end }
    end }))
    local deadline = H.now() + 10
    while not read(out):find("connected after") and H.now() < deadline do evtcp.sleep(0.05) end
    l:terminate()
    local text = read(out)
    os.remove(out)
    assert.matches("attempt 1: Connection refused %(refused%); next in 0%.1 s", text)
    assert.matches("attempt 2: [^\n]*next in 0%.2 s", text)
    assert.matches("connected after %d attempt%(s%): welcome", text)
  end)

  it("line_server.lua keeps one Session per client", function()
    local port, stop = start_example("examples/line_server.lua", "listening on 127%.0%.0%.1:(%d+)")
    local replies = {}
    H.go(function()
      local a = assert(evtcp.dial("127.0.0.1", port))
      local b = assert(evtcp.dial("127.0.0.1", port))
      replies[#replies + 1] = a:receive("l")
      a:send("ECHO one\r\nECH") -- a command split over two sends
      a:send("O two\nCOUNT\n")
      for _ = 1, 3 do replies[#replies + 1] = a:receive("l") end
      b:send("COUNT\nQUIT\n")
      replies[#replies + 1] = b:receive("l") -- hello
      replies[#replies + 1] = b:receive("l")
      replies[#replies + 1] = b:receive("l")
      replies[#replies + 1] = b:receive("a")
      a:close()
    end)
    stop()
    assert.are.same({ "hello", "one", "two", "3", "hello", "1", "bye", "" }, replies)
  end)
end)

describe("the blocking-style examples", function()
  after_each(function() assert.is_true(H.cleanup()) end)

  --- Runs example (a file in examples/) against a redis-server started in
  -- a temp dir (no persistence, loopback only), retried until it answers
  -- (`ready` found in the output); returns the output.
  local function against_redis(example, ready)
    local port = H.free_port()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    assert(os.execute((H.peer .. "redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no " ..
      "--dir %s --daemonize yes --pidfile %s/redis.pid --logfile %s/redis.log"):format(port, dir, dir, dir)))
    local out
    local deadline = H.now() + 10
    repeat
      local f = io.popen(("lua5.4 examples/%s %d 2>&1"):format(example, port))
      out = f:read("a")
      f:close()
      if not out:find(ready) then evtcp.sleep(0.1) end
    until out:find(ready) or H.now() > deadline
    os.execute(("kill $(cat %s/redis.pid) 2>/dev/null; sleep 0.2; rm -rf %s"):format(dir, dir))
    return out
  end

  it("redis_client speaks RESP to a real redis-server", function()
    if not os.execute("command -v redis-server >/dev/null 2>&1") then
      pending("redis-server is not installed (make test installs it)") return
    end
    local out = against_redis("redis_client.lua", "PING")
    assert.are.equal("PING ->\tPONG\nSET  ->\tOK\nGET  ->\thello from evtcp\n", out)
  end)

  it("redis_pool makes 200 requests from ten coroutines over at most ten connections", function()
    if not os.execute("command -v redis-server >/dev/null 2>&1") then
      pending("redis-server is not installed (make test installs it)") return
    end
    local out = against_redis("redis_pool.lua", "requests:")
    local n = tonumber(out:match("^requests: 200, counter: 200, new connections: (%d+)\n$"))
    assert.is_number(n, out)
    assert.is_true(n >= 1 and n <= 10, out) -- redis's own count; without the pool: 202
  end)

  it("http_get fetches a page from a local HTTP server", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local page = H.bytes(100000, 4):gsub("[^%w]", "x")
    local f = assert(io.open(dir .. "/page.txt", "wb"))
    f:write(page)
    f:close()
    local port = H.free_port()
    local server = io.popen(("cd %s && exec " .. H.peer .. "timeout 20 /usr/bin/python3 -m http.server %d --bind 127.0.0.1 2>&1")
      :format(dir, port))
    local out
    local deadline = H.now() + 10
    repeat
      local p = io.popen(("lua5.4 examples/http_get.lua %d /page.txt 2>&1"):format(port))
      out = p:read("a")
      p:close()
      if not out:find("^HTTP") then evtcp.sleep(0.1) end
    until out:find("^HTTP") or H.now() > deadline
    os.execute(H.peer .. "pkill -f 'http.server " .. port .. "'")
    server:close()
    os.execute("rm -rf " .. dir)
    assert.matches("^HTTP/1%.0 200 OK\ncontent%-type: text/plain, 100000 bytes\n", out)
    assert.is_true(out:sub(-100000) == page)
  end)

  it("echo_coroutines echoes like the callback echo server", function()
    local port, stop = start_example("examples/echo_coroutines.lua", "listening on [%d.]+:(%d+)")
    assert.is_number(port)
    local payload = H.bytes(500000, 12)
    local rec
    rec = H.recorder({ onConnection = function(_, c) c:send(payload) end,
                       onData = function(_, c) if #rec.data() == #payload then c:close() end end })
    evtcp.connect("127.0.0.1", port, rec)
    H.run_until(rec.terminated, "the echo")
    stop()
    assert.is_true(rec.data() == payload)
  end)
end)

describe("the server examples", function()
  --- Starts `lua5.4 cmd` in the background, its output and exit status in
  -- a log; returns the log reader, the pid and a waiter for its exit.
  local function background(cmd)
    local log, pidfile = os.tmpname(), os.tmpname()
    os.execute(("sh -c 'lua5.4 %s; echo exit=$?' > %s 2>&1 & echo $! > %s"):format(cmd, log, pidfile))
    local shpid = read(pidfile):match("%d+")
    local function out() return read(log) end
    local function wait_for(pattern, what)
      if coroutine.isyieldable() then -- inside H.go: let the loop run meanwhile
        local deadline = H.now() + 15
        while not out():match(pattern) do
          assert(H.now() < deadline, "timed out waiting for " .. (what or pattern))
          evtcp.sleep(0.02)
        end
      else
        H.run_until(function() return out():match(pattern) end, what or pattern, 15)
      end
      return out():match(pattern)
    end
    local function cleanup()
      os.execute(H.peer .. "pkill -P " .. shpid .. " 2>/dev/null; kill " .. shpid .. " 2>/dev/null")
      os.remove(log)
      os.remove(pidfile)
    end
    -- the pid of lua5.4 itself, the shell's child
    local function pid()
      local p = io.popen(H.peer .. "pgrep -P " .. shpid) -- not under the sanitizer: it hangs there
      local child = p:read("l")
      p:close()
      return child
    end
    return out, wait_for, cleanup, pid
  end

  it("graceful_server.lua finishes its clients after SIGTERM, refuses new ones, and exits 0", function()
    local out, wait_for, cleanup, pid = background("examples/graceful_server.lua 0 5")
    local ok, err = pcall(function()
      local port = tonumber(wait_for("listening on [%d.]+:(%d+)"))
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", port))
        c:send("hello\n")
        assert.equal("ok 6", c:receive("l", 5))
        os.execute("kill -TERM " .. pid())
        wait_for("no new clients; waiting up to 5 s for 1")
        local none, e = evtcp.dial("127.0.0.1", port)
        assert.is_nil(none, "a new client was accepted after SIGTERM")
        assert.equal("refused", e.kind)
        c:send("more\n") -- the live client is still served
        assert.equal("ok 5", c:receive("l", 5))
        c:close()
      end)
      wait_for("exit=(%d+)", "the server to exit")
      assert.matches("bye\nexit=0\n$", out())
    end)
    cleanup()
    assert(ok, err)
  end)

  it("graceful_server.lua closes clients still there at the deadline, and exits 0", function()
    local out, wait_for, cleanup, pid = background("examples/graceful_server.lua 0 0.3")
    local ok, err = pcall(function()
      local port = tonumber(wait_for("listening on [%d.]+:(%d+)"))
      H.go(function()
        local c = assert(evtcp.dial("127.0.0.1", port))
        c:send("x\n")
        assert.equal("ok 2", c:receive("l", 5))
        os.execute("kill -INT " .. pid())
        local rest, why = c:receive("a", 5) -- the server closes us at its deadline
        assert.equal("", rest, why)
        c:close()
      end)
      wait_for("exit=(%d+)", "the server to exit")
      assert.matches("INT: no new clients.*bye\nexit=0\n$", out())
    end)
    cleanup()
    assert(ok, err)
  end)

  it("workers.lua spreads clients over worker processes sharing one port, and stops them", function()
    local _, wait_for, cleanup, pid = background("examples/workers.lua 0 2")
    local ok, err = pcall(function()
      local port = tonumber(wait_for("2 workers listening on 127%.0%.0%.1:(%d+)"))
      wait_for("worker 1 listening", "worker 1") -- they start in either order
      wait_for("worker 2 listening", "worker 2")
      local seen = {}
      H.go(function()
        for i = 1, 24 do
          local c = assert(evtcp.dial("127.0.0.1", port))
          c:send("line " .. i .. "\n")
          local answer = assert(c:receive("l", 5))
          local id = answer:match("^worker (%d): line " .. i .. "$")
          assert(id, answer)
          seen[id] = true
          c:close()
        end
      end, 20)
      assert.is_true(seen["1"] and seen["2"], "both workers served clients")
      os.execute("kill -TERM " .. pid())
      wait_for("workers stopped")
      wait_for("exit=0")
      H.go(function()
        local deadline = H.now() + 5
        local c
        repeat
          c = evtcp.dial("127.0.0.1", port)
          if c then c:close(); evtcp.sleep(0.05) end
        until not c or H.now() > deadline
        assert.is_nil(c, "the workers still listen")
      end)
    end)
    cleanup()
    assert(ok, err)
  end)

  it("unix_echo.lua echoes over a Unix socket and removes the file on Ctrl-C", function()
    local path = os.tmpname()
    os.remove(path)
    path = path .. ".sock"
    local out, wait_for, cleanup, pid = background("examples/unix_echo.lua " .. path)
    local ok, err = pcall(function()
      wait_for("listening on unix:")
      local got
      H.go(function()
        local c = assert(evtcp.dial("unix:" .. path))
        c:send("over unix\n")
        got = c:receive("l", 5)
        c:close()
      end)
      assert.equal("over unix", got)
      os.execute("kill -INT " .. pid())
      wait_for("exit=(%d+)")
      assert.matches("client on " .. path:gsub("%p", "%%%0"), out())
      assert.is_falsy(io.open(path), "the socket file is removed")
    end)
    cleanup()
    assert(ok, err)
  end)
end)

describe("the examples, run as a newcomer runs them", function()
  --- Runs `cmd` in dir with no LUA_PATH or LUA_CPATH (as a user's shell
  -- has them); returns whether it exited 0, and its output.
  local function plain(dir, cmd)
    local p = io.popen(("cd %s && env -u LUA_PATH -u LUA_CPATH timeout 30 %s 2>&1; echo \"rc=$?\""):format(dir, cmd))
    local out = p:read("a")
    p:close()
    return out:match("rc=0\n$") ~= nil, out
  end

  it("tls_echo.lua exits 0 when it echoed and 1 when verification fails, from examples/ too", function()
    local certs, dir = H.self_signed()
    local other, other_dir = H.self_signed()
    local ok, out = plain("examples", ("lua5.4 tls_echo.lua %s %s %s"):format(certs.cert, certs.key, certs.cert))
    assert.is_true(ok, out)
    assert.matches("echoed: hello over TLS", out)
    ok, out = plain(".", ("lua5.4 examples/tls_echo.lua %s %s %s"):format(certs.cert, certs.key, other.cert))
    os.execute("rm -rf " .. dir .. " " .. other_dir)
    assert.is_false(ok, out)
    assert.matches("failed: .*certificate", out)
    assert.matches("rc=1", out)
  end)

  it("find the checkout's module from any directory, before an installed copy", function()
    -- an "installed" evtcp that says so, first on Lua's default path as
    -- /usr/local is: the checkout's must win
    local fake = os.tmpname()
    os.remove(fake)
    os.execute("mkdir -p " .. fake .. "/evtcp")
    local f = assert(io.open(fake .. "/evtcp/init.lua", "w"))
    f:write("error('the installed copy was loaded')\n")
    f:close()
    local script = ("lua5.4 -e 'package.path = %q .. package.path' %s/examples/client.lua 127.0.0.1 1")
      :format(fake .. "/?/init.lua;", os.getenv("PWD"))
    local ok, out = plain("/tmp", script)
    os.execute("rm -rf " .. fake)
    assert.is_false(ok, out) -- port 1 refuses: the client fails, but as evtcp
    assert.not_matches("installed copy", out)
    assert.matches("refused", out)
  end)
end)
