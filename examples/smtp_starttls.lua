-- usage: lua5.4 examples/smtp_starttls.lua [port] [address] [cafile] [name]
-- An SMTP client that upgrades to TLS (RFC 3207) before it says anything
-- that matters: the greeting and EHLO in the clear, STARTTLS, the server's
-- "220 ready", conn:startTLS (which checks the certificate against `name`,
-- the host dialled by default), then EHLO again over TLS - the server's
-- first answer, its extensions, must be asked again once encrypted - and
-- QUIT. A server that does not offer STARTTLS gets QUIT and an exit 1:
-- mail must not go in the clear by accident.
dofile((arg[0]:match("^(.*)/") or ".") .. "/checkout.lua") -- the checkout's evtcp (drop in your programs)
local evtcp = require("evtcp")

local port = tonumber(arg[1]) or 25
local address = arg[2] or "127.0.0.1"
local cafile = arg[3] -- nil: the system's CA store
local name = arg[4]   -- nil: the address dialled

--- One SMTP reply (its lines "250-..." up to "250 ..."): code, lines.
local function reply(conn)
  local lines = {}
  repeat
    local line = assert(conn:receive("l", 10))
    lines[#lines + 1] = line
  until line:sub(4, 4) ~= "-"
  return tonumber(lines[1]:sub(1, 3)), lines
end

local function say(conn, line)
  print("C: " .. line)
  assert(conn:send(line .. "\r\n"))
  local code, lines = reply(conn)
  for _, l in ipairs(lines) do print("S: " .. l) end
  return code, lines
end

local conn = assert(evtcp.dial(address, port, { timeout = 10 }))
local code, lines = reply(conn)
print("S: " .. lines[1])
assert(code == 220, "no SMTP greeting")
local _, ehlo = say(conn, "EHLO client.example")
local offers = false
for _, l in ipairs(ehlo) do offers = offers or l:sub(5):upper() == "STARTTLS" end
if not offers then
  say(conn, "QUIT")
  io.stderr:write("the server does not offer STARTTLS: not sending mail in the clear\n")
  os.exit(1)
end
assert(say(conn, "STARTTLS") == 220, "STARTTLS refused")
-- nothing may be buffered after the "220": evtcp refuses the upgrade if
-- the server slipped plaintext in (a STARTTLS injection)
assert(conn:startTLS({ ca = cafile, serverName = name }))
print(("-- TLS: %s, %s"):format(conn.tls.protocol, conn.tls.cipher))
say(conn, "EHLO client.example") -- asked again: the answer in the clear is not to be trusted
say(conn, "QUIT")
conn:close()
