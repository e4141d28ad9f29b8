/*
 * error.c - error objects: { errCode, message, componentSignature, kind }.
 *
 * Failures are first captured in C (evtcp_failure, no Lua involved, so they
 * can be recorded from any libevent callback) and turned into Lua tables
 * only when they are delivered. kind says what happened in words a program
 * can branch on; errCode and message keep the system's own detail.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <string.h>
#include <stdio.h>
#include "evtcp.h"

static const char *const kind_names[] = {
  "refused", "unreachable", "dns", "timeout", "reset", "tls", "accept", "io", NULL
};

static evtcp_kind kind_of_errno(int err) {
  switch (err) {
  case ECONNREFUSED:
  case ENOENT: /* a Unix socket path that nobody has bound */
    return KIND_REFUSED;
  case ENETUNREACH: case EHOSTUNREACH: case ENETDOWN: case EHOSTDOWN:
  case EADDRNOTAVAIL: case EAFNOSUPPORT:
    return KIND_UNREACHABLE;
  case ETIMEDOUT: return KIND_TIMEOUT;
  case ECONNRESET: case EPIPE: case ECONNABORTED: return KIND_RESET;
  default: return KIND_IO;
  }
}

void failure_set(evtcp_failure *f, evtcp_kind kind, int code, const char *component,
                 const char *msg) {
  f->kind = kind;
  f->code = code;
  f->component = component;
  snprintf(f->message, sizeof f->message, "%s", msg);
}

void failure_from_errno(evtcp_failure *f, int err, const char *component) {
  failure_set(f, kind_of_errno(err), err, component, evutil_socket_error_to_string(err));
}

void failure_from_dns(evtcp_failure *f, int gai_code) {
  failure_set(f, KIND_DNS, gai_code, "dns", evutil_gai_strerror(gai_code));
}

static const char error_mt_key = 'E';

/* Pushes the error object for f. [-0, +1, m] */
void error_push(lua_State *L, const evtcp_failure *f) {
  lua_createtable(L, 0, 4);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &error_mt_key);
  lua_setmetatable(L, -2);
  lua_pushinteger(L, f->code);
  lua_setfield(L, -2, "errCode");
  lua_pushstring(L, f->message);
  lua_setfield(L, -2, "message");
  lua_pushstring(L, f->component);
  lua_setfield(L, -2, "componentSignature");
  lua_pushstring(L, kind_names[f->kind]);
  lua_setfield(L, -2, "kind");
}

/* Appends the error at err_index to the `errors` array of the object at
 * obj_index, creating the array on first use. [-0, +0, m] */
void error_append(lua_State *L, int obj_index, int err_index) {
  obj_index = lua_absindex(L, obj_index);
  err_index = lua_absindex(L, err_index);
  object_uv_table(L, obj_index, UV_ERRORS);
  lua_pushvalue(L, err_index);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
}

/* An error object reads as "<message> (<kind>)": assert(evtcp.dial(...))
 * then fails with a sentence, not "error object is a table value". */
static int error__tostring(lua_State *L) {
  lua_getfield(L, 1, "message");
  lua_getfield(L, 1, "kind");
  lua_pushfstring(L, "%s (%s)", luaL_optstring(L, -2, "?"), luaL_optstring(L, -1, "?"));
  return 1;
}

/* core.newError(kind, component, message): an error object made by the Lua
 * layer (errCode 0), for failures that have no system error behind them. */
static int error_new(lua_State *L) {
  evtcp_failure f;
  int kind = luaL_checkoption(L, 1, NULL, kind_names);
  failure_set(&f, (evtcp_kind)kind, 0, luaL_checkstring(L, 2), luaL_checkstring(L, 3));
  f.component = lua_tostring(L, 2); /* stays alive: it is an argument */
  error_push(L, &f);
  return 1;
}

/* The error metatable, and core.newError into the table on top. */
void error_open(lua_State *L) {
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, error__tostring);
  lua_setfield(L, -2, "__tostring");
  lua_rawsetp(L, LUA_REGISTRYINDEX, &error_mt_key);
  lua_pushcfunction(L, error_new);
  lua_setfield(L, -2, "newError");
}
