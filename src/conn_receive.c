/*
 * conn_receive.c - the blocking style's reads: receive() by pattern, byte
 * count or delimiter, from the input the connection keeps while nobody has
 * an onData (conn.h). Frame ends are found in the buffer without rescanning
 * it; a coroutine without a timeout yields from C and the core resumes it
 * when input comes.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/un.h>
#include "conn.h"

/* ---- reading by pattern, for the Lua layer's receive() ---- */

/* Can more input still come? */
static int conn_input_may_grow(const evtcp_conn *c) {
  return conn_is_live(c) && !conn_peer_ended(c) && c->output != OUTPUT_CLOSING;
}

/* A line or a delimited frame is over highWaterMark with no end in sight:
 * nil, "too long", and what was buffered (consumed), so that a peer cannot
 * decide how much memory evtcp keeps. */
static int conn_too_long(lua_State *L, evtcp_conn *c) {
  lua_pushnil(L);
  lua_pushliteral(L, "too long");
  conn_input_take(L, c, evbuffer_get_length(c->input));
  return 3;
}

/* Why no more input will come: "closed", or the error's message. */
static void conn_push_end_reason(lua_State *L, const evtcp_conn *c) {
  if (c->failure) lua_pushstring(L, c->failure->message);
  else lua_pushliteral(L, "closed");
}

/* receive's argument errors name receive, whichever path called. */
static int receive_arg_error(lua_State *L, int arg, const char *msg) {
  return luaL_error(L, "bad argument #%d to 'receive' (%s)", arg, msg);
}

/* receive("l") or receive("a") (the pattern at 2, "*l" as LuaSocket
 * spells it too): its results, or 0 while it needs more input. */
static int conn_read_pattern(lua_State *L, evtcp_conn *c, size_t have) {
  const char *p = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  if (p == NULL)
    return receive_arg_error(L, 2, lua_pushfstring(L, "pattern expected, got %s", luaL_typename(L, 2)));
  if (*p == '*') p++;
  if (*p == 'l') {
    size_t line, eol;
    if (conn_find_line(c, have, &line, &eol)) {
      conn_input_take(L, c, line);
      evbuffer_drain(c->input, eol);
      return 1;
    }
    return have >= c->high_water ? conn_too_long(L, c) : 0;
  }
  if (*p == 'a') {
    /* everything until a clean close; a reset is an error, with partial */
    if (!conn_input_may_grow(c) && c->failure == NULL) { conn_input_take(L, c, have); return 1; }
    conn_input_allow_more(c);
    return 0;
  }
  return receive_arg_error(L, 2, lua_pushfstring(L, "invalid pattern '%s'", lua_tostring(L, 2)));
}

/* Reads what the arguments ask for: stack (conn, pattern, timeout,
 * delimiter); a delimiter (receiveUntil) wins over the pattern. */
static int conn_read_now(lua_State *L, evtcp_conn *c) {
  size_t have;
  if (c->obj.loop == NULL) { /* collected (seen from another finalizer) */
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    lua_pushliteral(L, "");
    return 3;
  }
  if (!c->receiving) {
    if (conn_handler_has(L, "onData"))
      return luaL_error(L, "evtcp: this connection has an onData callback; it cannot also be read with receive");
    c->receiving = 1;
  }
  if (c->input == NULL && (c->input = evbuffer_new()) == NULL) return luaL_error(L, "evtcp: out of memory");
  have = evbuffer_get_length(c->input);
  if (lua_type(L, 4) == LUA_TSTRING) {
    size_t dlen;
    const char *delim = lua_tolstring(L, 4, &dlen);
    ev_ssize_t at = conn_find_delimiter(c, have, delim, dlen);
    if (at >= 0) {
      conn_input_take(L, c, (size_t)at);
      evbuffer_drain(c->input, dlen);
      return 1;
    }
    if (have >= c->high_water) return conn_too_long(L, c);
  } else if (lua_isnoneornil(L, 2)) {
    if (have > 0) { conn_input_take(L, c, have); return 1; }
  } else if (lua_type(L, 2) == LUA_TNUMBER) {
    lua_Integer n = 0;
    if (!lua_isinteger(L, 2) && !(lua_tonumber(L, 2) == (lua_Number)(n = (lua_Integer)lua_tonumber(L, 2))))
      return receive_arg_error(L, 2, "byte count must be an integer >= 0");
    if (lua_isinteger(L, 2)) n = lua_tointeger(L, 2);
    if (n < 0) return receive_arg_error(L, 2, "byte count must be an integer >= 0");
    if ((lua_Integer)have >= n) { conn_input_take(L, c, (size_t)n); return 1; }
    if ((size_t)n > c->high_water) conn_input_allow_more(c); /* past the mark */
  } else {
    int n = conn_read_pattern(L, c, have);
    if (n > 0) return n;
  }
  if (conn_input_may_grow(c)) return -1;
  lua_pushnil(L);
  conn_push_end_reason(L, c);
  conn_input_take(L, c, evbuffer_get_length(c->input)); /* the partial result */
  return 3;
}

/* conn:_read(pattern, delimiter) -> data | nil, "wait" | nil, reason, partial */
int conn_read(lua_State *L) {
  int n;
  evtcp_conn *c = conn_check(L, 1);
  lua_settop(L, 3);
  lua_pushnil(L);
  lua_insert(L, 3); /* conn pattern nil delimiter */
  n = conn_read_now(L, c);
  if (n >= 0) return n;
  lua_pushnil(L);
  lua_pushliteral(L, "wait");
  return 2;
}

static int conn_receive_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  return lua_gettop(L);
}

/* The Lua layer's receive, for timeouts and the contexts that drive the
 * loop: called with receive's own arguments, its results returned. */
static int conn_receive_in_lua(lua_State *L) {
  int nargs = lua_gettop(L);
  loop_push_scheduler(L, 2);       /* receive() of the Lua layer */
  lua_insert(L, 1);
  lua_callk(L, nargs, LUA_MULTRET, 0, conn_receive_done);
  return lua_gettop(L);
}

static int conn_receive_k(lua_State *L, int status, lua_KContext ctx);

/* conn:receive([pattern [, timeout]]) -> data | nil, err, partial
 * The fast path of blocking style: with no timeout, in a coroutine started
 * by evtcp.spawn, it yields from C and the core resumes this thread when
 * input comes (object_wake), no Lua in between. Everything else is the Lua
 * layer's receive. */
int conn_receive(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  int n;
  if (!lua_isnoneornil(L, 3)) return conn_receive_in_lua(L);
  lua_settop(L, 4);
  n = conn_read_now(L, c);
  if (n >= 0) return n;
  if (!loop_is_spawned(L)) return conn_receive_in_lua(L);
  lua_pushthread(L);
  object_add_waiter(L, 1, -1, WAKE_INPUT | WAKE_STATE, WAIT_READER);
  lua_pop(L, 1);
  return lua_yieldk(L, 0, 0, conn_receive_k);
}

static int conn_receive_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  lua_settop(L, 4); /* resumed with no values: look again */
  return conn_receive(L);
}

/* conn:receiveUntil(delimiter [, timeout]) -> the bytes before the next
 * delimiter (consumed, not returned) | nil, err, partial. OpenResty's
 * receiveuntil: "\r\n\r\n" reads an HTTP head. Runs as receive does, with
 * the stack (conn, nil, timeout, delimiter). */
int conn_receive_until(lua_State *L) {
  conn_check(L, 1);
  if (lua_type(L, 2) != LUA_TSTRING || lua_rawlen(L, 2) == 0)
    return luaL_error(L, "bad argument #2 to 'receiveUntil' (delimiter must be a non-empty string, got %s)",
                      lua_type(L, 2) == LUA_TSTRING ? "\"\"" : luaL_typename(L, 2));
  lua_settop(L, 3);
  lua_pushvalue(L, 2);
  lua_pushnil(L);
  lua_replace(L, 2); /* conn nil timeout delimiter */
  return conn_receive(L);
}

/* conn:_take() -> all buffered input (the partial result of a timeout). */
int conn_take(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  if (c->input == NULL) lua_pushliteral(L, "");
  else conn_input_take(L, c, evbuffer_get_length(c->input));
  return 1;
}

/* conn:_state() -> "connecting" | "open" | "closed", highWaterMark, and
 * whether it ever was open */
int conn_state_name(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  if (c->state < CONN_OPEN) lua_pushliteral(L, "connecting");
  else if (c->state == CONN_OPEN) lua_pushliteral(L, "open");
  else lua_pushliteral(L, "closed");
  lua_pushinteger(L, (lua_Integer)c->high_water);
  lua_pushboolean(L, c->was_open);
  lua_pushboolean(L, c->upgrading);
  return 4;
}

/* conn:_flags() -> the internal state in words, for the fuzzer's reports */
int conn_flags(lua_State *L) {
  evtcp_conn *c = conn_check_any(L, 1);
  lua_pushfstring(L, "state=%d input_end=%d output=%d due=%d reading=%d paused=%d input_full=%d "
                  "receiving=%d anchors=%d input=%d buffered=%d fd=%d transport=%s",
                  (int)c->state, (int)c->input_end, (int)c->output, (int)c->due, c->reading, c->paused,
                  c->input_full, c->receiving, (int)c->obj.anchors,
                  c->input ? (int)evbuffer_get_length(c->input) : -1, (int)conn_buffered(c), (int)c->fd,
                  c->transport->name);
  return 1;
}

