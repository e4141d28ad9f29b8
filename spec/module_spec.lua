local H = require("helper")

describe("the evtcp module", function()
  it("runs on Lua 5.4", function()
    assert.are.equal("Lua 5.4", _VERSION)
  end)

  it("exports the API names", function()
    local evtcp = require("evtcp")
    for _, name in ipairs({ "connect", "listen", "run", "step", "stop", "sleep", "after" }) do
      assert.are.equal("function", type(evtcp[name]), name)
    end
    assert.are.equal(evtcp.connect, evtcp.TCPConnection.new)
    assert.are.equal(evtcp.listen, evtcp.TCPListener.new)
  end)

  it("does not touch the global table", function()
    local ok, out = H.lua_child([[
      local before = {}
      for k in pairs(_G) do before[k] = true end
      require("evtcp")
      for k in pairs(_G) do
        if not before[k] then print("new global: " .. tostring(k)) end
      end
      print("checked")
    ]])
    assert.is_true(ok, out)
    assert.are.equal("checked\n", out)
  end)

  it("can be required twice in one state and keeps one loop", function()
    local ok, out = H.lua_child([[
      local a = require("evtcp")
      package.loaded["evtcp.core"] = nil
      package.loaded["evtcp"] = nil
      local b = require("evtcp")
      local fired = 0
      a.after(0, function() fired = fired + 1 end)
      b.after(0, function() fired = fired + 1 end)
      assert(b.run(5))
      print(fired)
    ]])
    assert.is_true(ok, out)
    assert.are.equal("2\n", out)
  end)
end)
