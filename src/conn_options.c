/*
 * conn_options.c - the options of a handler table (noDelay, allowHalfOpen,
 * timeout, readTimeout, writeTimeout, keepAlive, userTimeout, highWaterMark,
 * framing),
 * parsed once into a conn_options (conn.h) and applied in one place; and
 * the socket options they set.
 *
 * A listener parses its table once, when it is made: those are the
 * defaults of every connection it accepts (a later change to that table
 * is not seen). An accepted connection gets the defaults, then what the
 * handler onConnection returned gives; a client, its own table's.
 */
#include "platform.h" /* first: feature macros */
#include <stdlib.h>
#include <string.h>
#include <netinet/tcp.h>
#include "conn.h"

/* arg 0: the handler that a listener's onConnection returned. */
static int option_error(lua_State *L, int arg, const char *name, const char *what) {
  if (arg == 0)
    return luaL_error(L, "evtcp: option '%s' %s (in the handler returned by onConnection)", name, what);
  return luaL_argerror(L, arg, lua_pushfstring(L, "option '%s' %s", name, what));
}

/* Option `name` of the table at h, if given, into *out: 1 if given. */
static int option_seconds(lua_State *L, int h, int arg, const char *name, double *out) {
  int given = lua_getfield(L, h, name) != LUA_TNIL, ok;
  if (given) {
    if ((ok = seconds_get(L, -1, out)) < 0) option_error(L, arg, name, "must be a number of seconds");
    if (ok == 0) option_error(L, arg, name, "must be >= 0");
  }
  lua_pop(L, 1);
  return given;
}

static int option_boolean(lua_State *L, int h, int arg, const char *name, int *out) {
  int t = lua_getfield(L, h, name);
  if (t != LUA_TNIL && t != LUA_TBOOLEAN) option_error(L, arg, name, "must be a boolean");
  *out = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return t != LUA_TNIL;
}

/* A whole number of seconds (or probes) in 1..max at index, else -1. */
static int small_count(lua_State *L, int index, int max) {
  lua_Number n;
  if (lua_type(L, index) != LUA_TNUMBER) return -1;
  n = lua_tonumber(L, index);
  return n >= 1 && n <= max && n == (lua_Number)(int)n ? (int)n : -1;
}

/* keepAlive = { idle = s, interval = s, count = n }: each optional. */
static const char *keep_alive_table(lua_State *L, int index, conn_keepalive *k) {
  static const char *const keys[] = {"idle", "interval", "count"};
  int i, v[3];
  lua_pushnil(L);
  while (lua_next(L, index) != 0) {
    lua_pop(L, 1);
    for (i = 0; i < 3 && !(lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), keys[i]) == 0); i++) {}
    if (i == 3) { lua_pop(L, 1); return "takes only idle, interval and count"; }
  }
  for (i = 0; i < 3; i++) {
    lua_getfield(L, index, keys[i]);
    v[i] = lua_isnil(L, -1) ? 0 : small_count(L, -1, i == 2 ? 127 : 32767);
    lua_pop(L, 1);
    if (v[i] < 0) return i == 2 ? "count must be 1..127 probes" : i == 0 ? "idle must be 1..32767 seconds"
                                                                       : "interval must be 1..32767 seconds";
  }
  k->idle = v[0] ? v[0] : -1;
  k->interval = (unsigned short)v[1];
  k->count = (unsigned short)v[2];
  return NULL;
}

/* The keepAlive value at index into *k: seconds (the idle time), true
 * (the system's times), false or nil (off), or a table { idle, interval,
 * count }. NULL, or what is wrong with it. */
const char *conn_keep_alive_value(lua_State *L, int index, conn_keepalive *k) {
  int t = lua_type(L, index);
  index = lua_absindex(L, index);
  memset(k, 0, sizeof *k);
  if (t == LUA_TTABLE) return keep_alive_table(L, index, k);
  if (t == LUA_TNUMBER) {
    k->idle = small_count(L, index, 32767);
    return k->idle < 0 ? "must be 1..32767 seconds, a boolean or { idle, interval, count }" : NULL;
  }
  k->idle = t == LUA_TBOOLEAN && lua_toboolean(L, index) ? -1 : 0;
  return t == LUA_TBOOLEAN || t == LUA_TNIL ? NULL : "must be a number of seconds, a boolean or { idle, interval, count }";
}

/* conn.keepAlive as given: the seconds, a boolean, or the table. */
void conn_push_keep_alive(lua_State *L, const evtcp_conn *c) {
  const conn_keepalive *k = &c->keep_alive;
  if (k->interval == 0 && k->count == 0) {
    if (k->idle > 0) lua_pushinteger(L, k->idle);
    else lua_pushboolean(L, k->idle != 0);
    return;
  }
  lua_createtable(L, 0, 3);
  if (k->idle > 0) { lua_pushinteger(L, k->idle); lua_setfield(L, -2, "idle"); }
  if (k->interval) { lua_pushinteger(L, k->interval); lua_setfield(L, -2, "interval"); }
  if (k->count) { lua_pushinteger(L, k->count); lua_setfield(L, -2, "count"); }
}

/* userTimeout: seconds (whole milliseconds are what the kernel keeps), 0
 * or nil the system's. NULL, or what is wrong with it. */
const char *conn_user_timeout_value(lua_State *L, int index, unsigned *ms) {
  double s;
  int ok = lua_isnil(L, index) ? (s = 0, 1) : seconds_get(L, index, &s);
  if (ok < 0) return "must be a number of seconds";
  if (ok == 0 || s > 2147483.0) return "must be 0..2147483 seconds";
  *ms = (unsigned)(s * 1000.0 + 0.5);
  if (s > 0 && *ms == 0) *ms = 1;
  return NULL;
}

static void option_high_water(lua_State *L, int h, int arg, conn_options *o) {
  if (lua_getfield(L, h, "highWaterMark") != LUA_TNIL) {
    lua_Integer n = lua_tointeger(L, -1);
    if (!lua_isinteger(L, -1) || n < 1) option_error(L, arg, "highWaterMark", "must be an integer >= 1");
    o->high_water = (size_t)n;
    o->given |= OPT_HIGH_WATER;
  }
  lua_pop(L, 1);
}

/* Reads the options of the table at h into o (zeroed first); raises an
 * argument error (argument arg; 0: a handler onConnection returned)
 * naming the first bad one. framing is read last: once it is allocated,
 * nothing raises. */
void conn_options_read(lua_State *L, int h, int arg, conn_options *o) {
  h = lua_absindex(L, h);
  memset(o, 0, sizeof *o);
  if (option_boolean(L, h, arg, "noDelay", &o->no_delay)) o->given |= OPT_NO_DELAY;
  if (option_boolean(L, h, arg, "allowHalfOpen", &o->allow_half_open)) o->given |= OPT_HALF_OPEN;
  /* checked for every connection; only a client has a connect to time */
  if (option_seconds(L, h, arg, "timeout", &o->connect_timeout)) o->given |= OPT_TIMEOUT;
  if (option_seconds(L, h, arg, "readTimeout", &o->read_timeout)) o->given |= OPT_READ_TIMEOUT;
  if (option_seconds(L, h, arg, "writeTimeout", &o->write_timeout)) o->given |= OPT_WRITE_TIMEOUT;
  if (lua_getfield(L, h, "keepAlive") != LUA_TNIL) {
    const char *why = conn_keep_alive_value(L, -1, &o->keep_alive);
    if (why) option_error(L, arg, "keepAlive", why);
    o->given |= OPT_KEEP_ALIVE;
  }
  lua_pop(L, 1);
  if (lua_getfield(L, h, "userTimeout") != LUA_TNIL) {
    const char *why = conn_user_timeout_value(L, -1, &o->user_timeout_ms);
    if (why) option_error(L, arg, "userTimeout", why);
    o->given |= OPT_USER_TIMEOUT;
  }
  lua_pop(L, 1);

  option_high_water(L, h, arg, o);
  if (lua_getfield(L, h, "framing") != LUA_TNIL) {
    const char *why;
    if (conn_framing_parse(L, -1, &o->framing, &why) != 0) option_error(L, arg, "framing", why);
    o->given |= OPT_FRAMING;
  }
  lua_pop(L, 1);
}

void conn_options_free(conn_options *o) {
  free(o->framing);
  o->framing = NULL;
}

/* Applies what o gives to c, before it opens. The framing moves into c, or
 * with copy_framing is copied (a listener's defaults serve many). Returns
 * 0, or -1 without memory. */
int conn_options_apply(evtcp_conn *c, const conn_options *o, int copy_framing) {
  if (o->given & OPT_NO_DELAY) c->no_delay = o->no_delay != 0;
  if (o->given & OPT_HALF_OPEN) c->allow_half_open = o->allow_half_open != 0;
  if ((o->given & OPT_TIMEOUT) && c->client) c->client->connect_timeout = o->connect_timeout;
  if (o->given & OPT_READ_TIMEOUT) c->read_timeout = o->read_timeout;
  if (o->given & OPT_WRITE_TIMEOUT) c->write_timeout = o->write_timeout;
  if (o->given & OPT_KEEP_ALIVE) c->keep_alive = o->keep_alive;
  if (o->given & OPT_USER_TIMEOUT) c->user_timeout_ms = o->user_timeout_ms;
  if (o->given & OPT_HIGH_WATER) c->high_water = o->high_water;
  if (o->given & OPT_FRAMING) {
    conn_framing *f = o->framing;
    if (f && copy_framing) {
      size_t size = sizeof *f + f->delim_len;
      if ((f = (conn_framing *)malloc(size)) == NULL) return -1;
      memcpy(f, o->framing, size);
    }
    free(c->framing);
    c->framing = f;
  }
  return 0;
}

/* ---- socket options ---- */

/* TCP_NODELAY on the connection's own socket (c->fd: a bufferevent's fd
 * is not there on an accepted connection), now if it is open. TCP options
 * are kept but not applied on a Unix socket, which has none. */
void conn_set_no_delay(evtcp_conn *c, int on) {
  c->no_delay = on != 0;
  if (c->fd >= 0 && c->state == CONN_OPEN && c->unix_path == NULL)
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

/* Keepalive: probes after idle seconds (-1 the system's, 0 off), every
 * interval seconds, count of them (0: the system's). */
void conn_set_keep_alive(evtcp_conn *c, const conn_keepalive *k) {
  int on = k->idle != 0, v;
  c->keep_alive = *k;
  if (c->fd < 0 || c->state != CONN_OPEN || c->unix_path != NULL) return;
  setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
  if (!on) return;
#ifdef EVTCP_TCP_KEEPIDLE
  if (k->idle > 0) setsockopt(c->fd, IPPROTO_TCP, EVTCP_TCP_KEEPIDLE, &k->idle, sizeof k->idle);
#endif
#ifdef TCP_KEEPINTVL
  if ((v = k->interval) > 0) setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, sizeof v);
#endif
#ifdef TCP_KEEPCNT
  if ((v = k->count) > 0) setsockopt(c->fd, IPPROTO_TCP, TCP_KEEPCNT, &v, sizeof v);
#endif
  (void)v;
}

/* TCP_USER_TIMEOUT: how long sent data may stay unacknowledged before the
 * connection fails (ETIMEDOUT: kind "timeout"). Where the system has no
 * such option it is kept, not applied. */
void conn_set_user_timeout(evtcp_conn *c, unsigned ms) {
  c->user_timeout_ms = ms;
#ifdef TCP_USER_TIMEOUT
  if (c->fd >= 0 && c->state == CONN_OPEN && c->unix_path == NULL)
    setsockopt(c->fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
#endif
}

/* The options as the socket opens: only what differs from a new socket's
 * defaults costs a system call (listening sockets have SO_KEEPALIVE off). */
void conn_apply_socket_options(evtcp_conn *c) {
  if (c->no_delay) conn_set_no_delay(c, 1);
  if (c->keep_alive.idle != 0) conn_set_keep_alive(c, &c->keep_alive);
  if (c->user_timeout_ms != 0) conn_set_user_timeout(c, c->user_timeout_ms);
}
