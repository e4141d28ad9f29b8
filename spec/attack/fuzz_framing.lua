--- The framing model check (part of make fuzz): a client writes a random
-- stream (an alphabet rich in line ends and delimiter bytes) in random
-- write sizes, then half-closes; the server's handler cuts it with a
-- random framing -- "line", a byte count, a delimiter that may overlap
-- itself, raw chunks -- and, at random, switches the framing between
-- frames (inside onData and from timers), swaps its handler (for one with
-- no onData for a while, too), pauses and resumes, and raises in onData.
-- A model in Lua knows the whole stream and the framing in force, and
-- checks every onData: each byte once, in order, each frame whole, the
-- rest of an unfinished frame once at the end, then onEnd.
-- FUZZ_FRAMING streams (default 600), FUZZ_SEED; exits 1 on a mismatch.
local evtcp = require("evtcp")

local STREAMS = tonumber(os.getenv("FUZZ_FRAMING")) or 600
local SEED = tonumber(os.getenv("FUZZ_SEED")) or 1
local AT_ONCE = 6

local R = require("attack.random")(SEED, 29)
local rand, chance, pick = R.rand, R.chance, R.pick

local DELIBERATE = "fuzz_framing: deliberate"
local stats = { streams = 0, frames = 0, bytes = 0, switches = 0, swaps = 0, raised = 0, pauses = 0 }

local function fail(m, fmt, ...)
  io.stderr:write(("FUZZ_FRAMING FAILURE (seed %d, stream %d): "):format(SEED, m.id) .. fmt:format(...) .. "\n"
    .. ("  framings so far: %s\n  stream: %q\n"):format(table.concat(m.history, " "), m.stream))
  os.exit(1)
end

local ALPHABET = { "a", "b", "\n", "\r", "|", "||", "ab", "xyz", "\r\n", "|a" }
local function random_stream()
  local parts = {}
  for i = 1, rand(400) do parts[i] = pick(ALPHABET) end
  return table.concat(parts)
end

--- A framing value and its name, for conn.framing.
local function random_framing()
  local x = rand(10)
  if x <= 3 then return "line" end
  if x <= 5 then return pick({ 1, 2, 3, 7, 64 }) end
  if x <= 8 then return { delimiter = pick({ "|", "||", "ab", "aab", "\r\n", "a", "|a|" }) } end
  return nil -- raw chunks
end
local function framing_name(f)
  if type(f) == "table" then return ("{%q}"):format(f.delimiter) end
  return tostring(f)
end

--- The next frame of the model at its offset under framing f: the frame,
-- and the offset after it (its delimiter or line end consumed); nil when
-- the stream holds no whole frame from there.
local function next_frame(stream, at, f)
  if f == "line" then
    local nl = stream:find("\n", at + 1, true)
    if not nl then return nil end
    local line = stream:sub(at + 1, nl - 1)
    if line:sub(-1) == "\r" then line = line:sub(1, -2) end
    return line, nl
  elseif type(f) == "number" then
    if #stream - at < f then return nil end
    return stream:sub(at + 1, at + f), at + f
  elseif type(f) == "table" then
    local s, e = stream:find(f.delimiter, at + 1, true)
    if not s then return nil end
    return stream:sub(at + 1, s - 1), e
  end
  return nil -- raw: any prefix, checked by the caller
end

--- onData under the model: ev.data must be the next frame, or (raw) the
-- next bytes, or at the end the rest.
local function on_frame(m, data)
  if m.ended then fail(m, "onData after onEnd") end
  local f = m.framing
  stats.frames = stats.frames + 1
  stats.bytes = stats.bytes + #data
  if f == nil then
    if data ~= m.stream:sub(m.at + 1, m.at + #data) or #data == 0 then
      fail(m, "a raw chunk at %d is not the next %d bytes: %q", m.at, #data, data)
    end
    m.at = m.at + #data
    return
  end
  local frame, after = next_frame(m.stream, m.at, f)
  if frame == nil then -- no whole frame is left: this is the rest, at the end
    local rest = m.stream:sub(m.at + 1)
    if data ~= rest then fail(m, "at %d under %s expected the rest %q, got %q", m.at, framing_name(f), rest, data) end
    m.at = #m.stream
    m.rest_given = true
    return
  end
  if data ~= frame then fail(m, "at %d under %s expected %q, got %q", m.at, framing_name(f), frame, data) end
  m.at = after
end

local function set_framing(m, conn)
  local f = random_framing()
  m.framing = f
  m.history[#m.history + 1] = ("@%d:%s"):format(m.at, framing_name(f))
  conn.framing = f
  stats.switches = stats.switches + 1
end

--- Framing switched from a timer, between deliveries: what is kept is cut
-- by the new framing.
local function switch_later(m)
  evtcp.after(pick({ 0, 0.001, 0.004 }), function()
    if m.conn.closed or m.ended then return end
    if chance(0.5) then set_framing(m, m.conn) end
    if not m.rest_given then switch_later(m) end
  end)
end

--- Pauses conn for a while; overlapping holds resume once all are over.
local function hold(m, conn, seconds, after_fn)
  m.holds = (m.holds or 0) + 1
  conn:pause()
  evtcp.after(seconds, function()
    if after_fn then after_fn() end
    m.holds = m.holds - 1
    if m.holds == 0 then conn:resume() end
  end)
end

local function handler_for(m)
  local h = {}
  h.onConnection = function(_, conn)
    m.conn = conn
    if chance(0.5) then switch_later(m) end
  end
  h.onData = function(_, conn, ev)
    on_frame(m, ev.data)
    if chance(0.15) then set_framing(m, conn) end
    if chance(0.05) then
      -- a handler without onData for a while, paused (so the end waits
      -- too): input is kept, and goes to the next handler's onData
      stats.swaps = stats.swaps + 1
      conn.handler = { onShutdown = h.onShutdown, onError = h.onError, onTerminate = h.onTerminate }
      hold(m, conn, pick({ 0, 0.005 }), function() conn.handler = handler_for(m) end)
    elseif chance(0.05) then
      stats.swaps = stats.swaps + 1
      conn.handler = handler_for(m)
    end
    if chance(0.05) then
      stats.pauses = stats.pauses + 1
      hold(m, conn, pick({ 0, 0.003 }))
    end
    if chance(0.05) then stats.raised = stats.raised + 1 error(DELIBERATE) end
  end
  h.onEnd = function(_, conn)
    if m.at ~= #m.stream then fail(m, "onEnd at %d of %d bytes", m.at, #m.stream) end
    m.ended = true
    conn:close()
  end
  h.onShutdown = function() m.closed = true end
  h.onError = function(_, _, ev) fail(m, "onError: %s", ev.error.message) end
  h.onTerminate = function() m.terminated = true end
  return h
end

local function start_stream()
  stats.streams = stats.streams + 1
  local m = { id = stats.streams, stream = random_stream(), at = 0, history = {} }
  m.framing = random_framing()
  m.history[1] = "@0:" .. framing_name(m.framing)
  local l
  l = assert(evtcp.listen(0, { address = "127.0.0.1", framing = m.framing, onConnection = function()
    l:terminate()
    return handler_for(m)
  end }))
  local c = assert(evtcp.connect("127.0.0.1", l.port, { onEnd = function(_, c) c:close() end }))
  local at = 0
  local function write_some()
    if at >= #m.stream then c:shutdown() return end
    local n = pick({ 1, 1, 2, 3, 5, 16, 100, 1000 })
    c:send(m.stream:sub(at + 1, at + n))
    at = at + n
    if chance(0.3) then evtcp.after(pick({ 0, 0.002 }), write_some) else write_some() end
  end
  write_some()
  return m
end

require("attack.cases")(STREAMS, AT_ONCE, start_stream, function(m)
  if not m.terminated then return false end
  if not m.ended then fail(m, "terminated without onEnd") end
  return true
end, function(m)
  fail(m, "the stream did not end within 30 s (model at %d of %d)", m.at, #m.stream)
end, function()
  local ok, err = pcall(evtcp.step, 0.01) -- onData raises on purpose
  if not ok and not tostring(err):find(DELIBERATE, 1, true) then
    io.stderr:write("FUZZ_FRAMING FAILURE: " .. tostring(err) .. "\n")
    os.exit(1)
  end
end)
assert(evtcp.run(10), "the loop did not finish")
print(("fuzz_framing: seed %d, %d streams, %d frames (%d bytes) checked against the model, %d framing switches, "
  .. "%d handler swaps, %d pauses, %d raised: passed"):format(SEED, stats.streams, stats.frames, stats.bytes,
  stats.switches, stats.swaps, stats.pauses, stats.raised))
