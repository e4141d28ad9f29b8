/*
 * error.c - error objects: { errCode, errName, message, componentSignature,
 * kind }.
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

/* The symbolic name of an errno value, as <errno.h> spells it. */
static const char *errno_name(int err) {
  switch (err) {
#define NAME(e) case e: return #e;
  NAME(ECONNREFUSED) NAME(ECONNRESET) NAME(ECONNABORTED) NAME(EPIPE) NAME(ETIMEDOUT)
  NAME(ENETUNREACH) NAME(EHOSTUNREACH) NAME(ENETDOWN) NAME(EHOSTDOWN) NAME(EADDRINUSE)
  NAME(EADDRNOTAVAIL) NAME(EAFNOSUPPORT) NAME(EACCES) NAME(EPERM) NAME(ENOENT) NAME(EMFILE)
  NAME(ENFILE) NAME(ENOMEM) NAME(ENOBUFS) NAME(EINVAL) NAME(EBADF) NAME(EBUSY) NAME(ENOTSOCK)
  NAME(ENOTCONN) NAME(EISCONN) NAME(EPROTO) NAME(EMSGSIZE) NAME(EINTR) NAME(EIO)
  NAME(EOPNOTSUPP) NAME(EPROTONOSUPPORT) NAME(ENAMETOOLONG) NAME(ENOTDIR) NAME(EROFS)
  NAME(EINPROGRESS) NAME(EALREADY) NAME(ESHUTDOWN)
#if EAGAIN != EWOULDBLOCK
  NAME(EWOULDBLOCK)
#endif
  NAME(EAGAIN)
#undef NAME
  default: return NULL;
  }
}

/* The name of a resolver error (libevent's codes are getaddrinfo's). */
static const char *gai_name(int code) {
  switch (code) {
#define NAME(e) case EVUTIL_##e: return #e;
  NAME(EAI_NONAME) NAME(EAI_AGAIN) NAME(EAI_FAIL) NAME(EAI_MEMORY) NAME(EAI_FAMILY)
  NAME(EAI_SERVICE) NAME(EAI_SOCKTYPE) NAME(EAI_BADFLAGS) NAME(EAI_SYSTEM) NAME(EAI_CANCEL)
#undef NAME
  default: return NULL;
  }
}

/* errName for what code says in component's terms; errCode 0 (a failure
 * with no system error behind it) is named by its kind: "EVTCP_TIMEOUT". */
static void failure_name(evtcp_failure *f) {
  const char *n = strcmp(f->component, "dns") == 0 ? gai_name(f->code) : errno_name(f->code);
  size_t i;
  if (n != NULL) { snprintf(f->name, sizeof f->name, "%s", n); return; }
  if (f->code != 0) { snprintf(f->name, sizeof f->name, "E%d", f->code); return; }
  snprintf(f->name, sizeof f->name, "EVTCP_%s", kind_names[f->kind]);
  for (i = 0; f->name[i]; i++)
    if (f->name[i] >= 'a' && f->name[i] <= 'z') f->name[i] = (char)(f->name[i] - 32);
}

void failure_set(evtcp_failure *f, evtcp_kind kind, int code, const char *component,
                 const char *msg) {
  f->kind = kind;
  f->code = code;
  f->component = component;
  snprintf(f->message, sizeof f->message, "%s", msg);
  failure_name(f);
}

/* errName from a library's reason in words, as a C constant spells it
 * ("certificate verify failed" -> "CERTIFICATE_VERIFY_FAILED"); NULL
 * leaves the errno's name. */
void failure_name_reason(evtcp_failure *f, const char *reason) {
  size_t i;
  if (reason == NULL) return; /* the errno's name stays */
  for (i = 0; reason[i] && i + 1 < sizeof f->name; i++) {
    char ch = reason[i];
    f->name[i] = ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : (ch == ' ' || ch == '-') ? '_' : ch;
  }
  f->name[i] = '\0';
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
  lua_createtable(L, 0, 5);
  lua_rawgetp(L, LUA_REGISTRYINDEX, &error_mt_key);
  lua_setmetatable(L, -2);
  lua_pushinteger(L, f->code);
  lua_setfield(L, -2, "errCode");
  lua_pushstring(L, f->name);
  lua_setfield(L, -2, "errName");
  lua_pushstring(L, f->message);
  lua_setfield(L, -2, "message");
  lua_pushstring(L, f->component);
  lua_setfield(L, -2, "componentSignature");
  lua_pushstring(L, kind_names[f->kind]);
  lua_setfield(L, -2, "kind");
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
 * layer (errCode 0, errName EVTCP_<KIND>), for failures that have no
 * system error behind them. */
static int error_new(lua_State *L) {
  evtcp_failure f;
  int kind = luaL_checkoption(L, 1, NULL, kind_names);
  f.component = luaL_checkstring(L, 2); /* stays alive: it is an argument */
  failure_set(&f, (evtcp_kind)kind, 0, f.component, luaL_checkstring(L, 3));
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
