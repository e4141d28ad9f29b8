/*
 * conn.c - TCPConnection: the lifetime (conn.h has the diagram), the due
 * notices delivered from the loop, the methods that move the state,
 * closing, adoption and collection. The other conn_*.c files are listed in
 * conn.h.
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



static void conn_release_all(lua_State *L, evtcp_object *obj);
static void conn_leave_listener(evtcp_conn *c);

object_type conn_type = {"TCPConnection", "TCPConnection", conn_release_all, 1, 0};

/* The type check of every method. */
/* A connection argument the program may still use: one setKeepAlive put
 * in the pool raises. */
evtcp_conn *conn_check(lua_State *L, int index) {
  evtcp_conn *c = (evtcp_conn *)object_check(L, index, &conn_type);
  if (c->pooled) luaL_error(L, "evtcp: the connection was put in the pool (setKeepAlive) and is not yours any more");
  return c;
}

/* Any connection, pooled too: properties, tostring. */
evtcp_conn *conn_check_any(lua_State *L, int index) {
  return (evtcp_conn *)object_check(L, index, &conn_type);
}

/* Queues due notices (DUE_*) for the loop to deliver: conn_run_pending. */
void conn_due(evtcp_conn *c, unsigned due) {
  c->due |= (unsigned char)due;
  object_defer(&c->obj);
}

/* CONNECTING while a transport's handshake runs on an accepted socket:
 * work in flight, which keeps run() going. */
void conn_handshaking(evtcp_conn *c) {
  c->state = CONN_CONNECTING;
  object_anchor(&c->obj, ANCHOR_CONNECTING);
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
    conn_race_free(c->client->race); /* attempts in flight: closed */
    c->client->race = NULL;
    pool_entry_free(c->client->parked); /* taken from the pool, never resumed */
    c->client->parked = NULL;
  }
  conn_stop_reading(c);
  if (c->bev) bufferevent_disable(c->bev, EV_READ | EV_WRITE);
  if (rst) c->aborted = 1;
  if (rst && c->fd >= 0) {
    struct linger lg = {1, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  }
  c->state = CONN_CLOSING;
  conn_due(c, DUE_FINISH);
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

/* Frees a bufferevent of the connection's transport, then its socket. The
 * bufferevents are made without BEV_OPT_CLOSE_ON_FREE: libevent would close
 * the socket only when the loop next runs, and a connection collected by
 * the GC must close it right there. Never called inside the bufferevent's
 * own callbacks (see conn_retire_bev), so bufferevent_free has taken its
 * events out of the backend before the descriptor is closed. */
void conn_free_bev(evtcp_conn *c, struct bufferevent **bev, evutil_socket_t *fd) {
  if (*bev) { c->transport->free_bev(*bev); *bev = NULL; }
  if (*fd >= 0) { evutil_closesocket(*fd); *fd = -1; }
}

/* Sets aside the bufferevent of an address that failed: we are inside its
 * callback, where freeing it would close a socket libevent still watches.
 * The loop frees it next (conn_run_pending). */
void conn_retire_bev(evtcp_conn *c) {
  conn_free_bev(c, &c->client->retired_bev, &c->client->retired_fd);
  bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
  bufferevent_disable(c->bev, EV_READ | EV_WRITE);
  c->client->retired_bev = c->bev;
  c->client->retired_fd = c->fd;
  c->bev = NULL;
  c->fd = -1;
  object_defer(&c->obj);
}

/* Frees what connecting used (the struct itself goes at __gc). No Lua. */
static void conn_release_client(evtcp_conn *c) {
  conn_client *k = c->client;
  if (k == NULL) return;
  if (k->lookup) { lookup_cancel(k->lookup); k->lookup = NULL; }
  conn_race_free(k->race); /* before the addresses it points into */
  k->race = NULL;
  pool_entry_free(k->parked);
  k->parked = NULL;
  if (k->addrs) { evutil_freeaddrinfo(k->addrs); k->addrs = NULL; }
  if (k->connect_timer) { event_free(k->connect_timer); k->connect_timer = NULL; }
  conn_free_bev(c, &k->retired_bev, &k->retired_fd);
}

/* A close() that came before the peer finished sending: the socket
 * lingers (linger.c), since closing it with bytes unread, or with bytes
 * still to come, would send a reset that destroys what the peer has not
 * read of ours. */
static int conn_lingers(const evtcp_conn *c) {
  return c->fd >= 0 && c->state == CONN_CLOSING && c->output == OUTPUT_CLOSING && c->was_open &&
         !c->aborted && c->failure == NULL && !conn_peer_ended(c);
}

/* Frees every libevent object and the socket. No Lua. */
static void conn_release(evtcp_conn *c) {
  evutil_socket_t lingering = -1;
  c->bytes_sent -= conn_buffered(c); /* dropped (reset, failure): never written */
  conn_release_client(c);
  c->reading = 0;
  c->transport->release(c); /* TLS: close_notify */
  if (conn_lingers(c)) { lingering = c->fd; c->fd = -1; }
  conn_free_bev(c, &c->bev, &c->fd);
  if (lingering >= 0) linger_close(c->obj.loop, lingering);
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
void conn_notice(const evtcp_conn *c, evtcp_notice *n, evtcp_event_type type) {
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

/* CLOSING -> TERMINATED: frees the socket, then onShutdown or onError, then
 * onTerminate. Runs from the loop's deferred queue. */
static void conn_finish(evtcp_conn *c) {
  lua_State *L = c->obj.loop->L;
  conn_release(c);
  if (!c->receiving) {
    conn_deliver_kept(c); /* the data came before the end */
    if (loop_has_error(c->obj.loop)) { object_defer(&c->obj); return; } /* the rest next run */
  }
  c->due &= (unsigned char)~DUE_FINISH; /* `closed` from here on */
  if (c->input && evbuffer_get_length(c->input) == 0) { /* nothing to read any more */
    evbuffer_free(c->input);
    c->input = NULL;
  }
  if (c->failure != NULL) {
    if (conn_push(c)) {
      evtcp_notice n;
      conn_notice(c, &n, EVT_ERROR);
      error_push(L, c->failure);
      object_append_error(L, -2, -1);
      event_deliver(c->obj.loop, &n, 2, 0);
    }
  } else {
    conn_deliver(c, EVT_CLOSE);
  }
  conn_deliver(c, EVT_TERMINATE);
  c->state = CONN_TERMINATED;
  object_wake(&c->obj, WAKE_ALL);
  conn_leave_listener(c);
  object_unanchor(&c->obj, ANCHOR_CALLBACKS | ANCHOR_OUTPUT | ANCHOR_CONNECTING);
}


/* Takes a due notice: 1 if it was due. */
static int conn_take_due(evtcp_conn *c, unsigned due) {
  if (!(c->due & due)) return 0;
  c->due &= (unsigned char)~due;
  return 1;
}

/* Delivers the due notices, in order: kept input, onEnd (the peer's FIN,
 * once not paused), the transport's held input, onDrain, the end (which
 * waits for a run without a pending error). Each is looked at as it comes:
 * one set by an earlier one's callback is delivered in the same run. */
static void conn_run_pending(evtcp_object *obj) {
  evtcp_conn *c = (evtcp_conn *)obj;
  if (c->client) conn_free_bev(c, &c->client->retired_bev, &c->client->retired_fd);
  if (conn_take_due(c, DUE_INPUT) && c->state == CONN_OPEN) conn_deliver_kept(c);
  if (conn_end_due(c) && !c->paused && c->state == CONN_OPEN) conn_finish_input(c);
  if (conn_take_due(c, DUE_BACKLOG)) conn_deliver_backlog(c);
  if (conn_take_due(c, DUE_DRAIN) && conn_is_live(c)) conn_deliver(c, EVT_DRAIN);
  if ((c->due & DUE_FINISH) && !loop_has_error(c->obj.loop)) conn_finish(c);
  else if (c->due & DUE_FINISH) object_defer(&c->obj);
}

/* ---- methods ---- */

/* Does the handler at handler_index have a callback? */
int conn_handler_has_callbacks(lua_State *L, int handler_index) {
  int i;
  handler_index = lua_absindex(L, handler_index);
  for (i = 0; i < EVT_COUNT; i++) {
    int t = lua_getfield(L, handler_index, event_callback_names[i]);
    lua_pop(L, 1);
    if (t != LUA_TNIL) return 1;
  }
  return 0;
}

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
  evtcp_conn *c = conn_check(L, 1);
  if (conn_is_live(c) && c->output == OUTPUT_OPEN) {
    c->output = OUTPUT_SHUTTING;
    if (c->state == CONN_OPEN && conn_buffered(c) == 0) conn_flushed(c, 0);
  }
  return 0;
}

/* conn:close(): flush, then close both ways; aborts a connect in progress. */
static int conn_close(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  if (!conn_is_live(c) || c->output == OUTPUT_CLOSING) return 0;
  if (c->state != CONN_OPEN) {
    /* nothing queued: abort the connect. Queued data is never dropped:
     * connecting goes on, and the data is flushed before the close */
    if (conn_buffered(c) == 0) conn_end(c, NULL, 0);
    else c->output = OUTPUT_CLOSING;
    return 0;
  }
  c->output = OUTPUT_CLOSING;
  conn_stop_reading(c);
  if (conn_buffered(c) == 0) conn_flushed(c, 0);
  return 0;
}

/* __close, at the end of a `local c <close>` scope: close(), unless the
 * connection went into the pool meanwhile (it is not the program's). */
static int conn_close_scope(lua_State *L) {
  if (conn_check_any(L, 1)->pooled) return 0;
  return conn_close(L);
}

/* conn:reset(): abortive close, queued output dropped, RST sent. */
static int conn_reset(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  conn_end(c, NULL, 1);
  return 0;
}

static int conn_pause(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  c->paused = 1;
  conn_stop_reading(c);
  return 0;
}

static int conn_resume(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  c->paused = 0;
  conn_start_reading(c);
  conn_kept_input_due(c);
  if (conn_end_due(c)) object_defer(&c->obj); /* the FIN came while paused: onEnd */
  return 0;
}

/* conn:setTimeouts(read, write): nil clears one. */
static int conn_set_timeouts(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  double r = seconds_check(L, 2, "read timeout");
  double w = seconds_check(L, 3, "write timeout");
  c->read_timeout = r;
  c->write_timeout = w;
  conn_update_read_timeout(c);
  conn_bev_timeouts(c);
  return 0;
}

/* ---- construction and collection ---- */

/* Pushes a new connection userdata in its terminated state (safe to
 * collect whatever fails next), a plain stream until told otherwise. */
evtcp_conn *conn_alloc(lua_State *L, evtcp_loop *loop) {
  evtcp_conn *c = (evtcp_conn *)object_new(L, loop, sizeof *c, UV_CONN_COUNT, conn_run_pending, &conn_type);
  c->state = CONN_TERMINATED;
  c->fd = -1;
  c->transport = &transport_tcp;
  c->read_timeout = c->write_timeout = -1;
  c->high_water = 1024 * 1024;
  return c;
}

/* Stores the handler at handler_index in the new connection on top and
 * anchors the connection if the handler has callbacks. */
void conn_adopt_handler(lua_State *L, evtcp_conn *c, int handler_index) {
  lua_pushvalue(L, handler_index);
  lua_setiuservalue(L, -2, UV_HANDLER);
  if (conn_handler_has_callbacks(L, handler_index)) object_anchor(&c->obj, ANCHOR_CALLBACKS);
}

/* The accepting listener counts one connection less. */
static void conn_leave_listener(evtcp_conn *c) {
  if (c->live == NULL) return;
  if (*c->live > 0) (*c->live)--;
  c->live = NULL;
}

/* Runs under loop_pcall from the listener: adopts an accepted socket.
 * Stack: listener, handler, a conn_accepted (light userdata). Returns the
 * connection; from the moment it owns the socket, a->fd is -1 (what the
 * caller closes if this raises). */
int conn_adopt_accepted(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  conn_accepted *a = (conn_accepted *)lua_touserdata(L, 3);
  conn_options own;
  evtcp_conn *c;
  if (!lua_istable(L, 2) && !lua_isuserdata(L, 2))
    return luaL_error(L, "evtcp: onConnection must return a handler table, or nil/false to refuse "
                         "the client (it returned a %s)", luaL_typename(L, 2));
  c = conn_alloc(L, loop);
  c->fd = a->fd; /* the connection owns the socket now: __gc closes it */
  a->fd = -1;
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, UV_OWNER);
  if (conn_options_apply(c, a->defaults, 1) != 0) return luaL_error(L, "evtcp: out of memory");
  conn_options_read(L, 2, 0, &own); /* over the listener's */
  conn_options_apply(c, &own, 0);
  conn_adopt_handler(L, c, 2);
  c->peer = a->peer;
  c->local = a->local;
  if (c->peer.sa.sa_family == AF_UNIX && a->unix_path != NULL && /* not a client a PROXY header named */
      (c->unix_path = strdup(a->unix_path)) == NULL)
    return luaL_error(L, "evtcp: out of memory");
  /* plain: OPEN now; TLS: OPEN, and onConnection, once the handshake is done */
  c->transport = a->transport;
  if (c->transport->accept(c, a->server) != 0) return luaL_error(L, "evtcp: out of memory");
  c->live = a->live;
  return 1;
}

/* __gc's own part (the object layer's skeleton): frees everything, runs
 * no Lua. */
static void conn_release_all(lua_State *L, evtcp_object *obj) {
  evtcp_conn *c = (evtcp_conn *)obj;
  (void)L;
  conn_release(c);
  free(c->failure);
  c->failure = NULL;
  if (c->input) { evbuffer_free(c->input); c->input = NULL; }
  free(c->unix_path);
  c->unix_path = NULL;
  if (c->client) { free(c->client->host); free(c->client->pool_key); }
  free(c->client);
  c->client = NULL;
  free(c->framing);
  c->framing = NULL;
  conn_leave_listener(c);
  c->state = CONN_TERMINATED;
}

static const luaL_Reg conn_methods[] = {
  {"send", conn_send},
  {"shutdown", conn_shutdown},
  {"close", conn_close},
  {"reset", conn_reset},
  {"pause", conn_pause},
  {"resume", conn_resume},
  {"setTimeouts", conn_set_timeouts},
  {"startTLS", conn_start_tls},
  {"setKeepAlive", conn_keep_in_pool},
  {"setOption", conn_set_option},
  {"getOption", conn_get_option},
  {"_read", conn_read},
  {"receive", conn_receive},
  {"receiveUntil", conn_receive_until},
  {"_take", conn_take},
  {"_state", conn_state_name},
  {"_flags", conn_flags},
  {NULL, NULL}
};

/* The metatable is made in one place, conn_props.c: these are the
 * functions of this file it takes. */
void conn_open(lua_State *L) {
  static const luaL_Reg meta[] = {{"__close", conn_close_scope}, {NULL, NULL}};
  conn_props_open(L, conn_methods, meta, &conn_type);
}
