-- TLS settings of section 8: versions, ciphers, encrypted keys, CRLs,
-- unknown keys, files named in errors, and the peer's certificate in full.
-- The peers are openssl's own s_client and x509 where they can tell.
local evtcp = require("evtcp")
local H = require("helper")

local dir = os.tmpname()
os.remove(dir)

local sh = H.sh

local function path(name) return dir .. "/" .. name end

-- What openssl says of a file (one line of `openssl x509 -noout -<what>`).
local function x509(file, what)
  local p = io.popen(H.peer .. "openssl x509 -noout -" .. what .. " -in " .. file)
  local out = p:read("a")
  p:close()
  return out
end

local function make_certs()
  os.execute("mkdir -p " .. dir)
  sh(("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=opts CA'"):format(dir))
  local function leaf(name, cn, san)
    sh(("cd %s && openssl req -newkey rsa:2048 -nodes -keyout %s.key -out %s.csr -subj '/CN=%s'"):format(dir, name, name, cn))
    sh(("cd %s && printf 'subjectAltName=%s\\n' > %s.ext"):format(dir, san, name))
    sh(("cd %s && openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out %s.pem -days 2 -extfile %s.ext")
      :format(dir, name, name, name))
  end
  leaf("server", "localhost", "DNS:localhost,IP:127.0.0.1,IP:::1")
  leaf("client", "good client", "DNS:client.example,email:ops@example.test")
  leaf("revoked", "revoked client", "DNS:revoked.example")
  -- the server's key again, encrypted
  sh(("cd %s && openssl rsa -in server.key -aes256 -passout pass:s3cret -out server-enc.key"):format(dir))
  -- a CRL from the CA that revokes one client
  sh(("cd %s && touch index.txt && echo 01 > crlnumber && printf '[ca]\\ndefault_ca=d\\n[d]\\ndatabase=index.txt\\n"
    .. "crlnumber=crlnumber\\ndefault_md=sha256\\ndefault_crl_days=2\\n' > ca.cnf && "
    .. "openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -revoke revoked.pem && "
    .. "openssl ca -config ca.cnf -keyfile ca.key -cert ca.pem -gencrl -out crl.pem"):format(dir))
  sh(("printf 'not a certificate\\n' > %s/garbage.pem"):format(dir))
end

local function server_tls(extra)
  local tls = { cert = path("server.pem"), key = path("server.key") }
  for k, v in pairs(extra or {}) do tls[k] = v end
  return tls
end

local function echo_rec(extra)
  return H.recorder(setmetatable({ onData = function(_, c, ev) c:send(ev.data) end }, { __index = extra }))
end

-- Connects an evtcp client with `tls` to a listener with `stls`; returns
-- the client's recorder, the server side's (if any), after one echo or the
-- failure.
local function pair(stls, tls)
  local server_rec
  local l = H.server(function()
    server_rec = echo_rec()
    return server_rec
  end, { tls = stls })
  local rec = H.recorder({ onConnection = function(_, c) c:send("ping") end })
  rec.tls = tls
  evtcp.connect("127.0.0.1", l.port, rec)
  H.run_until(function() return rec.data() == "ping" or #rec.errors > 0 end, "the echo or the failure")
  local conn = rec.conn
  local info = conn and conn.tls
  if conn then conn:close() end
  H.run_until(rec.terminated, "the client's end")
  l:terminate()
  return rec, server_rec, info
end

-- openssl s_client against a listener with stls: its output and status.
local function s_client(stls, flags)
  local l = H.server(function() return echo_rec() end, { tls = stls })
  local text, status = H.peer_run(("openssl s_client -connect 127.0.0.1:%d -CAfile %s %s </dev/null")
    :format(l.port, path("ca.pem"), flags))
  l:terminate()
  return text, status
end

describe("TLS options", function()
  setup(make_certs)
  teardown(function() os.execute("rm -rf " .. dir) end)
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  describe("an unknown key raises, naming it", function()
    it("in a client's tls table", function()
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { tls = { minversion = "1.3" } }) end,
        "bad argument #3 to 'connect' (option 'tls' has no key 'minversion' on a client)")
      assert.has_error(function() evtcp.dial("127.0.0.1", 1, { tls = { certfile = "x" } }) end,
        "bad argument #3 to 'dial' (option 'tls' has no key 'certfile' on a client)")
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { tls = { sni = {} } }) end,
        "bad argument #3 to 'connect' (option 'tls' has no key 'sni' on a client)")
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { tls = { [1] = "x" } }) end,
        "bad argument #3 to 'connect' (option 'tls' has a key of type number; its keys are names)")
    end)

    it("in a listener's tls table and in an sni entry", function()
      assert.has_error(function() evtcp.listen(0, { address = "127.0.0.1", tls = server_tls({ minVerison = "1.3" }) }) end,
        "bad argument #2 to 'listen' (option 'tls' has no key 'minVerison' on a server)")
      assert.has_error(function() evtcp.listen(0, { address = "127.0.0.1", tls = server_tls({ serverName = "x" }) }) end,
        "bad argument #2 to 'listen' (option 'tls' has no key 'serverName' on a server)")
      assert.has_error(function()
        evtcp.listen(0, { address = "127.0.0.1",
          tls = server_tls({ sni = { ["a.test"] = { cert = path("server.pem"), key = path("server.key"), ca = "x" } } }) })
      end, "bad argument #2 to 'listen' (option 'tls.sni[\"a.test\"]' has no key 'ca' (it takes cert, key and password))")
    end)

    it("bad version values and an inverted range raise", function()
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { tls = { minVersion = "1.1" } }) end,
        "bad argument #3 to 'connect' (option 'tls.minVersion' must be \"1.2\" or \"1.3\")")
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { tls = { maxVersion = 1.3 } }) end,
        "bad argument #3 to 'connect' (option 'tls.maxVersion' must be \"1.2\" or \"1.3\")")
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { tls = { minVersion = "1.3", maxVersion = "1.2" } }) end,
        "bad argument #3 to 'connect' (option 'tls.minVersion' is above tls.maxVersion)")
      assert.has_error(function() evtcp.connect("127.0.0.1", 1, { tls = { ciphers = 5 } }) end,
        "bad argument #3 to 'connect' (option 'tls.ciphers' must be a string)")
    end)
  end)

  describe("versions", function()
    it("a listener with minVersion 1.3 refuses openssl s_client -tls1_2 and takes -tls1_3", function()
      local text, status = s_client(server_tls({ minVersion = "1.3" }), "-tls1_2")
      assert.are_not.equal(0, status, text)
      assert.matches("alert protocol version", text)
      assert.matches("Cipher is %(NONE%)", text)
      text, status = s_client(server_tls({ minVersion = "1.3" }), "-tls1_3")
      assert.are.equal(0, status, text)
      assert.matches("New, TLSv1%.3, Cipher is", text)
    end)

    it("without minVersion the same listener takes TLS 1.2 (the spec above can fail)", function()
      local text, status = s_client(server_tls(), "-tls1_2")
      assert.are.equal(0, status, text)
      assert.matches("New, TLSv1%.2, Cipher is", text)
    end)

    it("maxVersion 1.2 on the client gives TLS 1.2; against minVersion 1.3 the handshake fails", function()
      local rec, _, info = pair(server_tls(), { ca = path("ca.pem"), maxVersion = "1.2" })
      assert.are.same({}, rec.errors)
      assert.are.equal("TLSv1.2", info.protocol)
      rec = pair(server_tls({ minVersion = "1.3" }), { ca = path("ca.pem"), maxVersion = "1.2" })
      assert.are.equal("tls", rec.errors[1].kind)
      assert.matches("protocol version", rec.errors[1].message)
    end)
  end)

  describe("ciphers", function()
    it("ciphers chooses TLS 1.2's, as s_client sees", function()
      local text, status = s_client(server_tls({ ciphers = "ECDHE-RSA-CHACHA20-POLY1305" }), "-tls1_2")
      assert.are.equal(0, status, text)
      assert.matches("Cipher is ECDHE%-RSA%-CHACHA20%-POLY1305", text)
      local _, _, info = pair(server_tls({ ciphers = "ECDHE-RSA-AES256-GCM-SHA384" }),
        { ca = path("ca.pem"), maxVersion = "1.2" })
      assert.are.equal("ECDHE-RSA-AES256-GCM-SHA384", info.cipher)
    end)

    it("ciphersuites chooses TLS 1.3's", function()
      local _, _, info = pair(server_tls(), { ca = path("ca.pem"), ciphersuites = "TLS_CHACHA20_POLY1305_SHA256" })
      assert.are.equal("TLS_CHACHA20_POLY1305_SHA256", info.cipher)
      _, _, info = pair(server_tls({ ciphersuites = "TLS_AES_128_GCM_SHA256" }), { ca = path("ca.pem") })
      assert.are.equal("TLS_AES_128_GCM_SHA256", info.cipher)
    end)

    it("a cipher list OpenSSL matches nothing in is a failure naming the option", function()
      local l, msg, _, err = evtcp.listen(0, { address = "127.0.0.1", tls = server_tls({ ciphers = "NO-SUCH-CIPHER" }) })
      assert.is_nil(l)
      assert.matches("^tls%.ciphers: .*no cipher match", msg)
      assert.are.equal("tls", err.kind)
      local rec = pair(server_tls(), { ca = path("ca.pem"), ciphersuites = "TLS_NOPE" })
      assert.are.equal("tls", rec.errors[1].kind)
      assert.matches("^tls%.ciphersuites: ", rec.errors[1].message)
    end)
  end)

  describe("an encrypted key", function()
    it("loads with password, from a file and as PEM text", function()
      local rec = pair(server_tls({ key = path("server-enc.key"), password = "s3cret" }), { ca = path("ca.pem") })
      assert.are.same({}, rec.errors)
      assert.are.equal("ping", rec.data())
      rec = pair(server_tls({ key = H.read(path("server-enc.key")), password = "s3cret" }), { ca = path("ca.pem") })
      assert.are.equal("ping", rec.data())
    end)

    it("without its password, or with a wrong one, fails at once naming the key (no prompt)", function()
      local l, msg = evtcp.listen(0, { address = "127.0.0.1", tls = server_tls({ key = path("server-enc.key") }) })
      assert.is_nil(l)
      assert.matches("^loading tls%.key '" .. path("server-enc.key"):gsub("%p", "%%%0") .. "': ", msg)
      l, msg = evtcp.listen(0, { address = "127.0.0.1", tls = server_tls({ key = path("server-enc.key"), password = "nope" }) })
      assert.is_nil(l)
      assert.matches("^loading tls%.key '", msg)
      l, msg = evtcp.listen(0, { address = "127.0.0.1", tls = server_tls({ key = H.read(path("server-enc.key")) }) })
      assert.is_nil(l)
      assert.matches("^loading tls%.key %(PEM text%): ", msg)
    end)
  end)

  describe("a CRL", function()
    local function with_client(name, crl)
      return pair(server_tls({ ca = path("ca.pem"), verify = true, crl = crl }),
        { ca = path("ca.pem"), cert = path(name .. ".pem"), key = path(name .. ".key") })
    end

    it("refuses a revoked client certificate and takes the others", function()
      local rec, server_rec = with_client("revoked", path("crl.pem"))
      assert.is_nil(server_rec and server_rec.conn and server_rec.conn.tls)
      assert.are.equal(0, #rec.chunks)
      rec = with_client("client", path("crl.pem"))
      assert.are.equal("ping", rec.data())
      -- as PEM text too
      rec = with_client("revoked", H.read(path("crl.pem")))
      assert.are.equal(0, #rec.chunks)
    end)

    it("without the CRL the revoked certificate is taken (the spec above can fail)", function()
      local rec = with_client("revoked", nil)
      assert.are.equal("ping", rec.data())
    end)

    it("on a client: a revoked server certificate fails verification", function()
      local l = H.server(function() return echo_rec() end,
        { tls = { cert = path("revoked.pem"), key = path("revoked.key") } })
      local rec = H.recorder()
      rec.tls = { ca = path("ca.pem"), crl = path("crl.pem"), serverName = "revoked.example" }
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(rec.terminated, "the failure")
      l:terminate()
      assert.are.equal("tls", rec.errors[1].kind)
      assert.matches("certificate revoked", rec.errors[1].message)
    end)

    it("a CRL on a listener needs ca", function()
      assert.has_error(function() evtcp.listen(0, { address = "127.0.0.1", tls = server_tls({ crl = path("crl.pem") }) }) end,
        "bad argument #2 to 'listen' (option 'tls.crl' needs tls.ca: a CRL is checked with the CA that verifies clients)")
    end)
  end)

  describe("errors about files name the file", function()
    for _, field in ipairs({ "ca", "crl", "cert", "key" }) do
      it("a missing tls." .. field, function()
        local tls = server_tls({ ca = path("ca.pem") })
        tls[field] = path("missing-" .. field .. ".pem")
        local l, msg, _, err = evtcp.listen(0, { address = "127.0.0.1", tls = tls })
        assert.is_nil(l)
        assert.are.equal("tls." .. field .. " '" .. path("missing-" .. field .. ".pem") .. "': No such file or directory", msg)
        assert.are.equal("tls", err.kind)
        assert.are.equal("ENOENT", err.errName)
      end)
    end

    it("a file that is not PEM", function()
      local l, msg = evtcp.listen(0, { address = "127.0.0.1", tls = server_tls({ cert = path("garbage.pem") }) })
      assert.is_nil(l)
      assert.matches("^loading tls%.cert '" .. path("garbage.pem"):gsub("%p", "%%%0") .. "': ", msg)
      local rec = H.recorder()
      rec.tls = { ca = path("garbage.pem") }
      evtcp.connect("127.0.0.1", 1, rec)
      H.run_until(rec.terminated, "the failure")
      assert.matches("^loading tls%.ca '", rec.errors[1].message)
    end)

    it("a key that does not match the certificate", function()
      local l, msg = evtcp.listen(0, { address = "127.0.0.1", tls = server_tls({ key = path("client.key") }) })
      assert.is_nil(l)
      assert.matches("^loading tls%.key '.*': .*key values mismatch", msg)
    end)
  end)

  describe("the peer's certificate", function()
    local function hexof(line) return (line:match("=%s*(%x[%x:]*)"):gsub(":", ""):lower()) end

    it("a client sees the server's SANs, fingerprint, serial, validity, PEM and chain, as openssl x509 does", function()
      local _, _, info = pair(server_tls(), { ca = path("ca.pem") })
      local cert = info.peerCertificate
      assert.are.same({ "DNS:localhost", "IP:127.0.0.1", "IP:::1" }, cert.subjectAltNames)
      assert.are.equal(hexof(x509(path("server.pem"), "fingerprint -sha256")), cert.fingerprint)
      assert.are.equal(64, #cert.fingerprint)
      assert.are.equal(hexof(x509(path("server.pem"), "serial")), cert.serial)
      assert.are.equal(2 * 86400, cert.notAfter - cert.notBefore)
      assert.is_true(math.abs(cert.notBefore - os.time()) < 3600)
      assert.are.equal(H.read(path("server.pem")), cert.pem)
      assert.are.same({ cert.pem }, info.peerChain)
      assert.matches("CN=localhost", cert.subject)
    end)

    it("a server sees the client's certificate, email SAN included, and its chain", function()
      local seen
      local l = H.server(function()
        return { onConnection = function(_, c) seen = c.tls c:close() end }
      end, { tls = server_tls({ ca = path("ca.pem"), verify = true }) })
      local rec = H.recorder()
      rec.tls = { ca = path("ca.pem"), cert = path("client.pem"), key = path("client.key") }
      evtcp.connect("127.0.0.1", l.port, rec)
      H.run_until(function() return seen and rec.terminated() end, "the server's look")
      l:terminate()
      local cert = seen.peerCertificate
      assert.are.same({ "DNS:client.example", "email:ops@example.test" }, cert.subjectAltNames)
      assert.are.equal(hexof(x509(path("client.pem"), "fingerprint -sha256")), cert.fingerprint)
      assert.are.equal(H.read(path("client.pem")), cert.pem)
      -- the client's OpenSSL sends the chain it builds from its own store
      assert.are.same({ cert.pem, H.read(path("ca.pem")) }, seen.peerChain)
    end)

    it("a chain sent with the certificate is in peerChain, leaf first", function()
      local chained = path("server.pem") -- the leaf, then the CA as its chain
      sh(("cat %s %s > %s"):format(path("server.pem"), path("ca.pem"), path("chain.pem")))
      local _, _, info = pair(server_tls({ cert = path("chain.pem") }), { ca = path("ca.pem") })
      assert.are.same({ H.read(chained), H.read(path("ca.pem")) }, info.peerChain)
    end)
  end)
end)
