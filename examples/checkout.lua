-- Run from a checkout, an example uses the checkout's evtcp: from any
-- directory, and before a copy installed with `make install` or LuaRocks
-- (Lua's default paths list /usr/local before ./). Nothing changes when
-- LUA_PATH or LUA_CPATH is set (make test, make sanitize set them). Your
-- own programs do not need this file: require("evtcp") finds the
-- installed module.
if os.getenv("LUA_PATH") or os.getenv("LUA_CPATH") then return end
local root = ((arg and arg[0] or ""):match("^(.*)/[^/]*$") or ".") .. "/.."
package.path = ("%s/lua/?.lua;%s/lua/?/init.lua;%s"):format(root, root, package.path)
package.cpath = ("%s/build/?.so;%s"):format(root, package.cpath)
