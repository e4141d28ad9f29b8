-- bench/run.lua - runs every echo server under the same load and prints the
-- table of bench/README.md. usage: lua5.4 run.lua full|quick
--
-- Each server runs pinned to CPU 0 and the load generator to CPU 1
-- (taskset). The order of the servers rotates from round to round. What is
-- compared is the server's CPU time per unit of work, read from
-- /proc/PID/stat: it stays meaningful when the load generator is the
-- bottleneck. Each figure is the median over the rounds, and each ratio the
-- median of the ratios to the C bufferevent server of the same round.

local quick = arg[1] == "quick"
local ROUNDS = quick and 1 or 3
local SECONDS = quick and 1 or 4
local IDLE_CONNS = quick and 500 or 2000

-- BENCH_MODES=bulk,pp50 runs only those modes (development)
local only = os.getenv("BENCH_MODES")

-- BENCH_SUITES=tcp,tls,real (default all)
local suites_wanted = os.getenv("BENCH_SUITES") or "tcp,tls,real"

local servers = {
  { name = "C, libevent bufferevents", cmd = "bin/c_bufferevent_echo" },
  { name = "C, libevent events, direct I/O", cmd = "bin/c_direct_echo" },
  { name = "evtcp, callbacks", cmd = "lua5.4 evtcp_echo.lua" },
  { name = "evtcp, coroutines", cmd = "lua5.4 evtcp_co_echo.lua" },
  { name = "luv", cmd = "lua5.4 luv_echo.lua" },
}

local modes = {
  { key = "pp50", title = "ping-pong, 50 conns, 64 B", args = "pingpong %d 50 64 " .. SECONDS,
    unit = "us/rt", scale = 1e6, per = "ops", rate = "rt/s" },
  { key = "pp500", title = "ping-pong, 500 conns, 64 B", args = "pingpong %d 500 64 " .. SECONDS,
    unit = "us/rt", scale = 1e6, per = "ops", rate = "rt/s" },
  { key = "bulk", title = "bulk, 10 conns, 64 KiB writes", args = "bulk %d 10 65536 " .. SECONDS,
    unit = "ms/MB", scale = 1e3, per = "MB", rate = "MB/s" },
  { key = "connect", title = "connect, 50 at once", args = "connect %d 50 1 " .. SECONDS,
    unit = "us/conn", scale = 1e6, per = "ops", rate = "conn/s" },
  { key = "idle", title = "idle memory per connection", args = "idle %d " .. IDLE_CONNS .. " 1 2",
    unit = "B/conn" },
}

-- TLS 1.3, an ECDSA P-256 certificate made for the run; the C server on
-- libevent's OpenSSL bufferevents is the reference (the limit), Node's tls
-- what a user might pick instead
local certdir = os.tmpname()
local cert, key = certdir .. "/cert.pem", certdir .. "/key.pem"
local tls_servers = {
  { name = "C, libevent OpenSSL bufferevents", cmd = "bin/c_tls_echo " .. cert .. " " .. key },
  { name = "evtcp, callbacks", cmd = "lua5.4 evtcp_tls_echo.lua " .. cert .. " " .. key },
  { name = "Node.js tls", cmd = "node node_tls_echo.js " .. cert .. " " .. key },
}

local tls_modes = {
  { key = "tpp50", title = "TLS ping-pong, 50 conns, 64 B", args = "pingpong %d 50 64 " .. SECONDS,
    unit = "us/rt", scale = 1e6, per = "ops", rate = "rt/s", gen = "bin/tls_loadgen" },
  { key = "tbulk", title = "TLS bulk, 10 conns, 64 KiB writes", args = "bulk %d 10 65536 " .. SECONDS,
    unit = "ms/MB", scale = 1e3, per = "MB", rate = "MB/s", gen = "bin/tls_loadgen" },
  { key = "thandshake", title = "TLS handshakes, 20 at once", args = "handshake %d 20 0 " .. SECONDS,
    unit = "us/hs", scale = 1e6, per = "ops", rate = "hs/s", gen = "bin/tls_loadgen" },
  { key = "tresume", title = "TLS resumed handshakes, 20 at once", args = "handshake %d 20 1 " .. SECONDS,
    unit = "us/hs", scale = 1e6, per = "ops", rate = "hs/s", gen = "bin/tls_loadgen" },
  { key = "tidle", title = "TLS idle memory per connection", args = "idle %d " .. IDLE_CONNS .. " 1 2",
    unit = "B/conn", gen = "bin/tls_loadgen" },
}

-- Real clients nobody here wrote, against mini servers written as a user
-- would (bench/real/): a mini Redis driven by redis-benchmark, an HTTP/1.1
-- keep-alive responder driven by wrk. luv is the reference (1.00);
-- redis-server, the C original, runs the Redis modes only.
local real_servers = {
  { name = "luv", redis = "lua5.4 real/luv_redis.lua", http = "lua5.4 real/luv_http.lua" },
  { name = "evtcp, callbacks", redis = "lua5.4 real/evtcp_redis.lua", http = "lua5.4 real/evtcp_http.lua" },
  { name = "evtcp, coroutines", redis = "lua5.4 real/evtcp_co_redis.lua", http = "lua5.4 real/evtcp_co_http.lua" },
  { name = "redis-server (C)", redis = "sh -c 'echo listening on 127.0.0.1:%PORT%; exec redis-server --port %PORT% " ..
      "--bind 127.0.0.1 --save \"\" --appendonly no'" },
}
local REDIS_N = quick and 50000 or 200000
local real_modes = {
  { key = "redis", title = "redis-benchmark SET+GET, 50 conns", kind = "redis", unit = "us/req", scale = 1e6,
    per = "ops", rate = "req/s", client = "redis-benchmark -p %d -t set,get -c 50 -q -n " .. REDIS_N, requests = 2 * REDIS_N },
  { key = "redis16", title = "redis-benchmark SET+GET, 50 conns, pipelined 16", kind = "redis", unit = "us/req",
    scale = 1e6, per = "ops", rate = "req/s", client = "redis-benchmark -p %d -t set,get -c 50 -q -P 16 -n " .. 5 * REDIS_N,
    requests = 10 * REDIS_N },
  { key = "wrk50", title = "wrk, 50 conns", kind = "http", unit = "us/req", scale = 1e6, per = "ops", rate = "req/s",
    client = "wrk -t1 -c50 -d" .. SECONDS .. "s http://127.0.0.1:%d/" },
  { key = "wrk500", title = "wrk, 500 conns", kind = "http", unit = "us/req", scale = 1e6, per = "ops", rate = "req/s",
    client = "wrk -t1 -c500 -d" .. SECONDS .. "s http://127.0.0.1:%d/" },
}

local function keep_only(list)
  if not only then return list end
  local keep = {}
  for _, m in ipairs(list) do
    if ("," .. only .. ","):find("," .. m.key .. ",", 1, true) then keep[#keep + 1] = m end
  end
  return keep
end

local suites = {}
if suites_wanted:find("tcp") then
  suites[#suites + 1] = { title = "TCP echo", servers = servers, modes = keep_only(modes) }
end
if suites_wanted:find("tls") then
  if os.execute("command -v node >/dev/null 2>&1") ~= true then
    io.stderr:write("node is not installed: the TLS table has no Node column\n")
    table.remove(tls_servers, 3)
  end
  suites[#suites + 1] = { title = "TLS echo", servers = tls_servers, modes = keep_only(tls_modes), tls = true }
end
if suites_wanted:find("real") then
  if os.execute("command -v wrk >/dev/null 2>&1 && command -v redis-benchmark >/dev/null 2>&1") ~= true then
    io.stderr:write("wrk or redis-benchmark is missing (make bench installs them): no real-client table\n")
  else
    suites[#suites + 1] = { title = "Real clients", servers = real_servers, modes = keep_only(real_modes) }
  end
end

local function sh(cmd)
  local f = assert(io.popen(cmd))
  local out = f:read("a")
  f:close()
  return out
end

local TICK = tonumber(sh("getconf CLK_TCK")) or 100

local function read_file(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- utime + stime of a process, in seconds.
local function cpu_seconds(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  local fields = {}
  for w in stat:match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = w end
  -- after "pid (comm) ", field 3 of stat is fields[1]: utime is 14, stime 15
  return (tonumber(fields[12]) + tonumber(fields[13])) / TICK
end

local function rss_bytes(pid)
  return tonumber(read_file("/proc/" .. pid .. "/status"):match("VmRSS:%s*(%d+)")) * 1024
end

local function sleep(s) os.execute("sleep " .. s) end

--- Starts a server on CPU 0; returns its pid and port.
local function free_port()
  local evtcp = require("evtcp")
  local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
  local port = l.port
  l:terminate()
  evtcp.run(0.1)
  return port
end

local function start(server, cmd)
  local log = os.tmpname()
  cmd = cmd or server.cmd
  if cmd:find("%PORT%", 1, true) then cmd = cmd:gsub("%%PORT%%", tostring(free_port())) end
  local pid = sh(("taskset -c 0 %s > %s 2>&1 & echo $!"):format(cmd, log)):match("%d+")
  local port
  for _ = 1, 100 do
    port = tonumber((read_file(log) or ""):match("listening on [%d.]+:(%d+)"))
    if port then break end
    sleep(0.05)
  end
  os.remove(log)
  assert(port, server.name .. " did not start")
  sleep(0.2)
  return pid, port
end

local function stop(pid)
  os.execute("kill " .. pid .. " 2>/dev/null; sleep 0.2")
end

local function parse(line)
  local r = {}
  for k, v in line:gmatch("(%w+)=(%S+)") do r[k] = tonumber(v) or v end
  return r
end

--- One measurement: returns { cost = per unit, rate = per second } or nil.
--- A real client's run: the requests it made and the seconds they took.
local function real_client(mode, port)
  local t0 = require("evtcp.core").now()
  local out = sh(("taskset -c 1 " .. mode.client .. " 2>&1"):format(port))
  local seconds = require("evtcp.core").now() - t0
  if mode.kind == "redis" then
    local n = 0
    for _ in out:gmatch("requests per second") do n = n + 1 end
    if n ~= 2 or out:find("ERR") then return nil end
    return { ops = mode.requests, seconds = seconds, errors = 0 }
  end
  local requests, secs = out:match("(%d+) requests in ([%d.]+)s")
  if not requests or out:find("Non%-2xx") then return nil end
  return { ops = tonumber(requests), seconds = tonumber(secs), errors = 0 }
end

local function measure(server, mode)
  local cmd = server.cmd
  if mode.kind then
    cmd = server[mode.kind]
    if not cmd then return nil end -- this server does not speak this protocol
  end
  local pid, port = start(server, cmd)
  if not mode.kind then
    cmd = ("taskset -c 1 " .. (mode.gen or "bin/loadgen") .. " " .. mode.args .. " 2>&1"):format(port)
  end
  local result
  if mode.key == "idle" or mode.key == "tidle" then
    local before = rss_bytes(pid)
    local p = io.popen(cmd)
    local line = p:read("l")
    local during = line == "ready" and rss_bytes(pid)
    local r = parse(p:read("a"))
    p:close()
    if during and r.errors == 0 then result = { cost = (during - before) / r.ops } end
  elseif mode.kind then
    local cpu0 = cpu_seconds(pid)
    local r = real_client(mode, port)
    local cpu = cpu_seconds(pid) - cpu0
    if r then
      result = { cost = cpu / r.ops * mode.scale, rate = r.ops / r.seconds }
    else
      io.stderr:write(("%s, %s: the client failed, not counted\n"):format(server.name, mode.key))
    end
  else
    local cpu0 = cpu_seconds(pid)
    local r = parse(sh(cmd))
    local cpu = cpu_seconds(pid) - cpu0
    if r.errors == 0 and r.ops then
      local work = mode.per == "MB" and r.bytes / 1e6 or r.ops
      result = { cost = cpu / work * mode.scale, rate = work / r.seconds, p99 = r.p99_us }
    else
      io.stderr:write(("%s, %s: errors in the run, not counted\n"):format(server.name, mode.key))
    end
  end
  stop(pid)
  return result
end

local function median(t)
  table.sort(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

local function run_suite(suite)
-- the suite's own lists (a quick run's are shorter than the file's)
local servers, modes = suite.servers, suite.modes -- luacheck: ignore 431
-- results[mode][server] = { costs = {}, rates = {}, ratios = {} }
local results = {}
for _, m in ipairs(modes) do
  results[m.key] = {}
  for _, s in ipairs(servers) do results[m.key][s.name] = { costs = {}, rates = {}, ratios = {} } end
end

for round = 1, ROUNDS do
  for _, m in ipairs(modes) do
    local order = {}
    for i = 1, #servers do order[i] = servers[(i + round - 2) % #servers + 1] end
    local this_round = {}
    for _, s in ipairs(order) do
      io.stderr:write(("round %d/%d  %-32s %s\n"):format(round, ROUNDS, m.title, s.name))
      this_round[s.name] = measure(s, m)
    end
    local ref = this_round[servers[1].name]
    for _, s in ipairs(servers) do
      local r, slot = this_round[s.name], results[m.key][s.name]
      if r then
        slot.costs[#slot.costs + 1] = r.cost
        if r.rate then slot.rates[#slot.rates + 1] = r.rate end
        if ref and ref.cost > 0 then slot.ratios[#slot.ratios + 1] = r.cost / ref.cost end
      end
    end
  end
end

local function fmt(x, digits)
  if not x then return "n/a" end
  return (("%." .. (digits or 2) .. "f"):format(x))
end

print("### " .. suite.title)
print()
print(("Server CPU per unit of work, median (ratio to %s of the same round; lower is better):"):format(
  servers[1].name:match("^C,") and "the C server" or servers[1].name))
print()
--- Prints a markdown table: a row per server, a column per mode that cell()
-- has something for.
local function table_of(cell)
  local header, rule = "| server |", "|---|"
  for _, m in ipairs(modes) do
    if cell(m, servers[1]) then header, rule = header .. " " .. m.title .. " |", rule .. "---|" end
  end
  print(header)
  print(rule)
  for _, s in ipairs(servers) do
    local row = "| " .. s.name .. " |"
    for _, m in ipairs(modes) do
      local text = cell(m, s)
      if text then row = row .. " " .. text .. " |" end
    end
    print(row)
  end
end

table_of(function(m, s)
  local slot = results[m.key][s.name]
  local digits = m.unit == "B/conn" and 0 or (m.unit == "ms/MB" and 2 or 1)
  if #slot.costs == 0 then return "-" end -- this server does not run this mode
  return ("%s %s (%s)"):format(fmt(median(slot.costs), digits), m.unit, fmt(median(slot.ratios)))
end)
print()
print("Throughput, median:")
print()
table_of(function(m, s)
  if m.rate and #results[m.key][s.name].rates == 0 then return "-" end
  return m.rate and ("%s %s"):format(fmt(median(results[m.key][s.name].rates), 0), m.rate)
end)
print()
end

local t0 = os.time()
local cpu = sh("grep -m1 'model name' /proc/cpuinfo"):match(":%s*(.-)%s*$") or "unknown CPU"
print(("Machine: %s, %d CPUs; Linux %s; %d round(s) of %d s per mode; %s."):format(
  cpu, tonumber(sh("nproc")), sh("uname -r"):gsub("%s", ""), ROUNDS, SECONDS, os.date("!%Y-%m-%d")))
print()
for _, suite in ipairs(suites) do
  if suite.tls then
    os.remove(certdir) -- os.tmpname made a file there
    os.execute("mkdir -p " .. certdir)
    assert(os.execute(("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes " ..
      "-keyout %s -out %s -days 2 -subj /CN=localhost 2>/dev/null"):format(key, cert)))
  end
  run_suite(suite)
  if suite.tls then os.execute("rm -rf " .. certdir) end
end
print(("(%d s in all)"):format(os.time() - t0))
