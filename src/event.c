/*
 * event.c - TCPEvent, and the one place where callbacks are looked up.
 *
 * An event is a small immutable userdata: its type, a copy of the remote
 * address, and one uservalue for the payload (the data string, or the error
 * object). The ip string is made only if the program asks for it, so an
 * onData event costs one userdata and the data string. Over a Unix socket
 * the "ip" is the socket's path, kept in a second uservalue.
 *
 * event_deliver() is how C code hands a notice to Lua: it calls
 * event_dispatch() under loop_pcall, so that the callback lookup (which may
 * run __index metamethods), the allocations and the callback itself all
 * happen inside the protected call.
 */
#include "platform.h" /* first: feature macros */
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "evtcp.h"

typedef struct evtcp_event {
  evtcp_event_type type;
  union {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
  } peer;
} evtcp_event;

static const char *const type_names[EVT_COUNT] = {
  "connection", "data", "error", "close", "terminate", "drain", "end", "upgrade"
};

const char *const event_callback_names[EVT_COUNT] = {
  "onConnection", "onData", "onError", "onShutdown", "onTerminate", "onDrain", "onEnd",
  "onUpgrade"
};

/* An event is no evtcp_object: nothing to free, no __gc. */
static object_type event_type = {"TCPEvent", "locked", NULL, 0, 0};

/* Pushes a new event for notice; payload_index holds the error object for
 * EVT_ERROR. [-0, +1, m] */
static void event_push(lua_State *L, const evtcp_notice *notice, int payload_index) {
  evtcp_event *ev = (evtcp_event *)lua_newuserdatauv(L, sizeof *ev, notice->path ? 2 : 1);
  ev->type = notice->type;
  memset(&ev->peer, 0, sizeof ev->peer);
  if (notice->path != NULL) {
    ev->peer.sa.sa_family = AF_UNIX;
    lua_pushstring(L, notice->path);
    lua_setiuservalue(L, -2, 2);
  } else if (notice->peer != NULL) {
    if (notice->peer->sa_family == AF_INET) ev->peer.in = *(const struct sockaddr_in *)notice->peer;
    else if (notice->peer->sa_family == AF_INET6) ev->peer.in6 = *(const struct sockaddr_in6 *)notice->peer;
  }
  object_set_type(L, -1, &event_type);
  if (notice->type == EVT_DATA) {
    lua_pushlstring(L, notice->data, notice->len);
    lua_setiuservalue(L, -2, 1);
    if (notice->copied) notice->copied(notice->copied_arg);
  } else if (payload_index != 0) {
    lua_pushvalue(L, payload_index);
    lua_setiuservalue(L, -2, 1);
  }
}

/* Runs under loop_pcall. Stack: object, [error object,] notice (light
 * userdata). Calls handler:onX(object, event) if the handler has it, and
 * marks the notice as handled; leaves the callback's results (adjusted to
 * notice->nresults by the caller's pcall). */
static int event_dispatch(lua_State *L) {
  evtcp_notice *notice = (evtcp_notice *)lua_touserdata(L, -1);
  int payload = lua_gettop(L) == 3 ? 2 : 0;
  lua_pop(L, 1);
  lua_getiuservalue(L, 1, UV_HANDLER);                    /* handler */
  if (lua_isnil(L, -1)) return 0;
  if (lua_getfield(L, -1, event_callback_names[notice->type]) == LUA_TNIL) return 0;
  notice->handled = 1;
  if (!lua_isfunction(L, -1)) { /* a callable table will do */
    if (luaL_getmetafield(L, -1, "__call") == LUA_TNIL)
      return luaL_error(L, "evtcp: handler.%s is a %s, not a function", event_callback_names[notice->type],
                        luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  lua_insert(L, -2);                                      /* cb handler */
  lua_pushvalue(L, 1);                                    /* cb handler obj */
  event_push(L, notice, payload);                         /* cb handler obj ev */
  lua_call(L, 3, LUA_MULTRET);
  return lua_gettop(L) - (payload ? 2 : 1);
}

/* Delivers notice for the object (and error object) the caller pushed:
 * nargs is 1, or 2 with an error object. Pops them; leaves nresults values
 * on success. Returns the pcall status. */
int event_deliver(evtcp_loop *loop, evtcp_notice *notice, int nargs, int nresults) {
  lua_State *L = loop->L;
  lua_pushcfunction(L, event_dispatch);
  lua_insert(L, -nargs - 1);
  lua_pushlightuserdata(L, notice);
  notice->handled = 0;
  return loop_pcall(loop, nargs + 1, nresults);
}

/* Every event.data goes through here. */
static evtcp_event *check_event(lua_State *L) {
  return (evtcp_event *)object_check(L, 1, &event_type);
}

static int event__index(lua_State *L) {
  evtcp_event *ev = check_event(L);
  const char *key = lua_tostring(L, 2);
  if (key == NULL) return 0;
  if (strcmp(key, "type") == 0) {
    lua_pushstring(L, type_names[ev->type]);
  } else if (strcmp(key, "data") == 0) {
    if (ev->type != EVT_DATA) return 0;
    lua_getiuservalue(L, 1, 1);
  } else if (strcmp(key, "error") == 0) {
    if (ev->type != EVT_ERROR) return 0;
    lua_getiuservalue(L, 1, 1);
  } else if (strcmp(key, "ip") == 0) {
    if (ev->peer.sa.sa_family == AF_UNIX) lua_getiuservalue(L, 1, 2);
    else sockaddr_push_ip(L, &ev->peer.sa);
  } else if (strcmp(key, "port") == 0) {
    /* nil only where there is no port (a Unix socket, no peer): a PROXY
     * header may well name source port 0, and remotePort says 0 then */
    if (ev->peer.sa.sa_family != AF_INET && ev->peer.sa.sa_family != AF_INET6) return 0;
    lua_pushinteger(L, sockaddr_port(&ev->peer.sa));
  } else {
    return 0;
  }
  return 1;
}

static int event__newindex(lua_State *L) {
  check_event(L);
  return luaL_error(L, "evtcp: a TCPEvent is immutable (cannot set '%s')",
                    luaL_tolstring(L, 2, NULL));
}

static int event__tostring(lua_State *L) {
  evtcp_event *ev = check_event(L);
  lua_pushfstring(L, "TCPEvent(%s)", type_names[ev->type]);
  return 1;
}

void event_open(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__index", event__index},
    {"__newindex", event__newindex},
    {"__tostring", event__tostring},
    {NULL, NULL}
  };
  object_type_open(L, &event_type, NULL, meta);
  lua_pop(L, 2);
}
