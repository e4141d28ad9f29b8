/*
 * conn_props.c - TCPConnection as Lua sees it: properties, per-connection
 * user fields, options, the metatable.
 *
 * Lookup order in __index: methods (a raw get in one table, the common
 * case), then properties, then the user's own fields, which live in a table
 * created on the first assignment (most connections never pay for it).
 */
#include "platform.h" /* first: feature macros */
#include <stdlib.h>
#include <string.h>
#include "conn.h"


/* The properties: one list, which makes the name -> property table that
 * __index and __newindex look keys up in, core.connectionProperties, and
 * the switch of conn_push_property (the compiler flags a missing case). */
typedef enum {
  PROP_CLOSED, PROP_ERRORS, PROP_NO_DELAY, PROP_KEEP_ALIVE, PROP_REMOTE_ADDRESS, PROP_REMOTE_PORT,
  PROP_LOCAL_ADDRESS, PROP_LOCAL_PORT, PROP_BUFFERED_AMOUNT, PROP_HANDLER, PROP_TLS, PROP_BYTES_READ,
  PROP_BYTES_WRITTEN, PROP_FRAMING, PROP_COUNT
} conn_property;

static const char *const property_names[PROP_COUNT] = {
  "closed", "errors", "noDelay", "keepAlive", "remoteAddress", "remotePort", "localAddress",
  "localPort", "bufferedAmount", "handler", "tls", "bytesRead", "bytesWritten", "framing"
};

int conn_handler_has_callbacks(lua_State *L, int handler_index) {
  int i;
  handler_index = lua_absindex(L, handler_index);
  for (i = 0; i < EVT_COUNT; i++) {
    int t = lua_getfield(L, handler_index, event_callback_names[i]);
    lua_pop(L, 1);
    if (t != LUA_TNIL) return 1;
  }
  return 0;
}

/* ---- options ---- */

/* arg 0: the handler that a listener's onConnection returned. */
static int option_error(lua_State *L, int arg, const char *name, const char *what) {
  if (arg == 0)
    return luaL_error(L, "evtcp: option '%s' %s (in the handler returned by onConnection)", name, what);
  return luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' %s", name, what));
}

/* Reads option `name` as seconds >= 0; returns -1 if absent. */
static double option_seconds(lua_State *L, int h, int arg, const char *name) {
  double s = -1;
  int t = lua_getfield(L, h, name);
  if (t != LUA_TNIL) {
    if (t != LUA_TNUMBER) option_error(L, arg, name, "must be a number of seconds");
    s = lua_tonumber(L, -1);
    if (!seconds_ok(s)) option_error(L, arg, name, "must be >= 0");
  }
  lua_pop(L, 1);
  return s;
}

/* The keepAlive value at the top of the stack: seconds, -1 for true (the
 * system's idle time), 0 for false or nil; what is wrong words `what`. */
static int keep_alive_value(lua_State *L, int arg, const char *what) {
  int t = lua_type(L, -1);
  if (t == LUA_TNUMBER) {
    lua_Number s = lua_tonumber(L, -1);
    if (!(s >= 1 && s <= 32767)) option_error(L, arg, what, "must be 1..32767 seconds or false");
    return (int)s;
  }
  if (t == LUA_TBOOLEAN) return lua_toboolean(L, -1) ? -1 : 0;
  if (t != LUA_TNIL) option_error(L, arg, what, "must be a number of seconds or false");
  return 0;
}

/* localAddress and localPort: where an outgoing socket is bound before it
 * connects. */
static void conn_read_local_bind(lua_State *L, evtcp_conn *c, int h, int arg) {
  int t = lua_getfield(L, h, "localAddress");
  if (t != LUA_TNIL) {
    struct sockaddr_storage ss;
    int len;
    if (t != LUA_TSTRING) option_error(L, arg, "localAddress", "must be a string");
    if (string_has_nul(L, -1)) option_error(L, arg, "localAddress", "must not contain a NUL byte");
    if (sockaddr_parse(lua_tostring(L, -1), 0, &ss, &len) != 0)
      option_error(L, arg, "localAddress", "must be an IP address of this machine");
    memcpy(&c->client->bind_addr, &ss, (size_t)len < sizeof c->client->bind_addr ? (size_t)len : sizeof c->client->bind_addr);
    if (c->client->bind_port < 0) c->client->bind_port = 0;
  }
  lua_pop(L, 1);
  t = lua_getfield(L, h, "localPort");
  if (t != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 65535)
      option_error(L, arg, "localPort", "must be an integer in 0..65535");
    c->client->bind_port = (int)lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
}

/* Reads the options of the handler at h into c; raises an argument error
 * (argument arg) naming the option at the first bad one. `tls` is a
 * client's option only: an accepted connection is TLS when its listener
 * is, whatever the handler says. */
void conn_read_options(lua_State *L, evtcp_conn *c, int h, int arg, int client) {
  int t;
  double s;
  h = lua_absindex(L, h);
  t = lua_getfield(L, h, "noDelay");
  if (t != LUA_TNIL && t != LUA_TBOOLEAN) option_error(L, arg, "noDelay", "must be a boolean");
  if (t != LUA_TNIL) c->no_delay = lua_toboolean(L, -1);
  lua_pop(L, 1);
  t = lua_getfield(L, h, "allowHalfOpen");
  if (t != LUA_TNIL && t != LUA_TBOOLEAN) option_error(L, arg, "allowHalfOpen", "must be a boolean");
  if (t != LUA_TNIL) c->allow_half_open = lua_toboolean(L, -1);
  lua_pop(L, 1);
  /* only what the handler sets: an accepted connection reads its
   * listener's options first, then its own handler's */
  /* checked for every connection; only a client has a connect to time */
  if ((s = option_seconds(L, h, arg, "timeout")) >= 0 && c->client) c->client->connect_timeout = s;
  if ((s = option_seconds(L, h, arg, "readTimeout")) >= 0) c->read_timeout = s;
  if ((s = option_seconds(L, h, arg, "writeTimeout")) >= 0) c->write_timeout = s;
  if (lua_getfield(L, h, "keepAlive") != LUA_TNIL) c->keep_alive = keep_alive_value(L, arg, "keepAlive");
  lua_pop(L, 1);
  t = lua_getfield(L, h, "highWaterMark");
  if (t != LUA_TNIL) {
    lua_Integer n = lua_tointeger(L, -1);
    if (!lua_isinteger(L, -1) || n < 1) option_error(L, arg, "highWaterMark", "must be an integer >= 1");
    c->high_water = (size_t)n;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, h, "framing") != LUA_TNIL) {
    conn_framing *f;
    const char *why;
    if (conn_framing_parse(L, -1, &f, &why) != 0) option_error(L, arg, "framing", why);
    free(c->framing);
    c->framing = f;
  }
  lua_pop(L, 1);
  if (client) conn_read_local_bind(L, c, h, arg);
  t = client ? lua_getfield(L, h, "tls") : (lua_pushnil(L), LUA_TNIL);
  if (t != LUA_TNIL && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
    tls_options opts;
    evtcp_failure f;
    tls_read_options(L, -1, arg, &opts, 0);
    c->tls = 1;
    c->tls_verify = opts.verify;
    if (opts.server_name && (c->client->tls_host = strdup(opts.server_name)) == NULL)
      luaL_error(L, "evtcp: out of memory");
    c->client->tls_config_hash = opts.config_hash; /* for the session key: conn_begin */
    c->client->tls_ctx = tls_context_new(&opts, 0, &f);
    if (c->client->tls_ctx == NULL) {
      /* a file that cannot be read is an error event, once started */
      c->failure = (evtcp_failure *)malloc(sizeof *c->failure);
      if (c->failure == NULL) luaL_error(L, "evtcp: out of memory");
      *c->failure = f;
    }
  }
  lua_pop(L, 1);
}


/* ---- properties ---- */

static int push_addr(lua_State *L, const evtcp_addr *a, int want_port) {
  if (a->sa.sa_family != AF_INET && a->sa.sa_family != AF_INET6) return 0;
  if (want_port) lua_pushinteger(L, sockaddr_port(&a->sa));
  else sockaddr_push_ip(L, &a->sa);
  return 1;
}

/* The local address is asked of the kernel on first use, and kept. A Unix
 * socket's server side is at the listener's path; its client side has no
 * name. */
static int push_local_addr(lua_State *L, evtcp_conn *c, int want_port) {
  if (c->unix_path != NULL) {
    if (want_port || c->listener == NULL) return 0;
    lua_pushstring(L, c->unix_path);
    return 1;
  }
  if (c->local.sa.sa_family == 0 && c->fd >= 0 && c->state == CONN_OPEN) {
    socklen_t len = sizeof c->local;
    if (getsockname(c->fd, &c->local.sa, &len) != 0) memset(&c->local, 0, sizeof c->local);
  }
  return push_addr(L, &c->local, want_port);
}

static int conn_push_errors(lua_State *L) {
  object_uv_table(L, 1, UV_ERRORS);
  return 1;
}

/* Pushes property p of the connection at index 1. */
static void conn_push_property(lua_State *L, evtcp_conn *c, conn_property p) {
  switch (p) {
  case PROP_BUFFERED_AMOUNT: lua_pushinteger(L, (lua_Integer)conn_buffered(c)); break;
  case PROP_BYTES_READ: lua_pushinteger(L, (lua_Integer)c->bytes_read); break;
  case PROP_BYTES_WRITTEN: /* left our queue: to the kernel, or to OpenSSL */
    lua_pushinteger(L, (lua_Integer)(c->bytes_sent - conn_buffered(c)));
    break;
  case PROP_CLOSED: lua_pushboolean(L, c->closed); break;
  case PROP_FRAMING: conn_push_framing(L, c); break;
  case PROP_ERRORS: conn_push_errors(L); break;
  case PROP_HANDLER: lua_getiuservalue(L, 1, UV_HANDLER); break;
  case PROP_LOCAL_ADDRESS: if (!push_local_addr(L, c, 0)) lua_pushnil(L); break;
  case PROP_LOCAL_PORT: if (!push_local_addr(L, c, 1)) lua_pushnil(L); break;
  case PROP_NO_DELAY: lua_pushboolean(L, c->no_delay); break;
  case PROP_KEEP_ALIVE:
    if (c->keep_alive > 0) lua_pushinteger(L, c->keep_alive);
    else lua_pushboolean(L, c->keep_alive != 0);
    break;
  case PROP_REMOTE_ADDRESS:
    if (c->unix_path != NULL) lua_pushstring(L, c->unix_path);
    else if (!push_addr(L, &c->peer, 0)) lua_pushnil(L);
    break;
  case PROP_REMOTE_PORT: if (!push_addr(L, &c->peer, 1)) lua_pushnil(L); break;
  case PROP_TLS:
    if (c->tls && c->state == CONN_OPEN) tls_push_info(L, c->bev);
    else lua_pushnil(L);
    break;
  case PROP_COUNT: lua_pushnil(L); break;
  }
}

static int conn__index(lua_State *L) {
  evtcp_conn *c = check_conn(L, 1);
  lua_settop(L, 2);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1; /* a method */
  lua_pop(L, 1);
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(2)) == LUA_TNUMBER) { /* a property */
    conn_push_property(L, c, (conn_property)lua_tointeger(L, -1));
    return 1;
  }
  lua_pop(L, 1);
  if (lua_getiuservalue(L, 1, UV_FIELDS) != LUA_TTABLE) return 0;
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

/* A method or property name: not the program's to assign. */
static int is_reserved(lua_State *L, int key_index) {
  int reserved;
  lua_pushvalue(L, key_index);
  reserved = lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL;
  lua_pushvalue(L, key_index);
  reserved = lua_rawget(L, lua_upvalueindex(2)) != LUA_TNIL || reserved;
  lua_pop(L, 2);
  return reserved;
}

/* conn.handler = h replaces the callbacks; other known names are read-only;
 * anything else is the program's own field. */
static int conn__newindex(lua_State *L) {
  evtcp_conn *c = check_conn(L, 1);
  const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  lua_settop(L, 3);
  if (key != NULL && strcmp(key, "handler") == 0) {
    luaL_argexpected(L, lua_istable(L, 3) || lua_isuserdata(L, 3), 3, "table");
    lua_pushvalue(L, 3);
    lua_setiuservalue(L, 1, UV_HANDLER);
    if (c->state != CONN_TERMINATED && c->obj.loop != NULL) {
      if (conn_handler_has_callbacks(L, 3)) object_anchor(&c->obj, ANCHOR_CALLBACKS);
      else object_unanchor(&c->obj, ANCHOR_CALLBACKS);
      conn_kept_input_due(c); /* kept input goes to a new onData */
    }
    return 0;
  }
  if (key != NULL && strcmp(key, "noDelay") == 0) {
    if (lua_type(L, 3) != LUA_TBOOLEAN)
      return luaL_error(L, "evtcp: TCPConnection.noDelay must be a boolean (got %s)", luaL_typename(L, 3));
    conn_set_no_delay(c, lua_toboolean(L, 3));
    return 0;
  }
  if (key != NULL && strcmp(key, "framing") == 0) {
    conn_framing *f;
    const char *why;
    if (conn_framing_parse(L, 3, &f, &why) != 0) return luaL_error(L, "evtcp: TCPConnection.framing %s", why);
    conn_set_framing(c, f);
    return 0;
  }
  if (key != NULL && strcmp(key, "keepAlive") == 0) {
    int t = lua_type(L, 3);
    if (t != LUA_TBOOLEAN && !(t == LUA_TNUMBER && lua_tonumber(L, 3) >= 1 && lua_tonumber(L, 3) <= 32767))
      return luaL_error(L, "evtcp: TCPConnection.keepAlive must be 1..32767 seconds or a boolean");
    conn_set_keep_alive(c, keep_alive_value(L, 3, "keepAlive"));
    return 0;
  }
  if (key != NULL && is_reserved(L, 2))
    return luaL_error(L, "evtcp: TCPConnection.%s is read-only", key);
  object_uv_table(L, 1, UV_FIELDS);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_rawset(L, -3);
  return 0;
}

static int conn__tostring(lua_State *L) {
  static const char *const states[] = {"resolving", "connecting", "open", "closing", "closed"};
  evtcp_conn *c = check_conn(L, 1);
  lua_pushfstring(L, "TCPConnection (%s): %p", states[c->state], (void *)c);
  return 1;
}

/* Completes the metatable: __index and __newindex share the method table,
 * which the Lua layer extends (wait, receive) through core.connectionMethods. */
const char conn_methods_key = 'M';

/* Makes the whole metatable: meta (__gc, __close), __index and __newindex
 * over the methods and properties, __tostring, the type name; kept under
 * mt_key for the type check (object_test). */
void conn_props_open(lua_State *L, const luaL_Reg *methods, const luaL_Reg *meta, const void *mt_key) {
  luaL_newmetatable(L, EVTCP_CONN_MT);
  luaL_setfuncs(L, meta, 0);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, mt_key);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);            /* mt methods */
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &conn_methods_key); /* names for type errors */
  { /* name -> property, for __index and __newindex */
    int i;
    lua_createtable(L, 0, PROP_COUNT);
    for (i = 0; i < PROP_COUNT; i++) {
      lua_pushinteger(L, i);
      lua_setfield(L, -2, property_names[i]);
    }
  }                                        /* mt methods props */
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, conn__index, 2);
  lua_setfield(L, -4, "__index");
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, conn__newindex, 2);
  lua_setfield(L, -4, "__newindex");
  lua_pop(L, 1);                           /* mt methods */
  lua_pushcfunction(L, conn__tostring);
  lua_setfield(L, -3, "__tostring");
  lua_pushliteral(L, "TCPConnection");
  lua_setfield(L, -3, "__metatable");
  lua_setfield(L, -3, "connectionMethods"); /* into the module table */
  { /* the property names, for the reference spec (docs/reference.md) */
    int i;
    lua_newtable(L);
    for (i = 0; i < PROP_COUNT; i++) {
      lua_pushstring(L, property_names[i]);
      lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -3, "connectionProperties");
  }
  lua_pop(L, 1);
}
