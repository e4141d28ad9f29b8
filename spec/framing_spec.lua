-- The callback style's framing (docs/reference.md, "Framing"): onData gets
-- one whole frame per call -- a line, n bytes, or what comes before a
-- delimiter -- cut from the input in C, however the bytes arrive.
local evtcp = require("evtcp")
local H = require("helper")

-- The listeners a spec made, ended after it so the loop can finish at once.
local made = {}
local function server(make, options)
  local l = H.server(make, options)
  made[#made + 1] = l
  return l
end

-- A server whose connections record each onData (and onEnd as "<end>"),
-- with `handler` fields added; returns the listener and the list of frames.
local function framing_server(options, handler)
  local frames, errors = {}, {}
  local l = server(function()
    local h = {
      onData = function(self, conn, ev)
        frames[#frames + 1] = ev.data
        if handler and handler.onData then handler.onData(self, conn, ev) end
      end,
      onEnd = function() frames[#frames + 1] = "<end>" end,
      onError = function(_, _, ev) errors[#errors + 1] = ev.error end,
    }
    for k, v in pairs(handler or {}) do if k ~= "onData" then h[k] = v end end
    return h
  end, options)
  return l, frames, errors
end

-- Sends each piece in its own write, waiting a little between them, so
-- frames arrive split across many reads.
local function send_pieces(port, pieces)
  local c = assert(evtcp.connect("127.0.0.1", port, {}))
  for _, p in ipairs(pieces) do
    c:send(p)
    evtcp.sleep(0.005)
  end
  c:shutdown()
  return c
end

describe("framing", function()
  after_each(function()
    for _, l in ipairs(made) do l:terminate() end
    made = {}
    assert.is_true(H.cleanup())
  end)

  it("'line' delivers each line whole, without its LF or CRLF, however it is split", function()
    local l, frames = framing_server({ framing = "line" })
    local text = "first line\r\nsecond\n\nfourth has\r in it\r\n"
    local pieces = {}
    for i = 1, #text do pieces[i] = text:sub(i, i) end -- one byte per write
    H.go(function() send_pieces(l.port, pieces) end)
    H.run_until(function() return frames[#frames] == "<end>" end, "every line")
    assert.same({ "first line", "second", "", "fourth has\r in it", "<end>" }, frames)
  end)

  it("many lines in one read are as many onData calls", function()
    local l, frames = framing_server({ framing = "line" })
    local lines = {}
    for i = 1, 1000 do lines[i] = "line " .. i end
    H.go(function() send_pieces(l.port, { table.concat(lines, "\n") .. "\n" }) end)
    H.run_until(function() return frames[#frames] == "<end>" end, "every line")
    assert.equal(1001, #frames)
    for i = 1, 1000 do assert.equal(lines[i], frames[i]) end
  end)

  it("a byte count delivers exactly n bytes, even beyond highWaterMark", function()
    local payload = H.bytes(100000, 3)
    local l, frames = framing_server({ framing = 40000, highWaterMark = 1024 })
    H.go(function() send_pieces(l.port, { payload:sub(1, 30000), payload:sub(30001) }) end)
    H.run_until(function() return frames[#frames] == "<end>" end, "the frames")
    -- two whole frames, then the 20000 bytes the end cut short
    assert.equal(4, #frames)
    assert.equal(40000, #frames[1])
    assert.equal(40000, #frames[2])
    assert.equal(payload, frames[1] .. frames[2] .. frames[3])
  end)

  it("a delimiter frame is what comes before it; the delimiter is consumed", function()
    local l, frames = framing_server({ framing = { delimiter = "\r\n\r\n" } })
    H.go(function()
      send_pieces(l.port, { "GET / HTTP/1.1\r\nHost: a\r", "\n\r\nGET /2 HTTP/1.1\r\n\r\n" })
    end)
    H.run_until(function() return frames[#frames] == "<end>" end, "the heads")
    assert.same({ "GET / HTTP/1.1\r\nHost: a", "GET /2 HTTP/1.1", "<end>" }, frames)
  end)

  it("a handler changes the framing between frames: a length-prefixed protocol, RESP's bulk strings", function()
    -- "$5\r\nhello\r\n": a line gives the length, then length + 2 bytes
    local l, frames = framing_server({ framing = "line" }, {
      onData = function(_, conn, ev)
        local n = ev.data:match("^%$(%d+)$")
        if n then conn.framing = tonumber(n) + 2 else conn.framing = "line" end
      end,
    })
    H.go(function() send_pieces(l.port, { "$5\r\nhel", "lo\r\n$0\r\n\r\n+OK\r\n" }) end)
    H.run_until(function() return frames[#frames] == "<end>" end, "the replies")
    assert.same({ "$5", "hello\r\n", "$0", "\r\n", "+OK", "<end>" }, frames)
  end)

  it("what the end cuts short comes as a last onData, before onEnd: nothing is lost", function()
    local l, frames = framing_server({ framing = "line" })
    H.go(function() send_pieces(l.port, { "whole\nhalf a li", "ne" }) end)
    H.run_until(function() return frames[#frames] == "<end>" end, "the end")
    assert.same({ "whole", "half a line", "<end>" }, frames)
  end)

  it("a line longer than highWaterMark fails the connection with a clear error, kind io", function()
    local l, frames, errors = framing_server({ framing = "line", highWaterMark = 4096 })
    H.go(function() send_pieces(l.port, { "short\n", string.rep("x", 10000) }) end)
    H.run_until(function() return #errors == 1 end, "the error")
    assert.same({ "short" }, frames)
    assert.equal("io", errors[1].kind)
    assert.truthy(errors[1].message:find("highWaterMark (4096 bytes) without its line end", 1, true))
  end)

  it("pause() holds frames back and resume() goes on with them", function()
    local paused_once = false
    local l, frames = framing_server({ framing = 3 }, {
      onData = function(_, conn)
        if not paused_once then
          paused_once = true
          conn:pause()
          evtcp.after(0.1, function() conn:resume() end)
        end
      end,
    })
    H.go(function() send_pieces(l.port, { "aaabbbccc" }) end)
    H.run_until(function() return frames[#frames] == "<end>" end, "the frames")
    assert.same({ "aaa", "bbb", "ccc", "<end>" }, frames)
  end)

  it("a pause() at every frame holds the rest, and onEnd, until resume(): onData never follows onEnd", function()
    local l, frames = framing_server({ framing = 3 }, {
      onData = function(_, conn)
        conn:pause()
        evtcp.after(0.03, function() conn:resume() end)
      end,
    })
    for _ = 1, 3 do -- the FIN comes with the data, or while a frame is held
      local c = assert(evtcp.connect("127.0.0.1", l.port, {}))
      c:send("aaabbbcccdd")
      c:shutdown()
      local n = #frames
      H.run_until(function() return #frames > n and frames[#frames] == "<end>" end, "the end")
      assert.same({ "aaa", "bbb", "ccc", "dd", "<end>" }, { table.unpack(frames, n + 1) })
      evtcp.sleep(0.1)
      assert.equal("<end>", frames[#frames])
    end
  end)

  it("an error raised by onData at the end holds onEnd back until the frames before it are delivered", function()
    local l, frames = framing_server({ framing = 3 }, {
      onData = function(_, _, ev) if ev.data ~= "ccc" then error("deliberate: " .. ev.data) end end,
    })
    local c = assert(evtcp.connect("127.0.0.1", l.port, {}))
    c:send("aaabbbccc")
    c:shutdown()
    local raised = {}
    for _ = 1, 20 do -- the program catches what run() raises and runs again
      local ok, err = pcall(evtcp.run, 0.2)
      if not ok then raised[#raised + 1] = tostring(err):match("deliberate: %a+") end
      if frames[#frames] == "<end>" then break end
    end
    assert.same({ "deliberate: aaa", "deliberate: bbb" }, raised)
    assert.same({ "aaa", "bbb", "ccc", "<end>" }, frames)
  end)

  it("after onData raised, the next delimiter is found: the search starts again at the next frame", function()
    -- "aaaa|" leaves the search at offset 4; "|bb||cc||" completes the frame,
    -- onData raises, and the search resumed at 4 of "bb||cc||", skipping a delimiter
    local l, frames = framing_server({ framing = { delimiter = "||" } }, {
      onData = function(_, _, ev) if ev.data == "aaaa" then error("deliberate") end end,
    })
    local c = assert(evtcp.connect("127.0.0.1", l.port, {}))
    c:send("aaaa|")
    local raised = 0
    local sent = false
    for _ = 1, 40 do
      local ok = pcall(evtcp.run, 0.1)
      if not ok then raised = raised + 1 end
      if not sent then c:send("|bb||cc||") c:shutdown() sent = true end
      if frames[#frames] == "<end>" then break end
    end
    assert.equal(1, raised)
    assert.same({ "aaaa", "bb", "cc", "<end>" }, frames)
  end)

  it("an onData that hands the connection to the blocking style reads on from the next frame", function()
    local got = {}
    local l, frames = framing_server({ framing = "line" }, {
      onData = function(_, conn)
        conn.handler = {} -- from now on, the blocking style
        conn.framing = nil
        -- what is there already is read at once, inside onData: the next line
        got[#got + 1] = conn:receive("l")
        evtcp.spawn(function()
          while true do
            local line = conn:receive("l", 5)
            if not line then break end
            got[#got + 1] = line
          end
          conn:close()
        end)
      end,
    })
    local c = assert(evtcp.connect("127.0.0.1", l.port, {}))
    c:send("one\ntwo\nthree\n") -- one write: three frames in one arrival
    c:shutdown()
    H.run_until(function() return #got >= 2 or c.closed end, "the coroutine's lines")
    H.run_until(function() return c.closed end, "the server to close")
    assert.same({ "one" }, frames)
    assert.same({ "two", "three" }, got)
  end)

  it("conn.framing reads back as given, nil returns to chunks, and input already kept is framed", function()
    local conn
    local l, frames = framing_server({}, { onConnection = function(_, c) conn = c end })
    local c = assert(evtcp.connect("127.0.0.1", l.port, {}))
    H.run_until(function() return conn end, "the connection")
    assert.is_nil(conn.framing)
    conn.framing = { delimiter = ";" }
    assert.same({ delimiter = ";" }, conn.framing)
    conn.framing = 7
    assert.equal(7, conn.framing)
    conn.framing = "line"
    assert.equal("line", conn.framing)
    c:send("a\nb\n")
    H.run_until(function() return #frames == 2 end, "two lines")
    conn.framing = nil
    assert.is_nil(conn.framing)
    c:send("raw\nbytes")
    H.run_until(function() return #frames == 3 end, "a chunk")
    assert.same({ "a", "b", "raw\nbytes" }, frames)
    -- a frame not yet whole is cut again by a new framing, with no new input
    conn.framing = 100
    c:send("x\ny\n")
    H.run_until(function() return conn.bytesRead == 17 end, "the bytes")
    evtcp.sleep(0.05)
    assert.equal(3, #frames)
    conn.framing = "line"
    H.run_until(function() return #frames == 5 end, "the lines already there")
    assert.same({ "x", "y" }, { frames[4], frames[5] })
    c:close()
  end)

  it("framing set while input is kept (no onData yet) cuts what is there", function()
    local conn
    local l = server(function() return { onConnection = function(_, c) conn = c end } end)
    local c = assert(evtcp.connect("127.0.0.1", l.port, {}))
    c:send("x1\nx2\nx3")
    H.run_until(function() return conn and conn.bytesRead == 8 end, "the bytes kept")
    local frames = {}
    conn.framing = "line"
    conn.handler = { onData = function(_, _, ev) frames[#frames + 1] = ev.data end }
    H.run_until(function() return #frames == 2 end, "the kept lines")
    assert.same({ "x1", "x2" }, frames)
    c:close()
  end)

  it("bad values are argument errors that name the option or the property", function()
    local function listen_with(v)
      return pcall(evtcp.listen, 0, { address = "127.0.0.1", framing = v })
    end
    for _, bad in ipairs({ "lines", 0, -3, 1.5, {}, { delimiter = "" }, true }) do
      local ok, err = listen_with(bad)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("option 'framing'", 1, true), tostring(err))
    end
    local ok, err = pcall(evtcp.connect, "127.0.0.1", 1, { framing = "words" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("bad argument #3 to '[%w.]*connect' %(option 'framing'"), tostring(err))
    local c = evtcp.connect("127.0.0.1", H.free_port(), { onError = function() end })
    ok, err = pcall(function() c.framing = { delimiter = 5 } end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("TCPConnection.framing must have a delimiter", 1, true), tostring(err))
    c:close()
  end)

  it("replies to pipelined frames arrive whole and in order, and a close() among them waits for them", function()
    local l = server(function()
      return {
        framing = "line",
        onData = function(_, conn, ev)
          if ev.data == "QUIT" then conn:send("BYE\n") conn:close() return end
          conn:send(ev.data:upper(), "\n")
        end,
      }
    end)
    local got
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", l.port))
      local lines = {}
      for i = 1, 100 do lines[i] = "line " .. i end
      c:send(table.concat(lines, "\n") .. "\nQUIT\nnever answered\n")
      got = c:receive("a")
    end)
    local want = {}
    for i = 1, 100 do want[i] = "LINE " .. i .. "\n" end
    assert.equal(table.concat(want) .. "BYE\n", got)
  end)

  it("the replies to one arrival's frames leave in one write after the first (strace)", function()
    local out, trace = H.strace_lua([[
      local evtcp = require("evtcp")
      local l = assert(evtcp.listen(0, { address = "127.0.0.1", framing = "line",
        onConnection = function()
          return { onData = function(_, conn, ev) conn:send("+", ev.data, "\n") end }
        end }))
      evtcp.spawn(function()
        local c = assert(evtcp.dial("127.0.0.1", l.port))
        local req, want = {}, {}
        for i = 1, 16 do req[i] = "req " .. i .. "\n"; want[i] = "+req " .. i .. "\n" end
        c:send(table.concat(req))                -- 16 pipelined requests, one write
        local got = c:receive(#table.concat(want))
        print(got == table.concat(want) and "intact" or ("damaged: " .. tostring(got)))
        c:close()
        l:close()
      end)
      evtcp.run(5)
    ]], "sendmsg,writev,write,sendto")
    if not out then pending(trace) return end
    local writes = 0
    for _, line in ipairs(trace) do
      if line:find("sendmsg%(") or line:find("writev%(") or line:find("sendto%(") then writes = writes + 1 end
    end
    assert.matches("intact", out)
    -- the client's requests, the first reply at once, the other 15 together
    -- (17 writes without the cork)
    assert.is_true(writes <= 4, ("%d writes"):format(writes))
  end)

  it("lines from a real peer (socat) arrive whole", function()
    local l, frames = framing_server({ framing = "line" })
    local lines = {}
    for i = 1, 200 do lines[i] = ("%d %s"):format(i, string.rep("z", i * 7)) end
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(table.concat(lines, "\r\n"), "\r\n")
    f:close()
    local peer = io.popen(("%stimeout 10 socat -b 333 OPEN:%s TCP4:127.0.0.1:%d 2>&1"):format(H.peer, path, l.port))
    H.run_until(function() return frames[#frames] == "<end>" end, "socat's lines", 15)
    peer:close()
    os.remove(path)
    assert.equal(201, #frames)
    for i = 1, 200 do assert.equal(lines[i], frames[i]) end
  end)
end)
