/*
 * conn.c - TCPConnection: the state machine, the data path, the methods,
 * closing and collection.
 *
 * The state machine and the data path are described in conn.h; connecting
 * is in conn_connect.c, the blocking style's reads in conn_receive.c,
 * properties, options and the metatable in conn_props.c.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <netinet/tcp.h>
#include "conn.h"



static const char conn_mt_key = 'C';

/* The connection at index, or NULL. */
evtcp_conn *test_conn(lua_State *L, int index) {
  return (evtcp_conn *)object_test(L, index, &conn_mt_key);
}

/* The type check of every method. */
evtcp_conn *check_conn(lua_State *L, int index) {
  evtcp_conn *c = test_conn(L, index);
  if (c == NULL) object_self_error(L, index, "TCPConnection", &conn_methods_key);
  return c;
}

size_t conn_buffered(const evtcp_conn *c) {
  size_t n = c->early ? evbuffer_get_length(c->early) : 0;
  if (c->corked) n += evbuffer_get_length(c->obj.loop->cork);
  if (c->bev) n += evbuffer_get_length(bufferevent_get_output(c->bev));
  return n;
}

int conn_is_live(const evtcp_conn *c) {
  return c->state < CONN_CLOSING;
}

/* ---- leaving: every way out goes through conn_end ---- */

/* Stops all I/O on the way to CLOSING and queues the final callbacks. The
 * socket itself is freed in conn_finish, outside libevent's callbacks for
 * it. With rst, the close sends a reset and drops the queued output. */
void conn_end(evtcp_conn *c, const evtcp_failure *failure, int rst) {
  if (!conn_is_live(c)) return;
  if (failure != NULL && c->failure == NULL) {
    c->failure = (evtcp_failure *)malloc(sizeof *c->failure);
    if (c->failure) *c->failure = *failure;
  }
  if (c->client != NULL) { /* connecting stops here */
    if (c->client->lookup) {
      lookup_cancel(c->client->lookup);
      c->client->lookup = NULL;
    }
    if (c->client->connect_timer) event_del(c->client->connect_timer);
  }
  conn_stop_reading(c);
  if (c->bev) bufferevent_disable(c->bev, EV_READ | EV_WRITE);
  if (rst) c->aborted = 1;
  if (rst && c->fd >= 0) {
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  c->state = CONN_CLOSING;
  c->finish_due = 1;
  object_defer(&c->obj);
}

void conn_fail(evtcp_conn *c, int err, const char *component) {
  evtcp_failure f;
  failure_from_errno(&f, err, component);
  conn_end(c, &f, 0);
}

/* Records why an address failed (the last one's reason is reported).
 * Returns -1. */
int conn_note_failure(evtcp_conn *c, int err, const char *component) {
  if (c->failure == NULL) c->failure = (evtcp_failure *)malloc(sizeof *c->failure);
  if (c->failure) failure_from_errno(c->failure, err, component);
  return -1;
}

/* Frees a bufferevent, then its SSL and its socket. The bufferevents are
 * made without BEV_OPT_CLOSE_ON_FREE: libevent would close the socket only
 * when the loop next runs, and a connection collected by the GC must close
 * it right there. Never called inside the bufferevent's own callbacks
 * (see conn_retire_bev), so bufferevent_free has taken its events out of
 * the backend before the descriptor is closed. */
void conn_free_bev(struct bufferevent **bev, SSL **ssl, evutil_socket_t *fd) {
  if (*bev) { bufferevent_free(*bev); *bev = NULL; }
  if (*ssl) { SSL_free(*ssl); *ssl = NULL; }
  if (*fd >= 0) { evutil_closesocket(*fd); *fd = -1; }
}

/* Sets aside the bufferevent of an address that failed: we are inside its
 * callback, where freeing it would close a socket libevent still watches.
 * The loop frees it next (conn_run_pending). */
void conn_retire_bev(evtcp_conn *c) {
  conn_free_bev(&c->client->retired_bev, &c->client->retired_ssl, &c->client->retired_fd);
  bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
  bufferevent_disable(c->bev, EV_READ | EV_WRITE);
  c->client->retired_bev = c->bev;
  c->client->retired_ssl = c->ssl;
  c->client->retired_fd = c->fd;
  c->bev = NULL;
  c->ssl = NULL;
  c->fd = -1;
  object_defer(&c->obj);
}

/* Frees what connecting used (the struct itself goes at __gc). No Lua. */
static void conn_release_client(evtcp_conn *c) {
  conn_client *k = c->client;
  if (k == NULL) return;
  if (k->lookup) { lookup_cancel(k->lookup); k->lookup = NULL; }
  if (k->addrs) { evutil_freeaddrinfo(k->addrs); k->addrs = k->next_addr = NULL; }
  if (k->connect_timer) { event_free(k->connect_timer); k->connect_timer = NULL; }
  if (k->tls_ctx) { SSL_CTX_free(k->tls_ctx); k->tls_ctx = NULL; }
  free(k->tls_host);
  k->tls_host = NULL;
  free(k->tls_session_key);
  k->tls_session_key = NULL;
}

/* A close() that came before the peer finished sending: the socket
 * lingers (linger.c), since closing it with bytes unread, or with bytes
 * still to come, would send a reset that destroys what the peer has not
 * read of ours. */
static int conn_lingers(const evtcp_conn *c) {
  return c->fd >= 0 && c->state == CONN_CLOSING && c->close_wanted && c->was_open &&
         !c->aborted && c->failure == NULL && !c->peer_eof;
}

/* Frees every libevent object and the socket. No Lua. */
static void conn_release(evtcp_conn *c) {
  evutil_socket_t lingering = -1;
  c->bytes_sent -= conn_buffered(c); /* dropped (reset, failure): never written */
  conn_release_client(c);
  c->reading = 0;
  conn_transport_of(c)->release(c); /* TLS: close_notify */
  if (conn_lingers(c)) { lingering = c->fd; c->fd = -1; }
  conn_free_bev(&c->bev, &c->ssl, &c->fd);
  if (lingering >= 0) linger_close(c->obj.loop, lingering);
  if (c->client) conn_free_bev(&c->client->retired_bev, &c->client->retired_ssl, &c->client->retired_fd);
  if (c->early) { evbuffer_free(c->early); c->early = NULL; }
}

/* Pushes the connection's userdata; 0 (nothing pushed) if it is gone. */
int conn_push(evtcp_conn *c) {
  lua_State *L = c->obj.loop->L;
  object_push(L, &c->obj);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return 0; }
  return 1;
}

/* A notice of type about c: its peer, or its Unix socket's path. */
static void conn_notice(const evtcp_conn *c, evtcp_notice *n, evtcp_event_type type) {
  notice_init(n, type);
  n->peer = &c->peer.sa;
  n->path = c->unix_path;
}

/* Delivers a plain notice (no payload) to the handler. */
void conn_deliver(evtcp_conn *c, evtcp_event_type type) {
  evtcp_notice n;
  conn_notice(c, &n, type);
  if (conn_push(c)) event_deliver(c->obj.loop, &n, 1, 0);
}

/* Delivers a data notice built by the caller: LUA_OK, or the status of a
 * callback that raised (LUA_ERRRUN too when the connection is gone); *ran
 * tells whether an onData ran (without one, the caller keeps the bytes). */
static int conn_deliver_notice_data(evtcp_conn *c, evtcp_notice *n, int *ran) {
  int status;
  *ran = 0;
  if (!conn_push(c)) return LUA_ERRRUN;
  status = event_deliver(c->obj.loop, n, 1, 0);
  *ran = n->handled;
  return status;
}

/* Hands len bytes at data to onData; as conn_deliver_notice_data. */
int conn_deliver_bytes(evtcp_conn *c, const char *data, size_t len, int *ran) {
  evtcp_notice n;
  conn_notice(c, &n, EVT_DATA);
  n.data = data;
  n.len = len;
  return conn_deliver_notice_data(c, &n, ran);
}

/* Input kept while the handler had no onData (and nobody reads it with
 * receive), or cut into frames (conn_frame.c), goes to onData: at the next
 * arrival, when conn.handler or conn.framing is assigned, on resume(), and
 * before the final callbacks. Once no more input can come, the rest of an
 * unfinished frame comes as a last onData: nothing is lost. Returns 1 if
 * nothing is left kept. */
static int conn_deliver_frames(evtcp_conn *c);

int conn_deliver_kept(evtcp_conn *c) {
  int all = conn_deliver_frames(c);
  conn_uncork(c);
  return all;
}

/* A frame being handed to onData: the connection, and how much of its
 * input the frame takes (its bytes and its line end or delimiter). */
typedef struct frame_taken {
  evtcp_conn *c;
  size_t consumed;
} frame_taken;

/* The frame is in the event: it leaves the input before onData runs, so
 * a handler that hands the connection to the blocking style and reads
 * (conn.handler = {} then receive) goes on from the next byte, and a
 * raising one has consumed it all the same. */
static void conn_frame_copied(void *arg) {
  frame_taken *t = (frame_taken *)arg;
  evbuffer_drain(t->c->input, t->consumed);
  conn_input_drained(t->c); /* offsets into input (line_scanned) start again */
}

/* Hands the first n bytes of input to onData, n + skip consumed; without
 * an onData they stay. 1 when onData ran and returned. */
static int conn_deliver_frame(evtcp_conn *c, size_t n, size_t skip) {
  frame_taken taken;
  evtcp_notice note;
  int ran;
  taken.c = c;
  taken.consumed = n + skip;
  conn_notice(c, &note, EVT_DATA);
  note.data = (const char *)evbuffer_pullup(c->input, (ev_ssize_t)n);
  note.len = n;
  note.copied = conn_frame_copied;
  note.copied_arg = &taken;
  return conn_deliver_notice_data(c, &note, &ran) == LUA_OK && ran;
}

static int conn_deliver_frames(evtcp_conn *c) {
  int delivered = 0;
  while (c->input && !c->receiving && !c->paused && !loop_has_error(c->obj.loop)) {
    size_t have = evbuffer_get_length(c->input), n, skip;
    int frame;
    if (have == 0) break;
    frame = conn_next_frame(c, &n, &skip);
    if (frame == FRAME_TOO_LONG && conn_is_live(c)) { conn_frame_too_long(c); return 1; }
    if (frame != FRAME_WHOLE) {
      if (c->state == CONN_OPEN && !c->peer_eof) break; /* wait for the rest */
      n = have; /* the end came first */
      skip = 0;
    }
    /* the replies to the second and later frames of one arrival (a
     * pipelining client) are written together when they are delivered */
    if (delivered++ == 1 && c->framing) conn_cork(c);
    if (!conn_deliver_frame(c, n, skip)) return 0;
  }
  return c->input == NULL || evbuffer_get_length(c->input) == 0;
}

/* CLOSING -> TERMINATED: frees the socket, then onShutdown or onError, then
 * onTerminate. Runs from the loop's deferred queue. */
static void conn_finish(evtcp_conn *c) {
  lua_State *L = c->obj.loop->L;
  conn_release(c);
  if (!c->receiving) {
    conn_deliver_kept(c); /* the data came before the end */
    if (loop_has_error(c->obj.loop)) { object_defer(&c->obj); return; } /* the rest next run */
  }
  c->finish_due = 0;
  c->closed = 1;
  if (c->input && evbuffer_get_length(c->input) == 0) { /* nothing to read any more */
    evbuffer_free(c->input);
    c->input = NULL;
  }
  if (c->failure != NULL) {
    if (conn_push(c)) {
      evtcp_notice n;
      conn_notice(c, &n, EVT_ERROR);
      error_push(L, c->failure);
      error_append(L, -2, -1);
      event_deliver(c->obj.loop, &n, 2, 0);
    }
  } else {
    conn_deliver(c, EVT_CLOSE);
  }
  conn_deliver(c, EVT_TERMINATE);
  c->state = CONN_TERMINATED;
  object_wake(&c->obj, WAKE_ALL);
  if (c->listener) {
    listener_connection_gone(c->listener);
    c->listener = NULL;
  }
  object_unanchor(&c->obj, ANCHOR_CALLBACKS | ANCHOR_OUTPUT | ANCHOR_CONNECTING);
}


static void conn_run_pending(evtcp_object *obj) {
  evtcp_conn *c = (evtcp_conn *)obj;
  if (c->client) conn_free_bev(&c->client->retired_bev, &c->client->retired_ssl, &c->client->retired_fd);
  if (c->input_due) {
    c->input_due = 0;
    if (c->state == CONN_OPEN) conn_deliver_kept(c);
  }
  if (c->end_due && !c->paused && c->state == CONN_OPEN) conn_finish_input(c);
  if (c->backlog_due) {
    c->backlog_due = 0;
    conn_transport_of(c)->deliver_backlog(c);
  }
  if (c->drain_due) {
    c->drain_due = 0;
    if (conn_is_live(c)) conn_deliver(c, EVT_DRAIN);
  }
  if (c->finish_due && !loop_has_error(c->obj.loop)) conn_finish(c);
  else if (c->finish_due) object_defer(&c->obj);
}

/* ---- methods ---- */

/* Does the handler of the connection at index 1 have `name`? Runs inside
 * a method, so a raising __index propagates to the caller. */
int conn_handler_has(lua_State *L, const char *name) {
  int top = lua_gettop(L), has = 0;
  if (lua_getiuservalue(L, 1, UV_HANDLER) != LUA_TNIL)
    has = lua_getfield(L, -1, name) != LUA_TNIL;
  lua_settop(L, top);
  return has;
}

/* conn:shutdown(): half-close once what is queued is flushed. */
static int conn_shutdown(lua_State *L) {
  evtcp_conn *c = check_conn(L, 1);
  if (conn_is_live(c) && !c->write_shut_wanted) {
    c->write_shut_wanted = 1;
    if (c->state == CONN_OPEN && conn_buffered(c) == 0) conn_flushed(c, 0);
  }
  return 0;
}

/* conn:close(): flush, then close both ways; aborts a connect in progress. */
static int conn_close(lua_State *L) {
  evtcp_conn *c = check_conn(L, 1);
  if (!conn_is_live(c) || c->close_wanted) return 0;
  if (c->state != CONN_OPEN) {
    /* nothing queued: abort the connect. Queued data is never dropped:
     * connecting goes on, and the data is flushed before the close */
    if (conn_buffered(c) == 0) conn_end(c, NULL, 0);
    else c->close_wanted = 1;
    return 0;
  }
  c->close_wanted = 1;
  conn_stop_reading(c);
  if (conn_buffered(c) == 0) conn_flushed(c, 0);
  return 0;
}

/* conn:reset(): abortive close, queued output dropped, RST sent. */
static int conn_reset(lua_State *L) {
  evtcp_conn *c = check_conn(L, 1);
  conn_end(c, NULL, 1);
  return 0;
}

static int conn_pause(lua_State *L) {
  evtcp_conn *c = check_conn(L, 1);
  c->paused = 1;
  conn_stop_reading(c);
  return 0;
}

static int conn_resume(lua_State *L) {
  evtcp_conn *c = check_conn(L, 1);
  c->paused = 0;
  conn_start_reading(c);
  conn_kept_input_due(c);
  if (c->end_due) object_defer(&c->obj); /* the FIN came while paused: onEnd */
  return 0;
}

static double check_seconds(lua_State *L, int arg, const char *what) {
  double s;
  if (lua_isnoneornil(L, arg)) return -1;
  if (!lua_isnumber(L, arg)) luaL_typeerror(L, arg, "number");
  s = lua_tonumber(L, arg);
  if (!seconds_ok(s)) luaL_argerror(L, arg, lua_pushfstring(L, "%s must be >= 0", what));
  return s;
}

/* conn:setTimeouts(read, write): nil clears one. */
static int conn_set_timeouts(lua_State *L) {
  evtcp_conn *c = check_conn(L, 1);
  double r = check_seconds(L, 2, "read timeout");
  double w = check_seconds(L, 3, "write timeout");
  c->read_timeout = r;
  c->write_timeout = w;
  conn_update_read_timeout(c);
  conn_bev_timeouts(c);
  return 0;
}

/* Schedules the delivery of kept input to onData (conn_deliver_kept). */
void conn_kept_input_due(evtcp_conn *c) {
  if (c->state != CONN_OPEN || c->receiving || c->input == NULL ||
      evbuffer_get_length(c->input) == 0 || c->obj.loop == NULL)
    return;
  c->input_due = 1;
  object_defer(&c->obj);
}

/* ---- construction and collection ---- */

/* Pushes a new connection userdata in its terminated state (safe to
 * collect whatever fails next). */
evtcp_conn *conn_alloc(lua_State *L, evtcp_loop *loop) {
  evtcp_conn *c = (evtcp_conn *)object_new(L, loop, sizeof *c, UV_CONN_COUNT, conn_run_pending);
  c->state = CONN_TERMINATED;
  c->fd = -1;
  c->read_timeout = c->write_timeout = -1;
  c->high_water = 1024 * 1024;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &conn_mt_key);
  lua_setmetatable(L, -2);
  object_register(L, &c->obj, -1);
  return c;
}

/* Stores the handler at handler_index in the new connection on top, reads
 * its options and anchors the connection if the handler has callbacks. */
void conn_adopt_handler(lua_State *L, evtcp_conn *c, int handler_index, int arg, int client) {
  conn_read_options(L, c, handler_index, arg, client);
  lua_pushvalue(L, handler_index);
  lua_setiuservalue(L, -2, UV_HANDLER);
  if (conn_handler_has_callbacks(L, handler_index)) object_anchor(&c->obj, ANCHOR_CALLBACKS);
}

/* Runs under loop_pcall from the listener: adopts an accepted socket.
 * Stack: listener, handler, fd (integer), peer address (light userdata,
 * an evtcp_addr). Returns the connection. If it
 * raises before the bufferevent owns fd, the caller closes fd. */
int conn_adopt_accepted(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  evutil_socket_t fd = (evutil_socket_t)lua_tointeger(L, 3);
  evtcp_conn *c;
  SSL_CTX *ctx;
  if (!lua_istable(L, 2) && !lua_isuserdata(L, 2))
    return luaL_error(L, "evtcp: onConnection must return a handler table, or nil/false to refuse "
                         "the client (it returned a %s)", luaL_typename(L, 2));
  c = conn_alloc(L, loop);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, UV_OWNER);
  if (lua_getiuservalue(L, 1, UV_HANDLER) != LUA_TNIL) /* the listener's defaults */
    conn_read_options(L, c, -1, 0, 0);
  lua_pop(L, 1);
  conn_adopt_handler(L, c, 2, 0, 0);
  c->fd = fd; /* the connection owns fd now: __gc closes it */
  lua_pushnil(L);
  lua_replace(L, 3);
  memcpy(&c->peer, lua_touserdata(L, 4), sizeof c->peer);
  listener_local_address((struct evtcp_listener *)lua_touserdata(L, 1), &c->local);
  if (c->peer.sa.sa_family == AF_UNIX && /* not a client a PROXY header named */
      listener_unix_path((struct evtcp_listener *)lua_touserdata(L, 1)) != NULL &&
      (c->unix_path = strdup(listener_unix_path((struct evtcp_listener *)lua_touserdata(L, 1)))) == NULL)
    return luaL_error(L, "evtcp: out of memory");
  /* plain: OPEN now; TLS: OPEN, and onConnection, once the handshake is done */
  ctx = listener_tls_context((struct evtcp_listener *)lua_touserdata(L, 1));
  c->tls = ctx != NULL;
  if (conn_transport_of(c)->accept(c, ctx) != 0) return luaL_error(L, "evtcp: out of memory");
  c->listener = (struct evtcp_listener *)lua_touserdata(L, 1);
  return 1;
}

/* __gc: frees everything, runs no Lua. */
static int conn__gc(lua_State *L) {
  evtcp_conn *c = (evtcp_conn *)lua_touserdata(L, 1);
  if (c->obj.loop == NULL) return 0;
  conn_release(c);
  free(c->failure);
  c->failure = NULL;
  if (c->input) { evbuffer_free(c->input); c->input = NULL; }
  free(c->unix_path);
  c->unix_path = NULL;
  free(c->client);
  c->client = NULL;
  free(c->framing);
  c->framing = NULL;
  if (c->listener) { listener_connection_gone(c->listener); c->listener = NULL; }
  object_unregister(L, &c->obj);
  c->state = CONN_TERMINATED;
  c->obj.loop = NULL;
  return 0;
}

static const luaL_Reg conn_methods[] = {
  {"send", conn_send},
  {"shutdown", conn_shutdown},
  {"close", conn_close},
  {"reset", conn_reset},
  {"pause", conn_pause},
  {"resume", conn_resume},
  {"setTimeouts", conn_set_timeouts},
  {"_read", conn_read},
  {"receive", conn_receive},
  {"receiveUntil", conn_receive_until},
  {"_take", conn_take},
  {"_state", conn_state_name},
  {"_flags", conn_flags},
  {"_addWaiter", object_add_waiter_lua},
  {"_removeWaiter", object_remove_waiter_lua},
  {NULL, NULL}
};

/* The metatable is made in one place, conn_props.c: these are the
 * functions of this file it takes. */
void conn_open(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", conn__gc}, {"__close", conn_close}, {NULL, NULL}};
  conn_props_open(L, conn_methods, meta, &conn_mt_key);
}
