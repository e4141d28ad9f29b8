/*
 * conn_props.c - TCPConnection as Lua sees it: properties, per-connection
 * user fields, the metatable. (Options are conn_options.c's.)
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
  PROP_BYTES_WRITTEN, PROP_FRAMING, PROP_USER_TIMEOUT, PROP_FD, PROP_REUSED_TIMES, PROP_COUNT
} conn_property;

static const char *const property_names[PROP_COUNT] = {
  "closed", "errors", "noDelay", "keepAlive", "remoteAddress", "remotePort", "localAddress",
  "localPort", "bufferedAmount", "handler", "tls", "bytesRead", "bytesWritten", "framing",
  "userTimeout", "fd", "reusedTimes"
};

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
    if (want_port || c->client != NULL) return 0;
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
  case PROP_CLOSED: /* from just before onShutdown/onError */
    lua_pushboolean(L, c->state == CONN_TERMINATED || (c->state == CONN_CLOSING && !(c->due & DUE_FINISH)));
    break;
  case PROP_FRAMING: conn_push_framing(L, c); break;
  case PROP_ERRORS: conn_push_errors(L); break;
  case PROP_HANDLER: lua_getiuservalue(L, 1, UV_HANDLER); break;
  case PROP_LOCAL_ADDRESS: if (!push_local_addr(L, c, 0)) lua_pushnil(L); break;
  case PROP_LOCAL_PORT: if (!push_local_addr(L, c, 1)) lua_pushnil(L); break;
  case PROP_NO_DELAY: lua_pushboolean(L, c->no_delay); break;
  case PROP_KEEP_ALIVE:
    conn_push_keep_alive(L, c);
    break;
  case PROP_REMOTE_ADDRESS:
    if (c->unix_path != NULL) lua_pushstring(L, c->unix_path);
    else if (!push_addr(L, &c->peer, 0)) lua_pushnil(L);
    break;
  case PROP_REMOTE_PORT: if (!push_addr(L, &c->peer, 1)) lua_pushnil(L); break;
  case PROP_TLS:
    /* (not while startTLS's handshake runs: nothing is negotiated yet) */
    if (c->transport->push_info && c->state == CONN_OPEN && !c->upgrading) c->transport->push_info(L, c);
    else lua_pushnil(L);
    break;
  case PROP_USER_TIMEOUT:
    if (c->user_timeout_ms) lua_pushnumber(L, c->user_timeout_ms / 1000.0);
    else lua_pushnil(L);
    break;
  case PROP_FD: /* the socket while the connection has one */
    if (c->fd >= 0 && conn_is_live(c)) lua_pushinteger(L, (lua_Integer)c->fd);
    else lua_pushnil(L);
    break;
  case PROP_REUSED_TIMES: lua_pushinteger(L, (lua_Integer)c->reused_times); break;
  case PROP_COUNT: lua_pushnil(L); break;
  }
}

static int conn__index(lua_State *L) {
  evtcp_conn *c = conn_check_any(L, 1); /* a pooled one's properties: closed */
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
  evtcp_conn *c = conn_check(L, 1);
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
    conn_keepalive k;
    const char *why = lua_isnil(L, 3) ? "must be a number of seconds, a boolean or { idle, interval, count }"
                                      : conn_keep_alive_value(L, 3, &k);
    if (why) return luaL_error(L, "evtcp: TCPConnection.keepAlive %s", why);
    conn_set_keep_alive(c, &k);
    return 0;
  }
  if (key != NULL && strcmp(key, "userTimeout") == 0) {
    unsigned ms;
    const char *why = conn_user_timeout_value(L, 3, &ms);
    if (why) return luaL_error(L, "evtcp: TCPConnection.userTimeout %s", why);
    conn_set_user_timeout(c, ms);
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
  evtcp_conn *c = conn_check_any(L, 1);
  lua_pushfstring(L, "TCPConnection (%s): %p", states[c->state], (void *)c);
  return 1;
}

/* Makes the whole metatable of type t (object_type_open): meta (__close),
 * __index and __newindex over the methods and properties, __tostring.
 * The method table goes into the module table as connectionMethods, which
 * the Lua layer extends (wait, receive). */
void conn_props_open(lua_State *L, const luaL_Reg *methods, const luaL_Reg *meta, object_type *t) {
  int i;
  object_type_open(L, t, methods, meta); /* mt methods */
  lua_createtable(L, 0, PROP_COUNT);     /* name -> property, for __index and __newindex */
  for (i = 0; i < PROP_COUNT; i++) {
    lua_pushinteger(L, i);
    lua_setfield(L, -2, property_names[i]);
  }                                      /* mt methods props */
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, conn__index, 2);
  lua_setfield(L, -4, "__index");
  lua_pushvalue(L, -2);
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, conn__newindex, 2);
  lua_setfield(L, -4, "__newindex");
  lua_pop(L, 1);                         /* mt methods */
  lua_pushcfunction(L, conn__tostring);
  lua_setfield(L, -3, "__tostring");
  lua_setfield(L, -3, "connectionMethods"); /* into the module table */
  lua_newtable(L); /* the property names, for the reference spec (docs/reference.md) */
  for (i = 0; i < PROP_COUNT; i++) {
    lua_pushstring(L, property_names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -3, "connectionProperties");
  lua_pop(L, 1);
}
