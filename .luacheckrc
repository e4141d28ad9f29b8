-- luacheck (Debian's lua-check): make lint. Lua 5.4; the specs run under
-- busted, whose globals (describe, it, assert, ...) they use.
std = "lua54"
max_line_length = 130
files["spec"] = { std = "+busted" }
-- callbacks take (self, conn, event) whether they use them or not
unused_args = false
exclude_files = { "evtcp/", "build/", "build-asan/" }
