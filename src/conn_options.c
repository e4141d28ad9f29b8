/*
 * conn_options.c - the options of a handler table (noDelay, allowHalfOpen,
 * timeout, readTimeout, writeTimeout, keepAlive, highWaterMark, framing),
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

/* The keepAlive value at index: 1 with *seconds (-1 for true, the
 * system's idle time; 0 for false or nil), 0 if it is no such value. */
int conn_keep_alive_value(lua_State *L, int index, int *seconds) {
  int t = lua_type(L, index);
  if (t == LUA_TNUMBER) {
    lua_Number s = lua_tonumber(L, index);
    *seconds = (int)s;
    return s >= 1 && s <= 32767;
  }
  *seconds = t == LUA_TBOOLEAN && lua_toboolean(L, index) ? -1 : 0;
  return t == LUA_TBOOLEAN || t == LUA_TNIL;
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
    int t = lua_type(L, -1);
    if (!conn_keep_alive_value(L, -1, &o->keep_alive))
      option_error(L, arg, "keepAlive", t == LUA_TNUMBER ? "must be 1..32767 seconds or false"
                                                          : "must be a number of seconds or false");
    o->given |= OPT_KEEP_ALIVE;
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

/* Keepalive: seconds of idle before probes, -1 the system's, 0 off. */
void conn_set_keep_alive(evtcp_conn *c, int seconds) {
  int on = seconds != 0;
  c->keep_alive = seconds;
  if (c->fd < 0 || c->state != CONN_OPEN || c->unix_path != NULL) return;
  setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
#ifdef EVTCP_TCP_KEEPIDLE
  if (seconds > 0) setsockopt(c->fd, IPPROTO_TCP, EVTCP_TCP_KEEPIDLE, &seconds, sizeof seconds);
#endif
}

/* The options as the socket opens: only what differs from a new socket's
 * defaults costs a system call (listening sockets have SO_KEEPALIVE off). */
void conn_apply_socket_options(evtcp_conn *c) {
  if (c->no_delay) conn_set_no_delay(c, 1);
  if (c->keep_alive != 0) conn_set_keep_alive(c, c->keep_alive);
}
