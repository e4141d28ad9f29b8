-- docs/reference.md names every public name: the exports and the document
-- cannot drift apart.
local evtcp = require("evtcp")
local core = require("evtcp.core")
local H = require("helper")

--- The names in the first column of the tables of one section.
local function documented(section)
  local text = H.read("docs/reference.md")
  local body = text:match("\n## " .. section:gsub("%p", "%%%0") .. "\n(.-)\n## ") or
               text:match("\n## " .. section:gsub("%p", "%%%0") .. "\n(.*)$")
  assert(body, "no section " .. section)
  local names = {}
  for cell in body:gmatch("\n| ([^|]-) |") do
    for name in cell:gmatch("`([%a_][%w_]*)`") do names[name] = true end
  end
  return names
end

local function public(t)
  local names = {}
  for k in pairs(t) do if type(k) == "string" and not k:match("^_") then names[k] = true end end
  return names
end

local function same(doc, real, what)
  for name in pairs(real) do assert(doc[name], what .. " '" .. name .. "' is not in docs/reference.md") end
  for name in pairs(doc) do assert(real[name], what .. " '" .. name .. "' is documented but does not exist") end
end

describe("docs/reference.md", function()
  it("names every function of the module, and nothing else", function()
    local real = public(evtcp)
    real._VERSION = true
    same(documented("The module"), real, "module function")
  end)

  it("names every method of TCPConnection and TCPListener", function()
    same(documented("TCPConnection methods"), public(core.connectionMethods), "connection method")
    same(documented("TCPListener methods"), public(core.listenerMethods), "listener method")
  end)

  it("names every property of TCPConnection", function()
    local real = {}
    for _, k in ipairs(core.connectionProperties) do real[k] = true end
    same(documented("TCPConnection properties"), real, "connection property")
  end)

  it("names the listener's properties, the timer's methods and the event's fields, which exist", function()
    local l = assert(evtcp.listen(0, { address = "127.0.0.1" }))
    for name in pairs(documented("TCPListener properties")) do
      assert.is_not_nil(l[name], "listener property " .. name)
    end
    l:terminate()
    local t = evtcp.after(1, function() end)
    same(documented("Timer"), public(getmetatable(t).__index), "timer method")
    t:cancel()
    local sig = evtcp.signal("USR2", function() end)
    same(documented("Signal"), public(getmetatable(sig).__index), "signal handle method")
    sig:cancel()
    evtcp.run(1)
    local fields, got = documented("TCPEvent"), {}
    local server = H.server(function() return { onData = function(_, c, ev)
      for name in pairs(fields) do got[name] = ev[name] ~= nil end
      c:close()
    end } end)
    evtcp.connect("127.0.0.1", server.port, { onConnection = function(_, c) c:send("x") end, onShutdown = function() end })
    H.run_until(function() return next(got) ~= nil end, "an event")
    server:terminate()
    evtcp.run(1)
    assert.are.same({ type = true, data = true, ip = true, port = true, error = false }, got)
  end)

  it("names the error object's fields, every kind and every layer", function()
    same(documented("Error objects"), public(core.newError("io", "evtcp", "x")), "error object field")
    local text = H.read("docs/reference.md")
    for _, k in ipairs({ "refused", "unreachable", "dns", "timeout", "reset", "tls", "accept", "io",
                         "evtcp", "libevent", "openssl" }) do
      assert(text:find('`"' .. k .. '"`', 1, true), k .. " is not in docs/reference.md")
    end
  end)

  it("has LuaLS stubs (docs/meta.lua) that parse and name the same methods and properties", function()
    local meta = H.read("docs/meta.lua")
    assert(load(meta, "docs/meta.lua"), "docs/meta.lua does not parse")
    --- the ---@field names and function names of one ---@class block
    local function class_names(class)
      local block = meta:match("%-%-%-@class " .. class:gsub("%.", "%%.") .. "\n(.-)\n%-%-%-@class ") or
                    meta:match("%-%-%-@class " .. class:gsub("%.", "%%.") .. "\n(.*)$")
      local names = {}
      for f in block:gmatch("%-%-%-@field ([%a_][%w_]*)") do names[f] = true end
      for f in block:gmatch("\nfunction [%a_][%w_]*[:.]([%a_][%w_]*)%(") do names[f] = true end
      return names
    end
    local conn = public(core.connectionMethods)
    for _, k in ipairs(core.connectionProperties) do conn[k] = true end
    same(class_names("evtcp.TCPConnection"), conn, "TCPConnection stub name")
    local listener = public(core.listenerMethods)
    for name in pairs(documented("TCPListener properties")) do listener[name] = true end
    same(class_names("evtcp.TCPListener"), listener, "TCPListener stub name")
    local module = public(evtcp)
    module._VERSION = true
    same(class_names("evtcp"), module, "module stub name")
    same(class_names("evtcp.Error"), public(core.newError("io", "evtcp", "x")), "error stub field")
    same(class_names("evtcp.TCPEvent"), documented("TCPEvent"), "event stub field")
  end)

  it("has stubs whose option classes match the reference, each field once, and TLSInfo what conn.tls holds", function()
    local meta = H.read("docs/meta.lua")
    local function block_of(class)
      return meta:match("%-%-%-@class " .. class:gsub("%.", "%%.") .. "\n(.-)\n%-%-%-@class ")
    end
    --- field name -> how many times it is declared, and name -> its type text
    local function fields(class)
      local count, types = {}, {}
      for name, ty in block_of(class):gmatch("%-%-%-@field ([%a_][%w_]*) ([^\n]*)") do
        count[name] = (count[name] or 0) + 1
        types[name] = ty
      end
      for name, n in pairs(count) do assert(n == 1, class .. " declares " .. name .. " " .. n .. " times") end
      return count, types
    end
    local callbacks = documented("Callbacks")
    local handler = documented("Connection options (fields of the handler)")
    for name in pairs(callbacks) do handler[name] = true end
    handler.framing = true
    local handler_fields = fields("evtcp.Handler")
    same(handler_fields, handler, "Handler stub field")
    local listener = documented("Listener options")
    for _, cb in ipairs({ "onConnection", "onError", "onTerminate" }) do listener[cb] = true end
    local listener_fields, listener_types = fields("evtcp.ListenerOptions")
    same(listener_fields, listener, "ListenerOptions stub field")
    -- a listener without onConnection is the accept() style the README shows
    assert.matches("%)%?", listener_types.onConnection, "ListenerOptions.onConnection must be optional")
    -- TLSInfo: what a live TLS connection's conn.tls holds
    local certs, dir = H.self_signed()
    local l = assert(evtcp.listen(0, { address = "127.0.0.1", tls = certs, onConnection = function() return {} end }))
    local info
    H.go(function()
      local c = assert(evtcp.dial("127.0.0.1", l.port, { tls = { verify = false, alpn = { "x" } } }))
      info = c.tls
      c:close()
    end)
    l:terminate()
    evtcp.run(2)
    os.execute("rm -rf " .. dir)
    local real = { alpn = true } -- nil here (the server chose none), a field all the same
    for k in pairs(info) do real[k] = true end
    same(fields("evtcp.TLSInfo"), real, "TLSInfo stub field")
    -- the Unix-socket forms: connect(path, handler) and dial(path, options)
    assert.matches("@overload fun%(unix_address: string, handler", meta)
    assert.matches("@overload fun%(unix_address: string, options", meta)
  end)

  it("names every callback the core looks up", function()
    local names = documented("Callbacks")
    for _, cb in ipairs({ "onConnection", "onData", "onEnd", "onDrain", "onShutdown", "onError", "onTerminate" }) do
      assert(names[cb], cb)
    end
  end)
end)
