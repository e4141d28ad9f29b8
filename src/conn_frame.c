/*
 * conn_frame.c - frames cut from a connection's input in C: the line ends
 * and delimiters that receive("l") and receiveUntil look for, and the
 * callback style's `framing` (a handler option and a property), which
 * makes onData deliver one whole frame per call: a line, n bytes, or what
 * comes before a delimiter. A server of a line or length-prefixed protocol
 * then needs no buffering in Lua.
 *
 * Frames are cut from `input` (conn.h), the buffer that otherwise holds
 * what nobody has read yet; `line_scanned` remembers how far it is known to
 * hold no frame end, so a frame arriving in many pieces is scanned once.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "conn.h"

/* Finds the next occurrence of delim in input, scanning only what an
 * earlier call has not (a long line or head arriving in many pieces costs
 * O(n), not O(n^2)): its offset, or -1. */
ev_ssize_t conn_find_delimiter(evtcp_conn *c, size_t have, const char *delim, size_t dlen) {
  struct evbuffer_ptr from, at;
  if (c->line_scanned > have) c->line_scanned = 0;
  if (evbuffer_ptr_set(c->input, &from, c->line_scanned, EVBUFFER_PTR_SET) != 0) return -1;
  at = evbuffer_search(c->input, delim, dlen, &from);
  c->obj.loop->bytes_scanned += (at.pos < 0 ? have : (size_t)at.pos + dlen) - c->line_scanned;
  if (at.pos < 0) /* a match may still start in the last dlen-1 bytes */
    c->line_scanned = have >= dlen ? have - (dlen - 1) : 0;
  return at.pos;
}

/* Finds the next line end: the line's length and its end's (1 for \n, 2
 * for \r\n); 0 if there is none yet. */
int conn_find_line(evtcp_conn *c, size_t have, size_t *line, size_t *eol) {
  ev_ssize_t pos = conn_find_delimiter(c, have, "\n", 1);
  if (pos < 0) return 0;
  *line = (size_t)pos;
  *eol = 1;
  if (*line > 0) {
    struct evbuffer_ptr before;
    char prev = 0;
    evbuffer_ptr_set(c->input, &before, *line - 1, EVBUFFER_PTR_SET);
    if (evbuffer_copyout_from(c->input, &before, &prev, 1) == 1 && prev == '\r') {
      (*line)--;
      *eol = 2;
    }
  }
  return 1;
}

/* ---- the callback style's framing ---- */

/* The next frame in input: *len bytes to deliver, then *skip to drop (the
 * line end or the delimiter). FRAME_WHOLE, FRAME_PARTIAL (wait for more),
 * or FRAME_TOO_LONG (a line or delimited frame has reached highWaterMark
 * without its end). Raw reading (no framing) is one chunk of what is there. */
int conn_next_frame(evtcp_conn *c, size_t *len, size_t *skip) {
  const conn_framing *f = c->framing;
  size_t have = evbuffer_get_length(c->input);
  *skip = 0;
  if (f == NULL) {
    *len = have < READ_CHUNK ? have : READ_CHUNK;
    return have > 0 ? FRAME_WHOLE : FRAME_PARTIAL;
  }
  if (f->size > 0) {
    *len = f->size;
    return have >= f->size ? FRAME_WHOLE : FRAME_PARTIAL;
  }
  if (f->delim_len == 0) {
    if (conn_find_line(c, have, len, skip)) return FRAME_WHOLE;
  } else {
    ev_ssize_t at = conn_find_delimiter(c, have, f->delim, f->delim_len);
    if (at >= 0) {
      *len = (size_t)at;
      *skip = f->delim_len;
      return FRAME_WHOLE;
    }
  }
  return have >= c->high_water ? FRAME_TOO_LONG : FRAME_PARTIAL;
}

/* The connection fails: a line or delimited frame grew too long. */
void conn_frame_too_long(evtcp_conn *c) {
  evtcp_failure f;
  char msg[160];
  snprintf(msg, sizeof msg,
           "a frame reached highWaterMark (%lu bytes) without its %s; the bytes were dropped",
           (unsigned long)c->high_water, c->framing->delim_len ? "delimiter" : "line end");
  failure_set(&f, KIND_IO, EMSGSIZE, "evtcp", msg);
  evbuffer_drain(c->input, evbuffer_get_length(c->input));
  conn_end(c, &f, 0);
}

/* Reads a framing value at index: nil or false (raw chunks), "line", an
 * integer n >= 1 (n bytes), or { delimiter = "..." }. Returns the new
 * framing (NULL for raw) in *out and 0, or -1 with what is wrong in *why.
 * Raises only without memory. */
int conn_framing_parse(lua_State *L, int index, conn_framing **out, const char **why) {
  conn_framing *f = NULL;
  const char *delim = NULL;
  size_t dlen = 0;
  int t = lua_type(L, index);
  *out = NULL;
  *why = "must be \"line\", a byte count >= 1, { delimiter = string }, or nil";
  if (t == LUA_TNIL || (t == LUA_TBOOLEAN && !lua_toboolean(L, index))) return 0;
  if (t == LUA_TSTRING && strcmp(lua_tostring(L, index), "line") != 0) return -1;
  if (t == LUA_TNUMBER && (!lua_isinteger(L, index) || lua_tointeger(L, index) < 1)) return -1;
  if (t == LUA_TTABLE) {
    if (lua_getfield(L, index, "delimiter") == LUA_TSTRING) delim = lua_tolstring(L, -1, &dlen);
    lua_pop(L, 1); /* the table keeps the string alive while it is copied */
    if (delim == NULL || dlen == 0 || dlen > 255) {
      *why = "must have a delimiter of 1 to 255 bytes";
      return -1;
    }
  } else if (t != LUA_TSTRING && t != LUA_TNUMBER) {
    return -1;
  }
  if ((f = (conn_framing *)calloc(1, sizeof *f + dlen)) == NULL) luaL_error(L, "evtcp: out of memory");
  if (t == LUA_TNUMBER) f->size = (size_t)lua_tointeger(L, index);
  if (delim) memcpy(f->delim, delim, dlen);
  f->delim_len = dlen;
  *out = f;
  return 0;
}

/* Pushes conn.framing as it was given: nil, "line", n or { delimiter }. */
void conn_push_framing(lua_State *L, const evtcp_conn *c) {
  const conn_framing *f = c->framing;
  if (f == NULL) lua_pushnil(L);
  else if (f->size > 0) lua_pushinteger(L, (lua_Integer)f->size);
  else if (f->delim_len == 0) lua_pushliteral(L, "line");
  else {
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, f->delim, f->delim_len);
    lua_setfield(L, -2, "delimiter");
  }
}

/* Replaces the framing; the next frame is cut by the new one. */
void conn_set_framing(evtcp_conn *c, conn_framing *f) {
  free(c->framing);
  c->framing = f;
  conn_input_drained(c); /* scanned anew; a larger byte count may read on */
  conn_kept_input_due(c); /* frames already buffered go out from the loop */
}
