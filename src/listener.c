/*
 * listener.c - TCPListener on an evconnlistener.
 *
 * States: listening -> terminated (terminate(), close(), __close, __gc).
 * A listener whose handler has onConnection is anchored while it listens.
 *
 * Accepting: evconnlistener hands us a non-blocking socket. onConnection
 * (if the handler has one) decides: a handler table adopts the socket as a
 * TCPConnection, nil/false refuses it. Without onConnection the socket is
 * held for accept() (the coroutine API) and the listener stops accepting
 * until it is taken, so further clients wait in the kernel's backlog.
 *
 * Accept failures (EMFILE...) are reported to onError and accepting pauses
 * for a moment: a full descriptor table would otherwise make the listening
 * socket readable forever and spin the loop.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/un.h>
#include "conn.h"
#include "proxy.h"
#include "socket.h"
#include "tls.h"

#define ACCEPT_BACKOFF_MS 100
#define PROXY_HEADER_TIMEOUT 10.0 /* seconds, when the listener has no readTimeout */

#include "listener.h"

static void listener_release_all(lua_State *L, evtcp_object *obj);

static object_type listener_type = {"TCPListener", "TCPListener", listener_release_all, 1, 0};

static evtcp_listener *check_listener(lua_State *L, int index) {
  return (evtcp_listener *)object_check(L, index, &listener_type);
}

/* What a connection accepted from l starts with (conn_accepted, conn.h);
 * local: the listener's address when it is bound to one, left zeroed for
 * a wildcard (the kernel is asked later). */
static void listener_describe(evtcp_listener *l, evutil_socket_t fd, const evtcp_addr *peer, conn_accepted *a) {
  static const unsigned char any6[16] = {0};
  memset(a, 0, sizeof *a);
  a->fd = fd;
  a->peer = *peer;
  if (l->bound.sa.sa_family == AF_INET && l->bound.in.sin_addr.s_addr != htonl(INADDR_ANY))
    a->local = l->bound;
  else if (l->bound.sa.sa_family == AF_INET6 && memcmp(&l->bound.in6.sin6_addr, any6, 16) != 0)
    a->local = l->bound;
  a->unix_path = l->unix_path;
  a->transport = l->tls ? &transport_tls : &transport_tcp;
  a->server = l->tls;
  a->defaults = &l->defaults;
  a->live = &l->connections;
}

/* Pushes the call that adopts the client a describes with the handler at
 * h: conn_adopt_accepted, the listener, the handler, a. [-0, +4] */
static void listener_push_adoption(lua_State *L, evtcp_listener *l, int h, conn_accepted *a) {
  h = lua_absindex(L, h);
  lua_pushcfunction(L, conn_adopt_accepted);
  object_push(L, &l->obj);
  lua_pushvalue(L, h);
  lua_pushlightuserdata(L, a);
}

/* Adopts the client fd (peer) as a connection with the handler at h of
 * the main stack (conn_adopt_accepted, under loop_pcall): the connection
 * on top, or nothing if it raised (the error is stored, the socket
 * closed). Pops the handler. */
static evtcp_conn *listener_adopt_fd(evtcp_listener *l, int h, evutil_socket_t fd, const evtcp_addr *peer) {
  lua_State *L = l->obj.loop->L;
  conn_accepted a;
  h = lua_absindex(L, h);
  listener_describe(l, fd, peer, &a);
  listener_push_adoption(L, l, h, &a);
  lua_remove(L, h);
  if (loop_pcall(l->obj.loop, 3, 1) != LUA_OK) {
    if (a.fd >= 0) evutil_closesocket(a.fd); /* not adopted */
    return NULL;
  }
  l->connections++;
  return (evtcp_conn *)lua_touserdata(L, -1);
}

/* Removes the socket file we bound, unless something else replaced it
 * meanwhile (another server's socket at the same path is not ours). */
static void listener_remove_file(evtcp_listener *l) {
  struct stat st;
  if (!l->owns_file) return;
  l->owns_file = 0;
  if (lstat(l->unix_path, &st) == 0 && st.st_dev == l->file_dev && st.st_ino == l->file_ino)
    unlink(l->unix_path);
}

/* Frees the listening socket and a held client. No Lua. The TLS context
 * stays until __gc: terminate() may run inside onConnection, and the client
 * being accepted then still gets its handshake. */
static void listener_release(evtcp_listener *l) {
  if (l->lev) { evconnlistener_free(l->lev); l->lev = NULL; }
  listener_remove_file(l);
  if (l->backoff_ev) { event_free(l->backoff_ev); l->backoff_ev = NULL; }
  if (l->held_fd >= 0) { evutil_closesocket(l->held_fd); l->held_fd = -1; }
  while (l->proxy_waits) proxy_wait_free(l->proxy_waits, 1);
}

static void listener_run_pending(evtcp_object *obj) {
  evtcp_listener *l = (evtcp_listener *)obj;
  evtcp_notice n;
  if (l->promote_due) {
    l->promote_due = 0;
    listener_offer_ready(l);
  }
  if (!l->terminate_due) return;
  l->terminate_due = 0;
  notice_init(&n, EVT_TERMINATE);
  object_push(obj->loop->L, obj);
  event_deliver(obj->loop, &n, 1, 0);
  object_wake(obj, WAKE_ALL); /* wait() or accept() */
}

/* Adopts fd as a TCPConnection with the handler on top of the main stack
 * and delivers its onConnection. Pops the handler. */
static void listener_adopt(evtcp_listener *l, evutil_socket_t fd, const evtcp_addr *peer) {
  lua_State *L = l->obj.loop->L;
  evtcp_notice n;
  evtcp_conn *c = listener_adopt_fd(l, -1, fd, peer);
  if (c == NULL) return;
  if (c->state != CONN_OPEN) { /* TLS: onConnection after the handshake */
    lua_pop(L, 1);
    return;
  }
  conn_notice(c, &n, EVT_CONNECTION);
  event_deliver(l->obj.loop, &n, 1, 0);
}

/* Appends the failure to the listener's errors and hands it to onError:
 * the listener itself goes on. */
void listener_report(evtcp_listener *l, const evtcp_failure *f) {
  lua_State *L = l->obj.loop->L;
  evtcp_notice n;
  object_push(L, &l->obj);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
  error_push(L, f);
  object_append_error(L, -2, -1);
  notice_init(&n, EVT_ERROR);
  event_deliver(l->obj.loop, &n, 2, 0);
}

/* A client, ready to be offered: onConnection decides, or it is held for
 * accept(). sa is its address (the original client's behind a balancer). */
void listener_on_client(evtcp_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int socklen) {
  lua_State *L = l->obj.loop->L;
  evtcp_notice n;
  if (l->closed || (l->max_connections > 0 && l->connections >= l->max_connections)) {
    evutil_closesocket(fd); /* refused: never reaches onConnection */
    return;
  }
  object_push(L, &l->obj);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); evutil_closesocket(fd); return; }
  notice_init(&n, EVT_CONNECTION);
  n.peer = sa;
  if (sa->sa_family == AF_UNIX) n.path = l->unix_path; /* else a client behind a balancer */
  if (event_deliver(l->obj.loop, &n, 1, 1) != LUA_OK) { evutil_closesocket(fd); return; }
  if (!n.handled) {
    /* no onConnection: hold the client for accept(), stop accepting */
    lua_pop(L, 1);
    if (l->closed) { evutil_closesocket(fd); return; } /* terminated by __index */
    l->held_fd = fd;
    memset(&l->held_addr, 0, sizeof l->held_addr);
    memcpy(&l->held_addr, sa, (size_t)socklen < sizeof l->held_addr ? (size_t)socklen : sizeof l->held_addr);
    if (l->lev) evconnlistener_disable(l->lev);
    object_wake(&l->obj, WAKE_INPUT); /* accept() */
    return;
  }
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    evutil_closesocket(fd);
    return;
  }
  {
    evtcp_addr peer;
    memset(&peer, 0, sizeof peer);
    memcpy(&peer, sa, (size_t)socklen < sizeof peer ? (size_t)socklen : sizeof peer);
    listener_adopt(l, fd, &peer); /* pops the handler */
  }
}

static void listener_on_accept(struct evconnlistener *lev, evutil_socket_t fd,
                               struct sockaddr *sa, int socklen, void *arg) {
  evtcp_listener *l = (evtcp_listener *)arg;
  (void)lev;
  if (l->closed || (l->max_connections > 0 && l->connections >= l->max_connections)) {
    evutil_closesocket(fd); /* refused: never reaches onConnection */
    return;
  }
  if (l->proxy) listener_proxy_start(l, fd, sa, socklen);
  else listener_on_client(l, fd, sa, socklen);
}

static void listener_on_backoff_done(evutil_socket_t fd, short what, void *arg) {
  evtcp_listener *l = (evtcp_listener *)arg;
  (void)fd; (void)what;
  if (l->lev && l->held_fd < 0) evconnlistener_enable(l->lev);
}

static void listener_on_error(struct evconnlistener *lev, void *arg) {
  evtcp_listener *l = (evtcp_listener *)arg;
  evtcp_failure f;
  int err = EVUTIL_SOCKET_ERROR();
  failure_set(&f, KIND_ACCEPT, err, "libevent", evutil_socket_error_to_string(err));
  evconnlistener_disable(lev);
  if (l->backoff_ev == NULL && !l->closed)
    l->backoff_ev = evtimer_new(l->obj.loop->base, listener_on_backoff_done, l);
  if (l->backoff_ev && !l->closed) {
    struct timeval tv = {0, ACCEPT_BACKOFF_MS * 1000};
    evtimer_add(l->backoff_ev, &tv);
  }
  listener_report(l, &f);
}

/* ---- Lua API ---- */

/* listen's failure: nil, message, errCode, the error object (kind io, or
 * tls). errCode is an errno: EINVAL for TLS settings OpenSSL refused,
 * whose own reason is in the error object. */
static int listener_fail_with(lua_State *L, const evtcp_failure *f) {
  lua_pushnil(L);
  lua_pushstring(L, f->message);
  lua_pushinteger(L, strcmp(f->component, "openssl") == 0 ? EINVAL : f->code);
  error_push(L, f);
  return 4;
}

static int listener_fail(lua_State *L, int err) {
  evtcp_failure f;
  failure_from_errno(&f, err, "evtcp");
  f.kind = KIND_IO;
  return listener_fail_with(L, &f);
}

/* listen's failure with a message of its own. */
static int listener_fail_msg(lua_State *L, int err, const char *msg) {
  evtcp_failure f;
  failure_set(&f, KIND_IO, err, "evtcp", msg);
  return listener_fail_with(L, &f);
}

static int option_integer(lua_State *L, int h, const char *name, lua_Integer dflt,
                          lua_Integer min, lua_Integer max) {
  lua_Integer v = dflt;
  if (lua_getfield(L, h, name) != LUA_TNIL) {
    if (!lua_isinteger(L, -1) || (v = lua_tointeger(L, -1)) < min || v > max)
      luaL_argerror(L, 2, lua_pushfstring(L, "option '%s' must be an integer in %I..%I",
                                          name, min, max));
  }
  lua_pop(L, 1);
  return (int)v;
}

/* A boolean option of listen (absent: false); anything else raises. */
static int option_boolean(lua_State *L, int h, const char *name) {
  int v;
  if (lua_getfield(L, h, name) != LUA_TNIL && lua_type(L, -1) != LUA_TBOOLEAN)
    luaL_argerror(L, 2, lua_pushfstring(L, "option '%s' must be a boolean", name));
  v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Whether a listener of this loop that is still open has fd: adopting it
 * twice would make the second terminate() close whatever has that number
 * by then. Walks the loop's objects: only adoption pays for it. */
static int listener_fd_in_use(lua_State *L, evtcp_loop *loop, evutil_socket_t fd) {
  int found = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->weak_ref);
  lua_pushnil(L);
  while (!found && lua_next(L, -2) != 0) {
    evtcp_listener *other = (evtcp_listener *)object_test(L, -1, &listener_type);
    found = other != NULL && !other->closed && other->lev != NULL && evconnlistener_get_fd(other->lev) == fd;
    lua_pop(L, 1);
  }
  lua_pop(L, found ? 2 : 1); /* the key lua_next left, and the table */
  return found;
}

/* How listen() was asked to listen. */
typedef enum { LISTEN_TCP, LISTEN_UNIX, LISTEN_FD } listen_kind;

/* Checks listen's first argument (and the fd option); raises on misuse. */
static listen_kind listen_check_target(lua_State *L, lua_Integer *port, lua_Integer *fd) {
  int t = lua_type(L, 2); /* the listener is at 1 by now */
  if (t == LUA_TSTRING && sockaddr_is_unix(lua_tostring(L, 2))) {
    struct sockaddr_un sun;
    socklen_t len;
    const char *why;
    luaL_argcheck(L, !string_has_nul(L, 2), 1, "path must not contain a NUL byte");
    if (sockaddr_unix_parse(lua_tostring(L, 2), &sun, &len, &why) != 0) luaL_argerror(L, 1, why);
    return LISTEN_UNIX;
  }
  if (t == LUA_TNIL) {
    if (lua_getfield(L, 3, "fd") == LUA_TNIL)
      luaL_argerror(L, 1, "port expected: a number, \"unix:/path\", or nil with option 'fd'");
    if (!lua_isinteger(L, -1) || (*fd = lua_tointeger(L, -1)) < 0 || *fd > 1 << 30)
      luaL_argerror(L, 2, "option 'fd' must be a file descriptor (an integer >= 0)");
    lua_pop(L, 1);
    return LISTEN_FD;
  }
  if (t != LUA_TNUMBER)
    luaL_argerror(L, 1, lua_pushfstring(L, "number expected, got %s", luaL_typename(L, 2)));
  if (!lua_isinteger(L, 2)) /* the listener is at 1: luaL_checkinteger would name #2 */
    luaL_argerror(L, 1, "number has no integer representation");
  *port = lua_tointeger(L, 2);
  luaL_argcheck(L, *port >= 0 && *port <= 65535, 1, "port must be in 0..65535");
  return LISTEN_TCP;
}

/* What listen() was asked for, beyond the listener's own settings. */
typedef struct listen_request {
  listen_kind kind;
  lua_Integer port, fd;
  const char *address;         /* NULL: every address */
  socket_listen_options sock;
} listen_request;

/* Reads listen's options (the table at 3) into r and l; raises naming the
 * first bad one. Returns 0, or -1 with f for TLS settings OpenSSL refused. */
static int listen_read_options(lua_State *L, evtcp_listener *l, listen_request *r, evtcp_failure *f) {
  if (lua_getfield(L, 3, "address") != LUA_TNIL) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, 2, "option 'address' must be a string");
    if (r->kind != LISTEN_TCP) luaL_argerror(L, 2, "option 'address' applies to a TCP port only");
    if (string_has_nul(L, -1)) luaL_argerror(L, 2, "option 'address' must not contain a NUL byte");
    r->address = lua_tostring(L, -1); /* kept on the stack while it is used */
  }
  /* absent: as many as the system allows (the kernel caps the value at
   * net.core.somaxconn; libevent's own default for -1 is only 128) */
  r->sock.backlog = option_integer(L, 3, "backlog", 65535, 1, 65535);
  l->max_connections = option_integer(L, 3, "maxConnections", 0, 1, 1 << 30);
  r->sock.v6only = option_boolean(L, 3, "ipv6Only");
  r->sock.reuse_port = option_boolean(L, 3, "reusePort");
  /* TCP Fast Open: how many connections may wait with data from their SYN */
  r->sock.fast_open = option_integer(L, 3, "fastOpen", 0, 1, 65535);
  if (r->sock.fast_open && r->kind != LISTEN_TCP) luaL_argerror(L, 2, "option 'fastOpen' applies to a TCP port only");
  /* the connect timeout of connect/dial: read by the connection options
   * and ignored on an accepted connection, so it did nothing here */
  if (lua_getfield(L, 3, "timeout") != LUA_TNIL)
    luaL_argerror(L, 2, "option 'timeout' is a connect timeout, for connect and dial; a listener has none "
                        "(readTimeout and writeTimeout apply to accepted connections)");
  lua_pop(L, 1);
  l->proxy = option_boolean(L, 3, "proxyProtocol");
  if (lua_getfield(L, 3, "tls") != LUA_TNIL && tls_server_setup(L, -1, 2, &l->tls, f) != 0) return -1;
  lua_pop(L, 1);
  /* the defaults of accepted connections (noDelay, readTimeout, ...),
   * parsed once: a mistake names listen, not a later accept. framing is
   * read last: nothing raises after it */
  conn_options_read(L, 3, 2, &l->defaults);
  /* the PROXY header must come within readTimeout too (a deadline for
   * the whole header); 0 is none, as for the connection */
  l->proxy_timeout = (l->defaults.given & OPT_READ_TIMEOUT) ? l->defaults.read_timeout : PROXY_HEADER_TIMEOUT;
  return 0;
}

/* The listening socket r asks for, or -1 with *err (and *why, a message
 * of its own, or NULL). */
static evutil_socket_t listen_socket(lua_State *L, evtcp_listener *l, const listen_request *r, int *err,
                                     const char **why) {
  evutil_socket_t fd;
  *why = NULL;
  if (r->kind == LISTEN_UNIX) {
    struct stat file;
    if ((l->unix_path = strdup(lua_tostring(L, 2) + 5)) == NULL) luaL_error(L, "evtcp: out of memory");
    fd = socket_listen_unix(lua_tostring(L, 2), r->sock.backlog, &file, err);
    if (fd >= 0 && file.st_ino != 0) { /* from here on, listener_release removes it */
      l->file_dev = file.st_dev;
      l->file_ino = file.st_ino;
      l->owns_file = 1;
    }
  } else if (r->kind == LISTEN_FD) {
    if (listener_fd_in_use(L, l->obj.loop, (evutil_socket_t)r->fd)) {
      *err = EBUSY;
      *why = lua_pushfstring(L, "fd %d is already a listener's", (int)r->fd);
      return -1;
    }
    fd = socket_adopt_listening((evutil_socket_t)r->fd, &l->unix_path, err);
    if (fd < 0 && *err == EINVAL) *why = lua_pushfstring(L, "fd %d is not a listening stream socket", (int)r->fd);
  } else {
    struct sockaddr_storage ss;
    int sslen;
    const char *address = r->address ? r->address : "0.0.0.0";
    if (sockaddr_parse(address, (int)r->port, &ss, &sslen) != 0) {
      *err = EADDRNOTAVAIL;
      *why = lua_pushfstring(L, "not an IP address of this machine: %s", address);
      return -1;
    }
    fd = socket_listen_ip((struct sockaddr *)&ss, sslen, &r->sock, err);
  }
  return fd;
}

/* evtcp.listen(port [, options]) -> listener | nil, message, errCode
 * port: a number, "unix:/path" / "unix:@name", or nil with options.fd. */
int listener_listen(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  listen_request r;
  evtcp_failure f;
  const char *why;
  int has_cb, err = 0;
  unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
  evtcp_listener *l;
  evutil_socket_t fd;
  if (lua_isnoneornil(L, 2)) { lua_settop(L, 1); lua_newtable(L); }
  luaL_argexpected(L, lua_istable(L, 2) || lua_isuserdata(L, 2), 2, "table");
  lua_settop(L, 2);
  /* the userdata first, closed: whatever raises below (an option's
   * __index, memory), its __gc frees what was made so far */
  l = (evtcp_listener *)object_new(L, loop, sizeof *l, UV_LISTENER_COUNT, listener_run_pending, &listener_type);
  l->held_fd = -1;
  l->closed = 1; /* until the socket exists */
  lua_insert(L, 1); /* listener port options */
  memset(&r, 0, sizeof r);
  r.fd = -1;
  r.kind = listen_check_target(L, &r.port, &r.fd);
  if (listen_read_options(L, l, &r, &f) != 0) return listener_fail_with(L, &f);
  has_cb = lua_getfield(L, 3, "onConnection") != LUA_TNIL;
  lua_pop(L, 1);
  if ((fd = listen_socket(L, l, &r, &err, &why)) < 0)
    return why ? listener_fail_msg(L, err, why) : listener_fail(L, err);
  /* backlog 0: the socket listens already */
  l->lev = evconnlistener_new(loop->base, listener_on_accept, l, flags, 0, fd);
  if (l->lev == NULL) {
    if (r.kind != LISTEN_FD) evutil_closesocket(fd);
    return listener_fail(L, ENOMEM);
  }
  evconnlistener_set_error_cb(l->lev, listener_on_error);
  {
    socklen_t len = sizeof l->bound;
    getsockname(evconnlistener_get_fd(l->lev), &l->bound.sa, &len);
  }
  l->closed = 0;
  lua_pushvalue(L, 3);
  lua_setiuservalue(L, 1, UV_HANDLER);
  lua_settop(L, 1);
  if (has_cb) object_anchor(&l->obj, ANCHOR_CALLBACKS);
  return 1;
}

/* listener:terminate(): frees the port; established connections go on. */
static int listener_terminate(lua_State *L) {
  evtcp_listener *l = check_listener(L, 1);
  if (l->closed) return 0;
  l->closed = 1;
  listener_release(l);
  l->terminate_due = 1;
  object_defer(&l->obj);
  object_unanchor(&l->obj, ANCHOR_CALLBACKS);
  return 0;
}

/* listener:_takeHeld() -> fd-less: adopts the held client with handler
 * (arg 2) and returns the connection, or nil if none is held. For accept(). */
static int listener_take_held(lua_State *L) {
  evtcp_listener *l = check_listener(L, 1);
  evutil_socket_t fd = l->held_fd;
  conn_accepted a;
  if (fd < 0) return 0;
  if (lua_isnoneornil(L, 2)) { lua_settop(L, 1); lua_newtable(L); }
  lua_settop(L, 2);
  l->held_fd = -1;
  listener_describe(l, fd, &l->held_addr, &a);
  listener_push_adoption(L, l, 2, &a);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
    if (a.fd >= 0) evutil_closesocket(a.fd);
    return lua_error(L);
  }
  l->connections++;
  if (l->lev && !l->closed) evconnlistener_enable(l->lev);
  if (l->proxy_waits != NULL) { /* one may be ready: offer it from the loop */
    l->promote_due = 1;
    object_defer(&l->obj);
  }
  return 1;
}

static int listener__index(lua_State *L) {
  evtcp_listener *l = check_listener(L, 1);
  const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
  if (key == NULL) return 0;
  if (strcmp(key, "port") == 0) {
    if (l->unix_path != NULL) return 0;
    lua_pushinteger(L, sockaddr_port(&l->bound.sa));
  } else if (strcmp(key, "address") == 0) {
    if (l->unix_path != NULL) lua_pushstring(L, l->unix_path);
    else sockaddr_push_ip(L, &l->bound.sa);
  }
  else if (strcmp(key, "closed") == 0) lua_pushboolean(L, l->closed);
  else if (strcmp(key, "connections") == 0) lua_pushinteger(L, l->connections);
  else if (strcmp(key, "errors") == 0) object_uv_table(L, 1, UV_ERRORS);
  else if (strcmp(key, "handler") == 0) lua_getiuservalue(L, 1, UV_HANDLER);
  else return 0;
  return 1;
}

static int listener__newindex(lua_State *L) {
  check_listener(L, 1);
  return luaL_error(L, "evtcp: TCPListener.%s is read-only", luaL_tolstring(L, 2, NULL));
}

static int listener__tostring(lua_State *L) {
  evtcp_listener *l = check_listener(L, 1);
  if (l->unix_path != NULL)
    lua_pushfstring(L, "TCPListener (%s, unix:%s): %p", l->closed ? "closed" : "listening",
                    l->unix_path, (void *)l);
  else
    lua_pushfstring(L, "TCPListener (%s, port %d): %p", l->closed ? "closed" : "listening",
                    sockaddr_port(&l->bound.sa), (void *)l);
  return 1;
}

/* __gc's own part (the object layer's skeleton). */
static void listener_release_all(lua_State *L, evtcp_object *obj) {
  evtcp_listener *l = (evtcp_listener *)obj;
  (void)L;
  listener_release(l);
  tls_server_free(l->tls);
  l->tls = NULL;
  conn_options_free(&l->defaults);
  free(l->unix_path);
  l->unix_path = NULL;
  l->closed = 1;
}

static const luaL_Reg listener_methods[] = {
  {"terminate", listener_terminate},
  {"close", listener_terminate},
  {"_takeHeld", listener_take_held},
  {NULL, NULL}
};

void listener_open(lua_State *L) {
  static const luaL_Reg meta[] = {
    {"__close", listener_terminate},
    {"__tostring", listener__tostring},
    {"__newindex", listener__newindex},
    {NULL, NULL}
  };
  object_type_open(L, &listener_type, listener_methods, meta); /* mt methods */
  lua_pushvalue(L, -1);
  lua_pushcclosure(L, listener__index, 1);
  lua_setfield(L, -3, "__index");
  lua_setfield(L, -3, "listenerMethods");
  lua_pop(L, 1);
}
