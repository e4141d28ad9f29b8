-- How connections end while the other side still sends, over plain TCP and
-- TLS: every byte a side accepted arrives, and a clean end is reported as
-- one. The losses these guard against came from the kernel, not from evtcp's
-- buffers: a socket closed with bytes unread (a greeting, TLS 1.3's session
-- tickets, the peer's close_notify) answers with a reset, and a reset
-- destroys what the peer had not read yet (linger.c).
local evtcp = require("evtcp")
local H = require("helper")

local MiB = 1 << 20

describe("connection ends", function()
  local certs, dir
  setup(function() certs, dir = H.self_signed() end)
  teardown(function() os.execute("rm -rf " .. dir) end)
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  -- Each case runs in a child process, as a program would: what the
  -- kernel does at the end depends on timing that busted's own process
  -- happens to change (in it the old code passed). The child prints how
  -- many bytes the server got, whether it saw a clean end, and the errors.
  local function run_case(transport, n, server_case, client_options)
    local ok, out = H.lua_child(([[
      local evtcp = require("evtcp")
      local H = require("helper")
      local tls = %q == "tls"
      local server_case, n = %q, %d
      local got, ended, errors = 0, false, {}
      local function note(who) return function(_, _, ev) errors[#errors + 1] = who .. " " .. ev.error.kind end end
      local said
      local l = assert(evtcp.listen(0, { address = "127.0.0.1",
        tls = tls and { cert = %q, key = %q } or nil,
        onConnection = function() return {
          onConnection = function(_, c)
            if server_case == "greeting" then
              evtcp.after(0.1, function() if not c.closed then c:send("220 hello\r\n") end end)
            elseif server_case == "busy" then
              c:pause()
              evtcp.after(0.3, function() c:resume() end)
            end
          end,
          onData = function(_, c, ev)
            got = got + #ev.data
            if server_case == "shutdown" and not said then said = true; c:shutdown() end
          end,
          onShutdown = function() ended = true end,
          onError = note("server"),
        } end }))
      local options = { %s }
      if tls then options.tls = { verify = false } end
      options.onConnection = function(_, c)
        c:send(string.rep("x", n)) -- one send: all of it queued before close()
        c:close()
      end
      options.onError = note("client")
      assert(evtcp.connect("127.0.0.1", l.port, options))
      local deadline = H.now() + 20
      while not ended and #errors == 0 and H.now() < deadline do evtcp.step(0.02) end
      l:terminate()
      evtcp.run(10)
      print(("got %%d ended %%s errors [%%s]"):format(got, ended, table.concat(errors, ",")))
    ]]):format(transport, server_case, n, certs.cert, certs.key, client_options or ""))
    assert.is_true(ok, out)
    assert.are.equal(("got %d ended true errors []"):format(n), out:match("got [^\n]*"))
  end

  for _, transport in ipairs({ "plain", "tls" }) do
    describe("over " .. transport, function()
      it("a server's shutdown() on its first bytes: reading goes on and 2 MiB arrive in full", function()
        run_case(transport, 2 * MiB, "shutdown")
      end)

      it("the same with allowHalfOpen on the client", function()
        run_case(transport, 2 * MiB, "shutdown", "allowHalfOpen = true")
      end)

      -- the server shuts down on connecting or on its first bytes; the
      -- allowHalfOpen client sends 4 MiB (at connecting, or when the
      -- server's end came) and closes at the server's end
      for _, when in ipairs({ "server shuts first", "client sends first" }) do
        it("allowHalfOpen: the client's 4 MiB arrive in full after the server's shutdown(), " .. when, function()
          local got, ended, errors, said = 0, false, {}, false
          local function note(_, _, ev) errors[#errors + 1] = ev.error.kind .. ": " .. ev.error.message end
          local reply = string.rep("y", 4 * MiB)
          local l = H.server(function()
            return {
              onConnection = function(_, c) if when == "server shuts first" then c:shutdown() end end,
              onData = function(_, c, ev)
                got = got + #ev.data
                if not said then said = true; c:shutdown() end -- TLS: close_notify
              end,
              onShutdown = function() ended = true end,
              onError = note,
            }
          end, { tls = transport == "tls" and certs or nil })
          assert(evtcp.connect("127.0.0.1", l.port, {
            tls = transport == "tls" and { verify = false } or nil,
            allowHalfOpen = true,
            onConnection = function(_, c) if when == "client sends first" then c:send(reply) end end,
            onEnd = function(_, c) -- the server's end: our side is still open
              if when == "server shuts first" then c:send(reply) end
              c:close()
            end,
            onError = note,
          }))
          H.run_until(function() return ended or #errors > 0 end, "the server to see the end", 30)
          l:terminate()
          assert.are.same({}, errors)
          assert.are.equal(4 * MiB, got)
        end)
      end

      it("a peer's reset after our shutdown() is an error, never a clean end with bytes missing", function()
        -- over TLS the reset came as an end: libevent reads a failed read
        -- without close_notify as a dirty shutdown, and our own
        -- close_notify write could take the socket's error first
        for round = 1, 12 do
          local got, result = 0, nil
          local l = H.server(function()
            return {
              allowHalfOpen = true,
              onConnection = function(_, c) c:shutdown() end,
              onData = function(_, _, ev) got = got + #ev.data end,
              onShutdown = function() result = "clean" end,
              onError = function(_, _, ev) result = ev.error.kind end,
            }
          end, { tls = transport == "tls" and certs or nil })
          local sent = 0
          assert(evtcp.connect("127.0.0.1", l.port, {
            tls = transport == "tls" and { verify = false } or nil,
            allowHalfOpen = true,
            onConnection = function(_, c)
              local n = (round % 4 + 1) * 65536
              c:send(string.rep("r", n))
              sent = n
              evtcp.after(round % 3 * 0.002, function() c:reset() end)
            end,
          }))
          H.run_until(function() return result end, "the server's end", 20)
          l:terminate()
          if result == "clean" then
            assert.are.equal(sent, got, "round " .. round .. ": a clean end with bytes missing")
          else
            assert.are.equal("reset", result)
          end
        end
      end)

      it("close() right after sending 8 MiB, while the server's greeting is still to come", function()
        run_case(transport, 8 * MiB, "greeting")
      end)

      it("send, then close, to a server that does not read for 0.3 s", function()
        run_case(transport, 4 * MiB, "busy")
      end)

      it("send, then close, to a busy server that greets before it reads: no reset", function()
        run_case(transport, 8 * MiB, "busy greeting")
      end)
    end)
  end
end)
