-- evtcp.resolve(name [, timeout]): a waiting call, in every context.
local evtcp = require("evtcp")
local core = require("evtcp.core")
local H = require("helper")

describe("evtcp.resolve", function()
  after_each(function() assert.is_true(H.cleanup(), "the loop did not finish after the spec") end)

  it("gives the addresses of a name from /etc/hosts, at the top level and in a coroutine", function()
    local top = assert(evtcp.resolve("localhost"))
    assert.is_true(#top >= 1)
    local found = false
    for _, ip in ipairs(top) do
      assert.is_string(ip)
      if ip == "127.0.0.1" then found = true end
    end
    assert.is_true(found, "localhost resolves to 127.0.0.1 here")
    local inside
    H.go(function() inside = assert(evtcp.resolve("localhost", 5)) end)
    assert.same(top, inside)
  end)

  it("gives an IP literal back as it is, each address once", function()
    assert.same({ "127.0.0.1" }, evtcp.resolve("127.0.0.1"))
    assert.same({ "::1" }, evtcp.resolve("::1"))
  end)

  it("reports a name that does not exist as an error of kind dns", function()
    local none, err = evtcp.resolve("no-such-host.invalid")
    assert.is_nil(none)
    assert.equal("dns", err.kind)
    assert.equal("dns", err.componentSignature)
    assert.matches("%(dns%)$", tostring(err))
  end)

  it("gives up at its timeout when the resolver is slow or unreachable", function()
    -- whatever this machine's resolver does with a name it must ask the
    -- network about, the answer (or the timeout) comes within the bound
    local t0 = H.now()
    local addrs, err = evtcp.resolve("evtcp-spec-" .. math.random(1e9) .. ".example.com", 0.3)
    assert.is_true(H.now() - t0 < 1.5, "resolve returned after " .. (H.now() - t0) .. " s")
    if not addrs then assert.is_true(err.kind == "timeout" or err.kind == "dns", err.kind) end
  end)

  it("keeps run going while a lookup is in flight in a coroutine", function()
    local got
    evtcp.spawn(function() got = evtcp.resolve("localhost") end)
    assert.is_true(evtcp.run(5))
    assert.is_table(got)
  end)

  it("delivers a lookup nobody keeps a reference to, and none that was cancelled", function()
    local delivered, cancelled_ran, network_answer = nil, false, nil
    core.lookup("localhost", function(_, addrs) delivered = addrs end)
    -- a name the resolver must ask the network about: answered later
    core.lookup("evtcp-spec-" .. math.random(1e9) .. ".example.com", function(_, addrs, err)
      network_answer = addrs or err
    end)
    local r = core.lookup("localhost", function() cancelled_ran = true end)
    assert.is_true(r:cancel())
    assert.is_false(r:cancel())
    collectgarbage(); collectgarbage()
    H.run(30)
    assert.is_table(delivered)
    assert.is_false(cancelled_ran)
    assert.is_not_nil(network_answer, "run() returned before the lookup in flight was answered")
  end)

  it("rejects bad arguments, and raises inside a plain callback", function()
    assert.has_error(function() evtcp.resolve(42) end, "bad argument #1 to 'resolve' (string expected, got number)")
    assert.has_error(function() evtcp.resolve("") end, "bad argument #1 to 'resolve' (name must be 1 to 255 bytes)")
    assert.has_error(function() evtcp.resolve("localhost", -1) end,
      "bad argument #2 to 'resolve' (timeout must be a number >= 0)")
    local err
    evtcp.after(0, function() err = select(2, pcall(evtcp.resolve, "localhost")) end)
    H.run()
    assert.matches("the loop is already running", err)
  end)
end)
