--- The connection-ends fuzzer (part of make fuzz): pairs of connections,
-- plain TCP and TLS, where each side follows a random script -- sends of
-- random sizes, pauses, then shutdown(), close() or reset(), at random
-- moments, with or without allowHalfOpen -- while the other still sends.
-- Every byte is accounted for, in both directions:
--   * the bytes a side receives are, in order, a prefix of what its peer's
--     send() accepted;
--   * a side that saw its peer's end (onEnd) and ended cleanly got exactly
--     what the peer's send() accepted: a clean end never hides a loss (a
--     reset that reads as an end, a close that stopped the peer's sending);
--   * when neither side resets, neither gets onError: a close() or
--     shutdown() while the peer still sends is not a reset;
--   * every connection ends once and terminates once.
-- FUZZ_PAIRS pairs (default 400), FUZZ_SEED; prints one line of figures,
-- exits 1 on the first broken rule.
local evtcp = require("evtcp")
local H = require("helper")

local PAIRS = tonumber(os.getenv("FUZZ_PAIRS")) or 400
local SEED = tonumber(os.getenv("FUZZ_SEED")) or 1
local AT_ONCE = 6

local R = require("attack.random")(SEED, 17)
local rand, chance, pick = R.rand, R.chance, R.pick

local stats = { pairs = 0, bytes = 0, checked = 0, resets = 0, tls = 0 }
local current = "?"

local function fail(fmt, ...)
  io.stderr:write(("FUZZ_ENDS FAILURE (seed %d, pair %d): "):format(SEED, stats.pairs) .. fmt:format(...)
    .. "\n  " .. current .. "\n")
  os.exit(1)
end

local pattern = H.bytes(65521, 5) -- a prime period: misplaced bytes show

local certs, cert_dir = H.self_signed()

--- One side's record and its script.
local function new_side(name)
  local s = { name = name, accepted = 0, received = 0, log = {}, steps = {} }
  local n = rand(6)
  for _ = 1, n do
    local x = rand(10)
    if x <= 6 then s.steps[#s.steps + 1] = { "send", pick({ 1, 100, 4096, 65536, 262144, 1 << 20 }) }
    elseif x <= 8 then s.steps[#s.steps + 1] = { "pause" }
    else s.steps[#s.steps + 1] = { "wait" } end
  end
  s.ending = pick({ { "close" }, { "close" }, { "shutdown" }, { "shutdown", "close" }, { "reset" },
                    { "shutdown", "reset" }, { "none" } })
  s.half_open = chance(0.4)
  s.script = {}
  for i, st in ipairs(s.steps) do s.script[i] = table.concat(st, " ") end
  s.plan = table.concat(s.ending, "+")
  return s
end

local function describe_pair(p)
  local function one(s)
    return ("%s[%s | %s%s] accepted %d, received %d, events %s"):format(s.name, table.concat(s.script, ","),
      s.plan, s.half_open and ", allowHalfOpen" or "", s.accepted, s.received,
      table.concat(s.log, ","))
  end
  return ("%s: %s; %s"):format(p.tls and "TLS" or "plain", one(p.client), one(p.server))
end

local function note(s, what) s.log[#s.log + 1] = what end

--- The next step of s's script, then the next after a random delay.
local function run_script(s)
  local c = s.conn
  if not c or c.closed or s.stopped then return end
  local step = table.remove(s.steps, 1)
  if step then
    if step[1] == "send" then
      local data = H.repeat_slice(pattern, s.accepted, step[2])
      if c:send(data) == true then s.accepted = s.accepted + #data end
    elseif step[1] == "pause" then
      c:pause()
      s.paused = true
    end
    evtcp.after(pick({ 0, 0, 0.001, 0.01, 0.03 }), function() run_script(s) end)
    return
  end
  if s.paused then c:resume() s.paused = false end
  local action = table.remove(s.ending, 1)
  if action == "none" and s.half_open and s.got_end then action = "close" end -- the peer ended before
  if action == nil or action == "none" then s.script_done = true return end
  note(s, action)
  -- a reset, and a close() before connecting with nothing queued (an
  -- abort, API.md section 4), may end the peer with an error
  if action == "reset" or (s.log[1] ~= "connection" and s.accepted == 0) then s.did_reset = true end
  if (action == "close" or action == "reset") and not s.got_end then s.left_early = true end
  c[action](c)
  if #s.ending > 0 then evtcp.after(pick({ 0, 0.01, 0.05 }), function() run_script(s) end) end
end

--- The handler of side s: records, checks the order of the bytes, and
-- closes a half-open side whose script is done once the peer ended.
local function handler(s)
  return {
    allowHalfOpen = s.half_open,
    onConnection = function(_, c)
      note(s, "connection")
      s.conn = c
      if s.server then run_script(s) end
    end,
    onData = function(_, _, ev)
      if s.ended then fail("onData after the end") end
      if ev.data ~= H.repeat_slice(pattern, s.received, #ev.data) then
        fail("%s got bytes out of order at offset %d", s.name, s.received)
      end
      s.received = s.received + #ev.data
    end,
    onEnd = function(_, c)
      note(s, "end")
      s.got_end = true
      if s.half_open and s.script_done then c:close() end
    end,
    onShutdown = function() note(s, "shutdown") s.ended = "shutdown" end,
    onError = function(_, _, ev) note(s, "error " .. ev.error.kind) s.ended = "error" s.error = ev.error end,
    onTerminate = function() note(s, "terminate") s.terminated = (s.terminated or 0) + 1 end,
  }
end

--- The rules, once both sides have terminated.
local function check(p)
  local c, s = p.client, p.server
  current = describe_pair(p)
  for _, side in ipairs({ c, s }) do
    if side.terminated ~= 1 then fail("%s terminated %s times", side.name, tostring(side.terminated)) end
  end
  if not c.did_reset and not s.did_reset then
    for _, side in ipairs({ c, s }) do
      if side.ended == "error" then
        fail("%s got an error though nobody reset: %s", side.name, side.error.message)
      end
    end
  end
  for _, dir in ipairs({ { c, s }, { s, c } }) do
    local from, to = dir[1], dir[2]
    if to.ended == "shutdown" and to.got_end and to.received ~= from.accepted then
      fail("%s ended cleanly after the peer's end with %d of the %d bytes %s's send accepted",
           to.name, to.received, from.accepted, from.name)
    end
    if to.received > from.accepted then fail("%s got more than was sent", to.name) end
    stats.bytes = stats.bytes + to.received
  end
  if c.did_reset or s.did_reset then stats.resets = stats.resets + 1 end
  stats.checked = stats.checked + 1
end

---------------------------------------------------------------- run
-- each pair has its listener, for one client: the two sides pair up by
-- construction
local function start_pair()
  stats.pairs = stats.pairs + 1
  local p = { tls = chance(0.5), client = new_side("client"), server = new_side("server") }
  p.server.server = true
  if p.client.plan == "none" and p.server.plan == "none" then -- nobody would end: the client closes
    p.client.ending, p.client.plan = { "close" }, "close"
  end
  if p.tls then stats.tls = stats.tls + 1 end
  local l
  l = assert(evtcp.listen(0, { address = "127.0.0.1", tls = p.tls and certs or nil,
    onConnection = function()
      l:terminate()
      return handler(p.server)
    end }))
  local h = handler(p.client)
  if p.tls then h.tls = { verify = false } end
  p.client.conn = assert(evtcp.connect("127.0.0.1", l.port, h))
  run_script(p.client) -- sends may start before it is connected
  return p
end

require("attack.cases")(PAIRS, AT_ONCE, start_pair, function(p)
  if not (p.client.terminated and p.server.terminated) then return false end
  check(p)
  return true
end, function(p)
  current = describe_pair(p)
  fail("a pair did not end within 30 s")
end)
assert(evtcp.run(10), "the loop did not finish")
os.execute("rm -rf " .. cert_dir)
print(("fuzz_ends: seed %d, %d pairs (%d TLS, %d with a reset), %d checked, %d bytes accounted: passed")
  :format(SEED, stats.pairs, stats.tls, stats.resets, stats.checked, stats.bytes))
