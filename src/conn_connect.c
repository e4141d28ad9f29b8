/*
 * conn_connect.c - a client connection on its way to OPEN: the lookup, the
 * connect timeout, the sockets it connects with (local bind, fastOpen),
 * the winner handed to the transport, the client's options, and
 * evtcp.connect itself. Racing the addresses is conn_race.c's.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include "conn.h"
#include "socket.h"
#include "tls.h"

/* ---- connecting ---- */

/* fastOpen: the first data goes in the SYN (TCP_FASTOPEN_CONNECT: the
 * connect completes at once and the SYN leaves with the first write). Off
 * where the system has no such option, or refuses it. */
static void conn_fast_open(evutil_socket_t fd) {
#ifdef TCP_FASTOPEN_CONNECT
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &one, sizeof one);
#else
  (void)fd;
#endif
}

/* A non-blocking socket of family, for fastOpen, bound to
 * localAddress/localPort if given; or -1 with *err (an address of the
 * other family fails this address only). */
evutil_socket_t conn_own_socket(const evtcp_conn *c, int family, int *err) {
  evtcp_addr a;
  socklen_t len;
  evutil_socket_t fd;
  if (c->client->bind_port < 0) {
    if ((fd = socket_new(family, err)) >= 0 && c->fast_open) conn_fast_open(fd);
    return fd;
  }
  memset(&a, 0, sizeof a);
  if (c->client->bind_addr.sa.sa_family != 0) {
    if (c->client->bind_addr.sa.sa_family != family) { *err = EAFNOSUPPORT; return -1; }
    a = c->client->bind_addr;
  }
  a.sa.sa_family = (sa_family_t)family;
  if (family == AF_INET) { a.in.sin_port = htons((unsigned short)c->client->bind_port); len = sizeof a.in; }
  else { a.in6.sin6_port = htons((unsigned short)c->client->bind_port); len = sizeof a.in6; }
  if ((fd = socket_new(family, err)) < 0) return -1;
  if (c->fast_open) conn_fast_open(fd);
  if (bind(fd, &a.sa, len) != 0) {
    *err = errno;
    evutil_closesocket(fd);
    return -1;
  }
  return fd;
}

/* Connects to a Unix domain socket (one address, no race): libevent's
 * connect on a new bufferevent of the transport. Returns 0 once under way,
 * or -1 with the reason in c->failure. */
static int conn_connect_unix(evtcp_conn *c, const struct sockaddr *sa, int len) {
  if (c->transport->connect(c) != 0) return -1;
  c->state = CONN_CONNECTING;
  if (bufferevent_socket_connect(c->bev, sa, len) == 0) {
    c->fd = bufferevent_getfd(c->bev); /* ours to close */
    return 0;
  }
  conn_note_failure(c, EVUTIL_SOCKET_ERROR(), "libevent");
  c->fd = bufferevent_getfd(c->bev); /* libevent closed the socket it made */
  conn_free_bev(c, &c->bev, &c->fd);
  return -1;
}

/* Ends the connection with the failure of the last address tried. */
void conn_connect_failed(evtcp_conn *c) {
  if (c->failure == NULL) {
    evtcp_failure f;
    failure_from_errno(&f, ENOMEM, "evtcp");
    conn_end(c, &f, 0);
  } else {
    conn_end(c, NULL, 0); /* reports the recorded failure */
  }
}

/* The race's winner, connected: the transport's bufferevent takes the
 * socket. Plain TCP is open now; TLS starts its handshake (OPEN when it
 * is done, conn_on_bev_event). */
void conn_connected_socket(evtcp_conn *c, evutil_socket_t fd) {
  if (c->transport->connect(c) != 0 || bufferevent_setfd(c->bev, fd) != 0) {
    if (c->bev) conn_free_bev(c, &c->bev, &c->fd);
    evutil_closesocket(fd);
    if (c->failure == NULL) conn_note_failure(c, ENOMEM, "evtcp");
    conn_connect_failed(c);
    return;
  }
  c->fd = fd;
  if (c->transport->bev_reads) bufferevent_enable(c->bev, EV_WRITE); /* the handshake */
  else conn_on_connected(c);
}

static void conn_on_resolved(void *owner, int gai_code, struct evutil_addrinfo *addrs) {
  evtcp_conn *c = (evtcp_conn *)owner;
  c->client->lookup = NULL;
  if (gai_code != 0 || addrs == NULL) {
    evtcp_failure f;
    if (addrs) evutil_freeaddrinfo(addrs);
    failure_from_dns(&f, gai_code ? gai_code : EVUTIL_EAI_NONAME);
    conn_end(c, &f, 0);
    return;
  }
  c->client->addrs = addrs;
  conn_race_start(c, addrs);
}

static void conn_on_connect_timeout(evutil_socket_t fd, short what, void *arg) {
  evtcp_conn *c = (evtcp_conn *)arg;
  evtcp_failure f;
  (void)fd; (void)what;
  if (c->failure) { free(c->failure); c->failure = NULL; }
  failure_set(&f, KIND_TIMEOUT, ETIMEDOUT, "evtcp", "connect timeout");
  conn_end(c, &f, 0);
}

/* Starts resolving or connecting to host:port. Runs no Lua callback. */
static void conn_start(lua_State *L, evtcp_conn *c, const char *host, int port) {
  struct evutil_addrinfo hints, *literal = NULL;
  char portstr[8];
  snprintf(portstr, sizeof portstr, "%d", port);
  if (c->client->connect_timeout >= 0) {
    struct timeval tv = seconds_tv(c->client->connect_timeout);
    c->client->connect_timer = evtimer_new(c->obj.loop->base, conn_on_connect_timeout, c);
    if (c->client->connect_timer == NULL) luaL_error(L, "evtcp: out of memory");
    evtimer_add(c->client->connect_timer, &tv);
  }
  if (c->unix_path != NULL) { /* no lookup, one address */
    struct sockaddr_un sun;
    socklen_t len;
    const char *why;
    sockaddr_unix_parse(host, &sun, &len, &why); /* checked by conn_connect */
    if (conn_connect_unix(c, (struct sockaddr *)&sun, (int)len) != 0) conn_connect_failed(c);
    return;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = EVUTIL_AI_NUMERICHOST | EVUTIL_AI_NUMERICSERV;
  if (evutil_getaddrinfo(host, portstr, &hints, &literal) == 0 && literal != NULL) {
    c->client->addrs = literal; /* an IP literal: no lookup */
    conn_race_start(c, literal);
    return;
  }
  c->state = CONN_RESOLVING;
  c->client->lookup = lookup_start(c->obj.loop, host, portstr, conn_on_resolved, c);
}

/* The key of the pool this connection is taken from and kept in: the
 * `pool` option, or the transport, address and port (TLS: the name
 * checked, verification and certificates too). 0, or -1 without memory. */
static int conn_pool_key(evtcp_conn *c, const char *host, int port) {
  const char *identity = c->transport->identity ? c->transport->identity(c) : NULL;
  size_t size;
  c->client->pool_transport = c->transport;
  if (c->client->pool_key) return 0;
  size = strlen(host) + (identity ? strlen(identity) : 0) + 32;
  if ((c->client->pool_key = (char *)malloc(size)) == NULL) return -1;
  if (identity) snprintf(c->client->pool_key, size, "%s|%s", c->transport->name, identity);
  else snprintf(c->client->pool_key, size, "%s|%s:%d", c->transport->name, host, port);
  return 0;
}

/* Starts the connection, or reports a failure its options met (a TLS
 * context that could not be made). */
static void conn_begin(lua_State *L, evtcp_conn *c, const char *host, int port) {
  char bare[256];
  if (c->failure != NULL) { /* reported as the connection's error */
    conn_end(c, NULL, 0);
    return;
  }
  host = sockaddr_unbracket(host, bare, sizeof bare); /* "[::1]" as in URLs */
  if ((c->client->host = strdup(host)) == NULL) luaL_error(L, "evtcp: out of memory");
  if (c->transport->dial && c->transport->dial(c, host, port) != 0) luaL_error(L, "evtcp: out of memory");
  if (conn_pool_key(c, host, port) != 0) luaL_error(L, "evtcp: out of memory");
  if (pool_take(c)) return; /* a kept connection: OPEN from the loop */
  conn_start(L, c, host, port);
}

/* localAddress and localPort: where an outgoing socket is bound before it
 * connects. */
static void conn_read_local_bind(lua_State *L, evtcp_conn *c, int h, int arg) {
  int t = lua_getfield(L, h, "localAddress");
  if (t != LUA_TNIL) {
    struct sockaddr_storage ss;
    int len;
    if (t != LUA_TSTRING) luaL_argerror(L, arg, "option 'localAddress' must be a string");
    if (string_has_nul(L, -1)) luaL_argerror(L, arg, "option 'localAddress' must not contain a NUL byte");
    if (sockaddr_parse(lua_tostring(L, -1), 0, &ss, &len) != 0)
      luaL_argerror(L, arg, "option 'localAddress' must be an IP address of this machine");
    memcpy(&c->client->bind_addr, &ss, (size_t)len < sizeof c->client->bind_addr ? (size_t)len : sizeof c->client->bind_addr);
    if (c->client->bind_port < 0) c->client->bind_port = 0;
  }
  lua_pop(L, 1);
  t = lua_getfield(L, h, "localPort");
  if (t != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 65535)
      luaL_argerror(L, arg, "option 'localPort' must be an integer in 0..65535");
    c->client->bind_port = (int)lua_tointeger(L, -1);
  }
  lua_pop(L, 1);
}

/* A client's options (the table at 3): the connection's, where its socket
 * is bound, and TLS. Raises naming the first bad one; nothing is anchored
 * yet. */
static void conn_client_options(lua_State *L, evtcp_conn *c, int is_unix) {
  conn_options o;
  conn_options_read(L, 3, 3, &o);
  conn_options_apply(c, &o, 0); /* the framing moves into c */
  conn_read_local_bind(L, c, 3, 3);
  if (lua_getfield(L, 3, "attemptDelay") != LUA_TNIL) { /* Happy Eyeballs: conn_race.c */
    int ok = seconds_get(L, -1, &c->client->attempt_delay);
    if (ok <= 0) luaL_argerror(L, 3, ok < 0 ? "option 'attemptDelay' must be a number of seconds"
                                            : "option 'attemptDelay' must be >= 0");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 3, "pool") != LUA_TNIL) { /* the key of the pool: pool.c */
    if (lua_type(L, -1) != LUA_TSTRING || lua_rawlen(L, -1) == 0)
      luaL_argerror(L, 3, "option 'pool' must be a non-empty string");
    if ((c->client->pool_key = strdup(lua_tostring(L, -1))) == NULL) luaL_error(L, "evtcp: out of memory");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, 3, "fastOpen") != LUA_TNIL) {
    if (!lua_isboolean(L, -1)) luaL_argerror(L, 3, "option 'fastOpen' must be a boolean");
    c->fast_open = lua_toboolean(L, -1) && !is_unix; /* a Unix socket has no SYN */
  }
  lua_pop(L, 1);
  if (is_unix && c->client->bind_port >= 0)
    luaL_argerror(L, 3, "localAddress and localPort do not apply to a Unix socket");
  if (lua_getfield(L, 3, "tls") != LUA_TNIL && !(lua_isboolean(L, -1) && !lua_toboolean(L, -1)))
    tls_client_setup(L, c, -1, 3, is_unix);
  lua_pop(L, 1);
}

/* evtcp.connect(address, port [, options]); address "unix:/path" (or
 * "unix:@name") with port nil is a Unix domain socket. */
int conn_connect(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  const char *host;
  lua_Integer port = 0;
  evtcp_conn *c;
  int is_unix;
  luaL_argexpected(L, lua_type(L, 1) == LUA_TSTRING, 1, "string");
  host = lua_tostring(L, 1);
  luaL_argcheck(L, lua_rawlen(L, 1) > 0 && lua_rawlen(L, 1) < 256, 1, "address must be 1 to 255 bytes");
  luaL_argcheck(L, !string_has_nul(L, 1), 1, "address must not contain a NUL byte");
  is_unix = sockaddr_is_unix(host);
  if (is_unix) {
    struct sockaddr_un sun;
    socklen_t len;
    const char *why;
    if (sockaddr_unix_parse(host, &sun, &len, &why) != 0) luaL_argerror(L, 1, why);
    if (lua_istable(L, 2) && lua_isnone(L, 3)) { /* connect("unix:/p", handler): no port to give */
      lua_pushnil(L);
      lua_insert(L, 2);
    }
    luaL_argcheck(L, lua_isnoneornil(L, 2), 2, "port must be nil for a Unix socket");
  } else {
    luaL_argexpected(L, lua_type(L, 2) == LUA_TNUMBER, 2, "number");
    port = luaL_checkinteger(L, 2);
    luaL_argcheck(L, port >= 1 && port <= 65535, 2, "port must be in 1..65535");
  }
  if (lua_isnoneornil(L, 3)) {
    lua_settop(L, 2);
    lua_newtable(L);
  }
  luaL_argexpected(L, lua_istable(L, 3) || lua_isuserdata(L, 3), 3, "table");
  lua_settop(L, 3);
  c = conn_alloc(L, loop);
  if ((c->client = (conn_client *)calloc(1, sizeof *c->client)) == NULL) return luaL_error(L, "evtcp: out of memory");
  c->client->retired_fd = -1;
  c->client->bind_port = -1;
  c->client->connect_timeout = -1;
  c->client->attempt_delay = 0.25;
  conn_client_options(L, c, is_unix);
  if (is_unix && (c->unix_path = strdup(host + 5)) == NULL) return luaL_error(L, "evtcp: out of memory");
  conn_adopt_handler(L, c, 3);
  c->state = CONN_RESOLVING;
  object_anchor(&c->obj, ANCHOR_CONNECTING); /* work in flight keeps run() going */
  conn_begin(L, c, host, (int)port);
  return 1;
}
