local evtcp = require("evtcp")
local H = require("helper")

describe("the loop", function()
  it("run() returns true at once when nothing is active", function()
    assert.is_true(evtcp.run())
  end)

  it("run(timeout) returns false when the time is up first", function()
    local t = evtcp.after(30, function() end)
    local t0 = H.now()
    assert.is_false(evtcp.run(0.05))
    assert.is_true(H.now() - t0 >= 0.04)
    assert.is_true(t:cancel())
    assert.is_true(evtcp.run(1))
  end)

  it("after() fires once, in order of time, and cancel() reports what it did", function()
    local order = {}
    local a = evtcp.after(0.02, function() order[#order + 1] = "a" end)
    evtcp.after(0.01, function() order[#order + 1] = "b" end)
    local c = evtcp.after(0.01, function() order[#order + 1] = "c" end)
    assert.is_true(c:cancel())
    assert.is_false(c:cancel())
    H.run(2)
    assert.are.same({ "b", "a" }, order)
    assert.is_false(a:cancel())
  end)

  it("passes the handle to the timer function", function()
    local got
    local t = evtcp.after(0, function(h) got = h end)
    H.run(1)
    assert.are.equal(t, got)
  end)

  it("stop() makes run() return false after the current callback", function()
    local after_stop = false
    local later = evtcp.after(0.5, function() after_stop = true end)
    evtcp.after(0, function() evtcp.stop() end)
    assert.is_false(evtcp.run(5))
    assert.is_false(after_stop)
    later:cancel()
    assert.is_true(evtcp.run(1))
  end)

  it("step() does one pass and says whether anything is still active", function()
    local fired = false
    evtcp.after(0, function() fired = true end)
    local active = evtcp.step(0.5)
    assert.is_true(fired)
    assert.is_false(active)
    local t = evtcp.after(10, function() end)
    assert.is_true((evtcp.step(0)))
    assert.is_true(t:cancel())
    assert.is_false((evtcp.step(0)))
  end)

  it("raises the re-entrance error for run, step, sleep and wait inside a callback", function()
    local errs = {}
    evtcp.after(0, function()
      for _, f in ipairs({
        function() evtcp.run() end,
        function() evtcp.step() end,
        function() evtcp.sleep(0.01) end,
      }) do
        local ok, err = pcall(f)
        errs[#errs + 1] = not ok and err or "no error"
      end
    end)
    H.run(2)
    for _, e in ipairs(errs) do
      assert.matches("the loop is already running %(use a coroutine%)", e)
    end
    assert.are.equal(3, #errs)
  end)

  it("propagates a callback's error with its traceback, and continues when run again", function()
    local second = false
    evtcp.after(0, function() error("boom in a timer") end)
    evtcp.after(0.05, function() second = true end)
    local ok, err = pcall(evtcp.run, 5)
    assert.is_false(ok)
    assert.matches("boom in a timer", err)
    assert.matches("stack traceback", err)
    assert.is_false(second)
    assert.is_true(evtcp.run(5))
    assert.is_true(second)
  end)

  it("propagates a non-string error value as it is", function()
    local value = { code = 42 }
    evtcp.after(0, function() error(value) end)
    local ok, err = pcall(evtcp.run, 5)
    assert.is_false(ok)
    assert.are.equal(value, err)
  end)

  it("sleep() at top level waits and runs other callbacks meanwhile", function()
    local fired = false
    evtcp.after(0.01, function() fired = true end)
    local t0 = H.now()
    evtcp.sleep(0.05)
    assert.is_true(H.now() - t0 >= 0.045)
    assert.is_true(fired)
  end)

  it("keeps each Lua state's loop its own: two states in two threads at once", function()
    -- the build folder the Makefile put on LUA_CPATH (build, or build-asan)
    local build = (os.getenv("LUA_CPATH") or ""):match("^([^;]*)/%?%.so") or "build"
    local f = io.popen(build .. "/two_states 2>&1")
    local out = f:read("a")
    local ok = f:close()
    assert.is_true(ok, out)
    assert.are.equal("16000 16000\n", out)
  end)

  it("checks its arguments", function()
    assert.has_error(function() evtcp.run(-1) end)
    assert.has_error(function() evtcp.run("x") end)
    assert.has_error(function() evtcp.after("x", function() end) end)
    assert.has_error(function() evtcp.after(1) end)
    assert.has_error(function() evtcp.after(-1, function() end) end)
    local ok_nil, nil_err = pcall(evtcp.after, nil, function() end)
    assert.is_false(ok_nil, "a timer needs its seconds")
    assert.matches("bad argument #1 to '[%w.]*after' %(number expected, got nil%)", nil_err)
    assert.has_error(function() evtcp.sleep(-1) end)
    local ok, err = pcall(evtcp.after, 1, 2)
    assert.is_false(ok)
    assert.matches("bad argument #2 to '[%w.]*after'", err)
  end)
end)

describe("Ctrl-C", function()
  --- Runs `code` in a standalone lua5.4, sends it SIGINT after 0.5 s and
  -- reports how it ended: its stderr, whether it exited, and how fast.
  local function interrupt(code)
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(code)
    f:close()
    -- date runs without the sanitizer the specs may preload: LeakSanitizer
    -- aborted it at exit ("Aborted"), and the time it measured was empty
    local date = "$(env -u LD_PRELOAD date +%%s%%N)"
    local p = io.popen(("sh -c 'lua5.4 %s 2>%s.err & pid=$!; sleep 0.5; t0=" .. date .. "; kill -INT $pid; " ..
      "for i in $(seq 1 200); do kill -0 $pid 2>/dev/null || break; sleep 0.01; done; t1=" .. date .. "; " ..
      "if kill -0 $pid 2>/dev/null; then kill -9 $pid; echo still running; else echo ms=$(( (t1 - t0) / 1000000 )); fi'")
      :format(script, script))
    local out = p:read("a")
    p:close()
    local err = H.read(script .. ".err")
    os.remove(script)
    os.remove(script .. ".err")
    return out, err
  end

  it("stops an idle server run by lua5.4: interrupted! comes out of run", function()
    local out, err = interrupt([[
      local evtcp = require("evtcp")
      assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function() return {} end }))
      evtcp.run()
    ]])
    local ms = tonumber(out:match("ms=(%d+)"))
    assert(ms, "the process did not stop: " .. out)
    assert.is_true(ms < 1000, ms .. " ms")
    assert.matches("interrupted!", err)
    assert.matches("in function 'evtcp[%.%w]*%.run'", err) -- out of run
  end)

  it("stops a busy one too", function()
    local out, err = interrupt([[
      local evtcp = require("evtcp")
      local function again() local x = 0 for i = 1, 1e5 do x = x + i end evtcp.after(0, again) end
      again()
      evtcp.run()
    ]])
    assert(out:match("ms=(%d+)"), "the process did not stop: " .. out)
    assert.matches("interrupted!", err)
  end)
end)

describe("evtcp.signal", function()
  local function pid() return tonumber(H.read("/proc/self/stat"):match("^(%d+)")) end
  --- Does this process catch signo now? (the kernel's SigCgt mask)
  local function caught(signo)
    local mask = tonumber(H.read("/proc/self/status"):match("SigCgt:%s*(%x+)"), 16)
    return (mask >> (signo - 1)) & 1 == 1
  end
  local SIGUSR1 = 10

  it("runs every handler of a signal in order, restores the disposition after the last cancel", function()
    assert.is_false(caught(SIGUSR1))
    local log = {}
    local a = evtcp.signal("USR1", function(h, name) log[#log + 1] = "a:" .. name end)
    evtcp.signal("SIGUSR1", function(h, name) log[#log + 1] = "b:" .. name h:cancel() end)
    assert.is_true(caught(SIGUSR1))
    assert.is_true(evtcp.run(1), "a signal handler kept run going")
    os.execute("kill -USR1 " .. pid())
    H.run_until(function() return #log == 2 end, "the handlers", 5)
    os.execute("kill -USR1 " .. pid())
    H.run_until(function() return #log == 3 end, "the remaining handler", 5)
    assert.are.same({ "a:USR1", "b:USR1", "a:USR1" }, log)
    assert.is_true(a:cancel())
    assert.is_false(a:cancel())
    assert.is_false(caught(SIGUSR1), "the default disposition did not come back")
  end)

  it("a handler that cancels itself does not make the next one be skipped", function()
    local log = {}
    local a = evtcp.signal("USR1", function() log[#log + 1] = "a" end)
    evtcp.signal("USR1", function(h) log[#log + 1] = "b" h:cancel() end)
    local c = evtcp.signal("USR1", function() log[#log + 1] = "c" end)
    os.execute("kill -USR1 " .. pid())
    H.run_until(function() return #log >= 3 end, "the three handlers", 5)
    os.execute("kill -USR1 " .. pid())
    H.run_until(function() return #log >= 5 end, "the two left", 5)
    assert.are.same({ "a", "b", "c", "a", "c" }, log)
    a:cancel()
    c:cancel()
    assert.is_false(caught(SIGUSR1))
  end)

  -- The INT handler is installed before run() or from inside it; the
  -- first Ctrl-C is the handler's alone (the loop goes on), it cancels
  -- itself, and the second stops the loop as if there had been none.
  for _, when in ipairs({ "before run", "inside run" }) do
    it("Ctrl-C goes to an INT handler installed " .. when .. ", and stops the loop again once it is cancelled", function()
      local script = os.tmpname()
      local f = assert(io.open(script, "w"))
      f:write(([[
        local evtcp = require("evtcp")
        assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function() return {} end }))
        local function install()
          evtcp.signal("INT", function(h) print("first INT: handled") io.stdout:flush() h:cancel() end)
        end
        if %q == "before run" then install() else evtcp.after(0.1, install) end
        evtcp.run()
      ]]):format(when))
      f:close()
      local p = io.popen(("sh -c 'lua5.4 %s 2>%s.err & pid=$!; sleep 0.6; kill -INT $pid; sleep 0.4; " ..
        "kill -0 $pid 2>/dev/null && echo alive; kill -INT $pid; " ..
        "for i in $(seq 1 300); do kill -0 $pid 2>/dev/null || break; sleep 0.01; done; " ..
        "if kill -0 $pid 2>/dev/null; then kill -9 $pid; echo still running; else echo stopped; fi'"):format(script, script))
      local out = p:read("a")
      p:close()
      local err = H.read(script .. ".err")
      os.remove(script)
      os.remove(script .. ".err")
      assert.are.equal("first INT: handled\nalive\nstopped\n", out)
      assert.matches("interrupted!", err)
    end)
  end

  it("checks its arguments", function()
    local ok, err = pcall(function() evtcp.signal("KILL", print) end)
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'signal' %(signal must be INT, TERM", err)
    ok, err = pcall(function() evtcp.signal("TERM", 5) end)
    assert.is_false(ok)
    assert.matches("bad argument #2 to 'signal'", err)
  end)

  it("an INT handler takes Ctrl-C instead of the interpreter", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
      local evtcp = require("evtcp")
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", onConnection = function() return {} end }))
      evtcp.signal("INT", function(h) print("graceful shutdown") h:cancel() l:terminate() end)
      print("run returned", evtcp.run())
    ]])
    f:close()
    local p = io.popen(("sh -c 'lua5.4 %s & pid=$!; sleep 0.5; kill -INT $pid; wait $pid; echo rc=$?'"):format(script))
    local out = p:read("a")
    p:close()
    os.remove(script)
    assert.are.equal("graceful shutdown\nrun returned\ttrue\nrc=0\n", out)
  end)
end)
