/*
 * conn_sockopt.c - conn:setOption(name, value) and conn:getOption(name):
 * the socket options evtcp has no property for, by name. Each is read
 * back from the socket itself (getOption is getsockopt), so what the
 * kernel made of a value (Linux doubles rcvbuf and sndbuf) is what shows.
 *
 * A name this system does not have is an argument error; a value the
 * kernel refuses (mark without CAP_NET_ADMIN, say) is `nil, message`.
 * tos and ttl are IPv4's (IP_TOS, IP_TTL) or IPv6's (IPV6_TCLASS,
 * IPV6_UNICAST_HOPS) by the socket's family.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <net/if.h>
#include "conn.h"

typedef enum { VALUE_INT, VALUE_BOOL, VALUE_LINGER, VALUE_STRING } value_kind;

typedef struct sockopt_name {
  const char *name;
  int level, option;            /* IPv4's, or the only one */
  int level6, option6;          /* IPv6's when it differs; level6 0: the same */
  value_kind kind;
  int tcp_only;                 /* not on a Unix socket */
} sockopt_name;

static const sockopt_name sockopt_names[] = {
  {"rcvbuf", SOL_SOCKET, SO_RCVBUF, 0, 0, VALUE_INT, 0},
  {"sndbuf", SOL_SOCKET, SO_SNDBUF, 0, 0, VALUE_INT, 0},
  {"linger", SOL_SOCKET, SO_LINGER, 0, 0, VALUE_LINGER, 0},
  {"tos", IPPROTO_IP, IP_TOS, IPPROTO_IPV6, IPV6_TCLASS, VALUE_INT, 1},
  {"ttl", IPPROTO_IP, IP_TTL, IPPROTO_IPV6, IPV6_UNICAST_HOPS, VALUE_INT, 1},
#ifdef TCP_QUICKACK
  {"quickack", IPPROTO_TCP, TCP_QUICKACK, 0, 0, VALUE_BOOL, 1},
#endif
#ifdef SO_MARK
  {"mark", SOL_SOCKET, SO_MARK, 0, 0, VALUE_INT, 0},
#endif
#ifdef SO_BINDTODEVICE
  {"bindToDevice", SOL_SOCKET, SO_BINDTODEVICE, 0, 0, VALUE_STRING, 0},
#endif
  {"nodelay", IPPROTO_TCP, TCP_NODELAY, 0, 0, VALUE_BOOL, 1},
  {"keepalive", SOL_SOCKET, SO_KEEPALIVE, 0, 0, VALUE_BOOL, 0},
  {"reuseaddr", SOL_SOCKET, SO_REUSEADDR, 0, 0, VALUE_BOOL, 0},
};

/* The option named at index 2, or an argument error listing them. */
static const sockopt_name *sockopt_check_name(lua_State *L) {
  const char *name = luaL_checkstring(L, 2);
  size_t i;
  luaL_Buffer b;
  for (i = 0; i < sizeof sockopt_names / sizeof sockopt_names[0]; i++)
    if (strcmp(name, sockopt_names[i].name) == 0) return &sockopt_names[i];
  luaL_buffinit(L, &b);
  for (i = 0; i < sizeof sockopt_names / sizeof sockopt_names[0]; i++) {
    luaL_addstring(&b, i ? ", " : "");
    luaL_addstring(&b, sockopt_names[i].name);
  }
  luaL_pushresult(&b);
  luaL_argerror(L, 2, lua_pushfstring(L, "no socket option '%s' here (there are: %s)", name, lua_tostring(L, -1)));
  return NULL;
}

/* The connection's socket, or raises: there is none before it is
 * connected or after it is closed. */
static evutil_socket_t sockopt_fd(lua_State *L, const evtcp_conn *c, const sockopt_name *o) {
  if (c->fd < 0 || c->state != CONN_OPEN) luaL_error(L, "evtcp: %s on a connection that is not open", "socket option");
  if (o->tcp_only && c->unix_path != NULL) luaL_error(L, "evtcp: socket option '%s' is TCP's; this is a Unix socket", o->name);
  return c->fd;
}

/* The level and option for the socket's family. */
static void sockopt_for(const evtcp_conn *c, const sockopt_name *o, int *level, int *option) {
  int v6 = c->peer.sa.sa_family == AF_INET6 && o->level6 != 0;
  *level = v6 ? o->level6 : o->level;
  *option = v6 ? o->option6 : o->option;
}

static int sockopt_failed(lua_State *L, const sockopt_name *o, int err) {
  lua_pushnil(L);
  lua_pushfstring(L, "socket option '%s': %s", o->name, evutil_socket_error_to_string(err));
  return 2;
}

/* conn:setOption(name, value) -> true | nil, message */
int conn_set_option(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  const sockopt_name *o = sockopt_check_name(L);
  int level, option, v = 0, rc;
  evutil_socket_t fd;
  struct linger lg = {0, 0};
  switch (o->kind) {
  case VALUE_INT:
    if (!lua_isinteger(L, 3) || lua_tointeger(L, 3) < 0 || lua_tointeger(L, 3) > 0x7fffffff)
      return luaL_argerror(L, 3, lua_pushfstring(L, "'%s' takes an integer >= 0", o->name));
    v = (int)lua_tointeger(L, 3);
    break;
  case VALUE_BOOL:
    luaL_checktype(L, 3, LUA_TBOOLEAN);
    v = lua_toboolean(L, 3);
    break;
  case VALUE_LINGER: /* seconds, or false: off */
    if (lua_isboolean(L, 3) && !lua_toboolean(L, 3)) break;
    if (!lua_isinteger(L, 3) || lua_tointeger(L, 3) < 0 || lua_tointeger(L, 3) > 65535)
      return luaL_argerror(L, 3, "'linger' takes whole seconds 0..65535, or false");
    lg.l_onoff = 1;
    lg.l_linger = (int)lua_tointeger(L, 3);
    break;
  case VALUE_STRING:
    if (lua_type(L, 3) != LUA_TSTRING || lua_rawlen(L, 3) >= IFNAMSIZ || string_has_nul(L, 3))
      return luaL_argerror(L, 3, lua_pushfstring(L, "'%s' takes an interface name (under %d bytes)", o->name, IFNAMSIZ));
    break;
  }
  fd = sockopt_fd(L, c, o);
  sockopt_for(c, o, &level, &option);
  if (o->kind == VALUE_LINGER) rc = setsockopt(fd, level, option, &lg, sizeof lg);
  else if (o->kind == VALUE_STRING) rc = setsockopt(fd, level, option, lua_tostring(L, 3), (socklen_t)lua_rawlen(L, 3));
  else rc = setsockopt(fd, level, option, &v, sizeof v);
  if (rc != 0) return sockopt_failed(L, o, EVUTIL_SOCKET_ERROR());
  if (o->option == TCP_NODELAY && o->level == IPPROTO_TCP) c->no_delay = v != 0; /* conn.noDelay agrees */
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:getOption(name) -> value | nil, message */
int conn_get_option(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  const sockopt_name *o = sockopt_check_name(L);
  evutil_socket_t fd = sockopt_fd(L, c, o);
  int level, option, v = 0;
  struct linger lg;
  char dev[IFNAMSIZ + 1];
  socklen_t len;
  sockopt_for(c, o, &level, &option);
  switch (o->kind) {
  case VALUE_LINGER:
    len = sizeof lg;
    if (getsockopt(fd, level, option, &lg, &len) != 0) return sockopt_failed(L, o, EVUTIL_SOCKET_ERROR());
    if (lg.l_onoff) lua_pushinteger(L, lg.l_linger);
    else lua_pushboolean(L, 0);
    return 1;
  case VALUE_STRING:
    memset(dev, 0, sizeof dev);
    len = IFNAMSIZ;
    if (getsockopt(fd, level, option, dev, &len) != 0) return sockopt_failed(L, o, EVUTIL_SOCKET_ERROR());
    lua_pushstring(L, dev);
    return 1;
  default:
    len = sizeof v;
    if (getsockopt(fd, level, option, &v, &len) != 0) return sockopt_failed(L, o, EVUTIL_SOCKET_ERROR());
    if (o->kind == VALUE_BOOL) lua_pushboolean(L, v != 0);
    else lua_pushinteger(L, v);
    return 1;
  }
}
