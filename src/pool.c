/*
 * pool.c - the connection pool: conn:setKeepAlive([idleTimeout [, poolSize]])
 * keeps an idle client connection's socket (and its TLS session) in the
 * loop, under its key; evtcp.connect/dial with the same key (the `pool`
 * option, or address, port and TLS settings) take it instead of
 * connecting: OpenResty's setkeepalive, outside nginx.
 *
 * What is kept is not the connection object: the program's object is
 * detached (its handler dropped, its methods raise), and the socket with
 * the transport's state (transport.h, park) goes into a pool entry. A new
 * connection object takes an entry up (resume), so an old reference can
 * never reach a socket another part of the program now uses.
 *
 * While kept, the socket is watched: anything the peer sends, its FIN or
 * its reset, and the idle timeout, close the entry (a server that speaks
 * first on a connection we think idle is not one to send a request to).
 * A key keeps at most poolSize entries; the one kept longest goes first.
 * Taking is newest first: the warmest socket.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "conn.h"

typedef struct pool_entry {
  struct pool_entry *next, *prev; /* the loop's list, newest first */
  evtcp_loop *loop;
  char *key;
  evutil_socket_t fd;
  const conn_transport *transport;
  void *state;                    /* the transport's parked state, or NULL */
  struct event *watch;            /* readable or idle: the entry goes */
  unsigned reused;                /* reusedTimes of the connection kept */
  evtcp_addr peer, local;
} pool_entry;

static void pool_unlink(pool_entry *e) {
  if (e->prev) e->prev->next = e->next;
  else if (e->loop->pool == e) e->loop->pool = e->next;
  if (e->next) e->next->prev = e->prev;
  e->next = e->prev = NULL;
}

/* Closes an entry's socket and frees it (unlinked first). No Lua. */
void pool_entry_free(pool_entry *e) {
  if (e == NULL) return;
  if (e->watch) event_free(e->watch);
  if (e->state) e->transport->discard(e->state);
  if (e->fd >= 0) evutil_closesocket(e->fd);
  free(e->key);
  free(e);
}

/* The peer spoke, left or reset, or the idle time passed. */
static void pool_on_watch(evutil_socket_t fd, short what, void *arg) {
  pool_entry *e = (pool_entry *)arg;
  (void)fd; (void)what;
  pool_unlink(e);
  pool_entry_free(e);
}

/* At lua_close: every kept socket is closed. */
void pool_close_all(evtcp_loop *loop) {
  while (loop->pool) {
    pool_entry *e = loop->pool;
    pool_unlink(e);
    pool_entry_free(e);
  }
}

/* Why c cannot be kept, or NULL. */
static const char *pool_refusal(const evtcp_conn *c) {
  if (c->state < CONN_OPEN) return "it is not connected yet";
  if (c->state > CONN_OPEN) return "closed";
  if (c->client == NULL || c->client->pool_key == NULL) return "only connect's and dial's connections can be pooled";
  if (c->transport != c->client->pool_transport) return "startTLS changed it after its pool key was made";
  if (c->upgrading) return "its TLS upgrade is not done";
  if (c->output != OUTPUT_OPEN) return "it was shut down";
  if (conn_peer_ended(c)) return "the peer closed it";
  if (c->receiving && c->obj.waiters > 0) return "a coroutine is reading it";
  if (c->obj.waiters > 0) return "a coroutine is waiting on it";
  if ((c->input && evbuffer_get_length(c->input) > 0) || c->due) return "it has unread data";
  if (conn_buffered(c) > 0 || (c->early && evbuffer_get_length(c->early) > 0)) return "it has data still to send";
  return NULL;
}

/* A new entry for c's socket (taken out of c), with the transport's state. */
static pool_entry *pool_entry_of(evtcp_conn *c, const char **why) {
  pool_entry *e = (pool_entry *)calloc(1, sizeof *e);
  if (e == NULL || (e->key = strdup(c->client->pool_key)) == NULL) {
    free(e);
    *why = "out of memory";
    return NULL;
  }
  conn_stop_reading(c);
  if (c->transport->park) {
    if ((e->state = c->transport->park(c, why)) == NULL) {
      free(e->key);
      free(e);
      return NULL;
    }
  } else {
    c->transport->release(c); /* TCP: its read event */
    if (c->bev) { c->transport->free_bev(c->bev); c->bev = NULL; }
  }
  e->loop = c->obj.loop;
  e->transport = c->transport;
  e->fd = c->fd;
  c->fd = -1;
  e->reused = c->reused_times;
  e->peer = c->peer;
  e->local = c->local;
  return e;
}

/* The key's entries beyond size - 1 go, the kept longest first. */
static void pool_make_room(evtcp_loop *loop, const char *key, lua_Integer size) {
  pool_entry *e, *oldest;
  lua_Integer n;
  for (;;) {
    n = 0;
    oldest = NULL;
    for (e = loop->pool; e; e = e->next) {
      if (strcmp(e->key, key) == 0) { n++; oldest = e; }
    }
    if (n < size || oldest == NULL) return;
    pool_unlink(oldest);
    pool_entry_free(oldest);
  }
}

/* The program's object lets go: no event, no handler, methods raise. */
static void pool_detach(lua_State *L, evtcp_conn *c) {
  c->pooled = 1;
  c->state = CONN_TERMINATED;
  c->due = 0;
  if (c->input) { evbuffer_free(c->input); c->input = NULL; }
  if (c->early) { evbuffer_free(c->early); c->early = NULL; }
  lua_pushnil(L);
  lua_setiuservalue(L, 1, UV_HANDLER);
  object_unanchor(&c->obj, ANCHOR_CALLBACKS | ANCHOR_OUTPUT | ANCHOR_CONNECTING);
}

/* conn:setKeepAlive([idleTimeout [, poolSize]]) -> true | nil, message */
int conn_keep_in_pool(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  double idle = 60;
  lua_Integer size = luaL_optinteger(L, 3, 30);
  const char *why;
  pool_entry *e;
  if (!lua_isnoneornil(L, 2) && seconds_get(L, 2, &idle) <= 0)
    luaL_argerror(L, 2, "idleTimeout must be a number of seconds >= 0");
  luaL_argcheck(L, size >= 1, 3, "poolSize must be an integer >= 1");
  lua_settop(L, 1);
  why = pool_refusal(c);
  if (why == NULL && (e = pool_entry_of(c, &why)) != NULL) {
    e->watch = event_new(c->obj.loop->base, e->fd, EV_READ, pool_on_watch, e);
    if (e->watch == NULL) {
      pool_entry_free(e);
      conn_fail(c, ENOMEM, "evtcp");
      why = "out of memory";
    } else {
      struct timeval tv = seconds_tv(idle);
      event_add(e->watch, idle > 0 ? &tv : NULL);
      pool_make_room(c->obj.loop, e->key, size);
      e->next = c->obj.loop->pool;
      if (e->next) e->next->prev = e;
      c->obj.loop->pool = e;
      pool_detach(L, c);
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  if (conn_is_live(c)) conn_end(c, NULL, 0); /* cannot be kept: closed */
  luaL_pushfail(L);
  lua_pushfstring(L, "cannot pool the connection: %s", why);
  return 2;
}

/* The loop runs it: the entry's socket becomes c's, OPEN. */
static void pool_on_resume(evutil_socket_t fd, short what, void *arg) {
  evtcp_conn *c = (evtcp_conn *)arg;
  pool_entry *e = c->client->parked;
  int failed;
  (void)fd; (void)what;
  c->client->parked = NULL;
  if (e->transport->resume) {
    failed = e->transport->resume(c, e->fd, e->state);
    if (!failed) e->state = NULL;
  } else {
    failed = c->transport->connect(c) != 0 || bufferevent_setfd(c->bev, e->fd) != 0;
  }
  if (failed) {
    pool_entry_free(e);
    conn_fail(c, ENOMEM, "evtcp");
    return;
  }
  c->fd = e->fd;
  e->fd = -1;
  c->peer = e->peer;
  c->reused_times = e->reused + 1;
  pool_entry_free(e);
  conn_on_connected(c);
}

/* A kept socket for c's key: taken (c is CONNECTING until the loop
 * resumes it, so onConnection comes from the loop, as for a new one).
 * 1 if one was taken. */
int pool_take(evtcp_conn *c) {
  pool_entry *e;
  for (e = c->obj.loop->pool; e; e = e->next) {
    if (strcmp(e->key, c->client->pool_key) == 0 && e->transport == c->transport) break;
  }
  if (e == NULL) return 0;
  pool_unlink(e);
  event_del(e->watch);
  event_assign(e->watch, c->obj.loop->base, -1, 0, pool_on_resume, c);
  event_active(e->watch, EV_TIMEOUT, 0);
  c->client->parked = e;
  c->state = CONN_CONNECTING;
  return 1;
}
