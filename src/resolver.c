/*
 * resolver.c - core.lookup(name, fn): one host-name lookup as a Lua object,
 * for evtcp.resolve (the Lua layer waits on it).
 *
 * A request is anchored from start until its result has been delivered or
 * it is cancelled, so a lookup in flight keeps run() going. The result
 * always reaches Lua from the loop's deferred queue, never from inside
 * core.lookup (evdns answers /etc/hosts and literals at once) nor from
 * evdns's callback: building the address table allocates, and that must
 * happen under a protected call.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "evtcp.h"

typedef struct evtcp_request {
  evtcp_object obj;
  evtcp_lookup *lookup;          /* in flight, or NULL */
  struct evutil_addrinfo *addrs; /* the answer, until delivered */
  int gai_code;
  unsigned due : 1;              /* answered, to deliver */
} evtcp_request;

static void request_release(lua_State *L, evtcp_object *obj);
static object_type request_type = {"Lookup", NULL, request_release, 0, 0};

static void request_on_answer(void *owner, int gai_code, struct evutil_addrinfo *addrs) {
  evtcp_request *r = (evtcp_request *)owner;
  r->lookup = NULL;
  r->addrs = addrs;
  r->gai_code = gai_code;
  r->due = 1;
  object_defer(&r->obj);
}

/* Pushes the addresses as an array of IP strings, each once, in order. */
static void push_addresses(lua_State *L, const struct evutil_addrinfo *ai) {
  int n = 0;
  lua_newtable(L);
  for (; ai != NULL; ai = ai->ai_next) {
    int i, seen = 0;
    sockaddr_push_ip(L, ai->ai_addr);
    for (i = 1; i <= n && !seen; i++) {
      lua_rawgeti(L, -2, i);
      seen = lua_rawequal(L, -1, -2);
      lua_pop(L, 1);
    }
    if (seen || lua_isnil(L, -1)) lua_pop(L, 1);
    else lua_rawseti(L, -2, ++n);
  }
}

/* Under loop_pcall: request -> fn(request, addresses) or fn(request, nil, error). */
static int request_deliver(lua_State *L) {
  evtcp_request *r = (evtcp_request *)lua_touserdata(L, 1);
  struct evutil_addrinfo *addrs = r->addrs;
  lua_getiuservalue(L, 1, 1);
  lua_pushvalue(L, 1);
  if (r->gai_code == 0 && addrs != NULL) {
    push_addresses(L, addrs);
    lua_pushnil(L);
  } else {
    evtcp_failure f;
    failure_from_dns(&f, r->gai_code ? r->gai_code : EVUTIL_EAI_NONAME);
    lua_pushnil(L);
    error_push(L, &f);
  }
  r->addrs = NULL;
  if (addrs) evutil_freeaddrinfo(addrs);
  lua_call(L, 3, 0);
  return 0;
}

static void request_run_pending(evtcp_object *obj) {
  evtcp_request *r = (evtcp_request *)obj;
  lua_State *L = obj->loop->L;
  if (!r->due) return;
  r->due = 0;
  object_unanchor(obj, ANCHOR_CONNECTING);
  lua_pushcfunction(L, request_deliver);
  object_push(L, obj); /* anchored while pending: never nil */
  loop_pcall(obj->loop, 1, 0);
}

/* core.lookup(name, fn) -> request; fn(request, addresses | nil, error)
 * runs once from the loop, unless the request is cancelled first. */
static int request_start(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  const char *name = luaL_checkstring(L, 1);
  luaL_argcheck(L, !string_has_nul(L, 1), 1, "name must not contain a NUL byte");
  evtcp_request *r;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  r = (evtcp_request *)object_new(L, loop, sizeof *r, 1, request_run_pending, &request_type);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  object_anchor(&r->obj, ANCHOR_CONNECTING);
  r->lookup = lookup_start(loop, name, "0", request_on_answer, r);
  return 1;
}

/* Drops the lookup or the answer not yet delivered; no callback follows. */
static void request_stop(evtcp_request *r) {
  if (r->lookup) { lookup_cancel(r->lookup); r->lookup = NULL; }
  if (r->addrs) { evutil_freeaddrinfo(r->addrs); r->addrs = NULL; }
  r->due = 0;
}

/* request:cancel() -> true if fn will not run */
static int request_cancel(lua_State *L) {
  evtcp_request *r = (evtcp_request *)object_check(L, 1, &request_type);
  int was = r->lookup != NULL || r->due;
  if (r->obj.loop == NULL) { lua_pushboolean(L, 0); return 1; }
  request_stop(r);
  object_unanchor(&r->obj, ANCHOR_CONNECTING);
  lua_pushboolean(L, was);
  return 1;
}

static void request_release(lua_State *L, evtcp_object *obj) {
  (void)L;
  request_stop((evtcp_request *)obj);
}

/* core.addHosts(path) -> true | nil, message: the names of a hosts file
 * answered too (evtcp.setResolver's `hosts`). */
static int resolver_add_hosts(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  const char *path = luaL_checkstring(L, 1);
  luaL_argcheck(L, !string_has_nul(L, 1), 1, "path must not contain a NUL byte");
  if (resolve_add_hosts(loop, path) != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "hosts file '%s': %s", path, strerror(errno));
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

void resolver_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"cancel", request_cancel}, {NULL, NULL}};
  object_type_open(L, &request_type, methods, NULL);
  lua_pop(L, 2);
  lua_pushcfunction(L, request_start);
  lua_setfield(L, -2, "lookup");
  lua_pushcfunction(L, resolver_add_hosts);
  lua_setfield(L, -2, "addHosts");
}
