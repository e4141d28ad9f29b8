-- The build, as a newcomer meets it: `make` finds the headers where the
-- systems put them, with or without pkg-config, and when they are missing
-- says so in one line that names the package, instead of a screen of
-- compiler errors.
local H = require("helper")

--- Runs make in the checkout with `args`, building into a temp dir; returns
-- the exit status, stdout and stderr.
local function make(args)
  local build = os.tmpname()
  os.remove(build)
  local out, err = os.tmpname(), os.tmpname()
  local ok = os.execute(("%smake -s --no-print-directory BUILD=%s %s %s/evtcp/core.so >%s 2>%s")
    :format(H.peer, build, args, build, out, err))
  local o, e = H.read(out), H.read(err)
  local built = io.open(build .. "/evtcp/core.so") ~= nil
  os.execute("rm -rf " .. build)
  os.remove(out)
  os.remove(err)
  return ok, o, e, built
end

describe("make", function()
  it("stops with one line naming the package when Lua's headers are missing", function()
    local ok, _, err, built = make("PKG_CONFIG=false LUA_INC_SEARCH=/nonexistent")
    assert.is_falsy(ok)
    assert.is_false(built)
    local lines = {}
    for line in err:gmatch("[^\n]+") do
      if not line:match("^make[%[%d%]]*: %*%*%*") then lines[#lines + 1] = line end
    end
    assert.are.equal(1, #lines, err)
    assert.matches("Lua 5.4's headers %(lua.h%) not found", lines[1])
    assert.matches("apt%-get install liblua5.4%-dev", lines[1])
    assert.matches("LUA_INCDIR=", lines[1])
  end)

  it("says so too for headers of another Lua than 5.4", function()
    local dir = os.tmpname()
    os.remove(dir)
    os.execute("mkdir -p " .. dir)
    local f = assert(io.open(dir .. "/lua.h", "w"))
    f:write("#define LUA_VERSION_NUM\t\t503\n")
    f:close()
    local ok, _, err = make("PKG_CONFIG=false LUA_INC_SEARCH=" .. dir)
    os.execute("rm -rf " .. dir)
    assert.is_falsy(ok)
    assert.matches("Lua 5.4's headers %(lua.h%) not found in " .. dir:gsub("%p", "%%%0"), err)
  end)

  it("finds the headers without pkg-config, where Debian puts them", function()
    if not io.open("/usr/include/lua5.4/lua.h") then pending("no /usr/include/lua5.4 here") return end
    local ok, _, err, built = make("PKG_CONFIG=false")
    assert.is_true(ok, err)
    assert.is_true(built)
  end)
end)
