/*
 * conn_send.c - the connection's write path, whatever its transport
 * (transport.h): send() (written at once when the transport can and
 * nothing is queued, long strings queued by reference), the replies to a
 * batch of frames gathered and written together (corking), a coroutine
 * waiting for room, and what happens once the output queue is empty
 * (onDrain, shutdown and close once flushed).
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include "conn.h"

size_t conn_buffered(const evtcp_conn *c) {
  size_t n = c->early ? evbuffer_get_length(c->early) : 0;
  if (c->corked) n += evbuffer_get_length(c->obj.loop->cork);
  if (c->bev) n += evbuffer_get_length(bufferevent_get_output(c->bev));
  if (c->transport->pending) n += c->transport->pending(c);
  return n;
}

/* ---- when the output queue empties ---- */

/* OUTPUT_SHUTTING, flushed: our FIN (TLS: close_notify first). */
static void conn_shut_write(evtcp_conn *c) {
  c->output = OUTPUT_SHUT;
  if (c->fin_sent || c->fd < 0) return;
  if (c->transport->end_stream) c->transport->end_stream(c);
  shutdown(c->fd, SHUT_WR);
  c->fin_sent = 1;
}

/* Everything queued has reached the kernel: do what waited for it. */
void conn_flushed(evtcp_conn *c, int from_loop) {
  object_unanchor(&c->obj, ANCHOR_OUTPUT);
  /* after the peer's FIN, our side closes once flushed, unless the program
   * keeps it open (allowHalfOpen) until it calls shutdown() or close() */
  if (c->output == OUTPUT_CLOSING ||
      (conn_peer_ended(c) && !conn_end_due(c) && (!c->allow_half_open || c->output != OUTPUT_OPEN))) {
    conn_end(c, NULL, 0); /* closing the socket sends our FIN */
    return;
  }
  if (c->output == OUTPUT_SHUTTING) conn_shut_write(c);
  if (from_loop) object_wake(&c->obj, WAKE_OUTPUT); /* a send() waiting for room */
  if (c->drain_wanted) {
    c->drain_wanted = 0;
    if (from_loop) conn_deliver(c, EVT_DRAIN);
    else conn_due(c, DUE_DRAIN);
  }
}

/* The bufferevent's write callback: output drained to its low mark (0). */
void conn_on_written(struct bufferevent *bev, void *arg) {
  evtcp_conn *c = (evtcp_conn *)arg;
  (void)bev;
  if (c->state == CONN_OPEN && conn_buffered(c) == 0) conn_flushed(c, 1);
}

/* ---- writing: send() ---- */

#define SEND_IOV_MAX 16         /* send() arguments written in one sendmsg() */

/* Strings at least this long are queued by reference, not copied. */
#define QUEUE_BY_REFERENCE 4096

typedef struct queued_string {
  evtcp_loop *loop;
  int ref;           /* registry reference keeping the Lua string alive */
} queued_string;

/* evbuffer's cleanup: the bytes were written (or dropped); let the string
 * go. Runs from libevent, or from bufferevent_free in __gc; no Lua code. */
static void queued_string_release(const void *data, size_t len, void *extra) {
  queued_string *q = (queued_string *)extra;
  (void)data; (void)len;
  luaL_unref(q->loop->L, LUA_REGISTRYINDEX, q->ref);
  free(q);
}

/* Queues len bytes at s, part of the Lua string at stack index i: a long
 * one by reference (the string is kept alive until written), a short one
 * by copy. Returns 0, or -1 without memory. */
static int conn_queue(lua_State *L, evtcp_conn *c, struct evbuffer *out, int i,
                      const char *s, size_t len) {
  queued_string *q;
  if (len < QUEUE_BY_REFERENCE || (q = (queued_string *)malloc(sizeof *q)) == NULL)
    return evbuffer_add(out, s, len);
  q->loop = c->obj.loop;
  lua_pushvalue(L, i);
  q->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (evbuffer_add_reference(out, s, len, queued_string_release, q) != 0) {
    queued_string_release(s, len, q);
    return -1;
  }
  return 0;
}

/* Queues the strings first..first+count-1 on out, in order; onDrain once
 * they are flushed. Raises without memory. */
static void conn_queue_args(lua_State *L, evtcp_conn *c, struct evbuffer *out, int first, int count) {
  int i;
  for (i = first; i < first + count; i++) {
    size_t len;
    const char *s = lua_tolstring(L, i, &len);
    if (len > 0 && conn_queue(L, c, out, i, s, len) != 0) luaL_error(L, "evtcp: out of memory");
    c->bytes_sent += len;
  }
  c->drain_wanted = 1;
  object_anchor(&c->obj, ANCHOR_OUTPUT);
}

/* The output queue, making the bufferevent on first need. NULL: no memory. */
static struct evbuffer *conn_output_queue(evtcp_conn *c) {
  if (c->bev == NULL) {
    c->bev = bufferevent_socket_new(c->obj.loop->base, c->fd, 0); /* we own fd */
    if (c->bev == NULL) return NULL;
    bufferevent_setcb(c->bev, NULL, conn_on_written, conn_on_bev_event, c);
    conn_bev_timeouts(c);
  }
  return bufferevent_get_output(c->bev);
}

/* ---- corking: the replies to a batch of frames, written together ---- */

/* From now on this connection's sends gather in the loop's cork buffer
 * (one connection at a time: frames are delivered one connection at a
 * time, and methods never deliver). Only where the transport writes at
 * once: over TLS every send is queued anyway. */
void conn_cork(evtcp_conn *c) {
  evtcp_loop *loop = c->obj.loop;
  if (c->corked || c->state != CONN_OPEN || c->transport->write_now == NULL) return;
  if (loop->cork_owner != NULL) return; /* never two at once; uncorked is still correct */
  if (loop->cork == NULL && (loop->cork = evbuffer_new()) == NULL) return;
  c->corked = 1;
  loop->cork_owner = c;
}

/* Writes what the cork gathered: at once if nothing else is queued, the
 * rest (or all, behind queued output) into the output queue; dropped if the
 * connection was reset or failed meanwhile. Then what waited for the
 * queue to empty (onDrain, a close) happens. */
void conn_uncork(evtcp_conn *c) {
  struct evbuffer *cork = c->obj.loop->cork, *out;
  size_t len;
  if (!c->corked) return;
  c->corked = 0;
  c->obj.loop->cork_owner = NULL;
  len = evbuffer_get_length(cork);
  if (len == 0) return;
  if (c->state != CONN_OPEN) { /* the bytes were counted as sent: they never were */
    c->bytes_sent -= len;
    evbuffer_drain(cork, len);
    return;
  }
  out = c->bev ? bufferevent_get_output(c->bev) : NULL;
  if (out == NULL || evbuffer_get_length(out) == 0) {
    struct iovec iov[16];
    int k = evbuffer_peek(cork, -1, NULL, (struct evbuffer_iovec *)iov, 16);
    ssize_t n = c->transport->write_now(c, iov, k < 16 ? k : 16);
    int err = n < 0 ? EVUTIL_SOCKET_ERROR() : 0;
    if (n < 0 && !io_would_block(err)) {
      c->bytes_sent -= len;
      evbuffer_drain(cork, len);
      conn_fail(c, err, "evtcp");
      return;
    }
    if (n > 0) evbuffer_drain(cork, (size_t)n);
  }
  if (evbuffer_get_length(cork) > 0) {
    if ((out = conn_output_queue(c)) == NULL || evbuffer_add_buffer(out, cork) != 0) {
      c->bytes_sent -= evbuffer_get_length(cork);
      evbuffer_drain(cork, evbuffer_get_length(cork));
      conn_fail(c, ENOMEM, "evtcp");
    }
    return;
  }
  /* all written: what waited for it (a close, a shutdown) goes on, and
   * onDrain comes from the loop. Not a close after the peer's FIN before
   * onEnd: conn_flushed waits for conn_end_due. */
  if (conn_buffered(c) == 0) conn_flushed(c, 0);
}

/* The strings of one send() gathered for one sendmsg(): the stack index
 * of each, so what the kernel does not take is queued by reference. */
typedef struct send_batch {
  struct iovec iov[SEND_IOV_MAX];
  int slot[SEND_IOV_MAX];
  int count;
  size_t total;
} send_batch;

/* Writes the batch at once; what the kernel does not take is queued, in
 * order. Raises nothing: a failure fails the connection. */
static void conn_write_batch(lua_State *L, evtcp_conn *c, const send_batch *b) {
  struct evbuffer *out;
  size_t written;
  int i;
  ssize_t n;
  c->sent_run = c->obj.loop->lua_runs;
  c->bytes_sent += b->total;
  n = c->transport->write_now(c, b->iov, b->count);
  if (n < 0) {
    int err = EVUTIL_SOCKET_ERROR();
    if (!io_would_block(err)) {
      c->bytes_sent -= b->total; /* never written */
      conn_fail(c, err, "evtcp");
      return;
    }
    n = 0;
  }
  if ((size_t)n == b->total) {
    if (conn_handler_has(L, "onDrain")) conn_due(c, DUE_DRAIN);
    return;
  }
  /* the kernel took n bytes: queue the rest, in order */
  if ((out = conn_output_queue(c)) == NULL) { conn_fail(c, ENOMEM, "evtcp"); return; }
  written = (size_t)n;
  for (i = 0; i < b->count; i++) {
    if (written >= b->iov[i].iov_len) { written -= b->iov[i].iov_len; continue; }
    if (conn_queue(L, c, out, b->slot[i], (char *)b->iov[i].iov_base + written,
                   b->iov[i].iov_len - written) != 0) {
      conn_fail(c, ENOMEM, "evtcp");
      return;
    }
    written = 0;
  }
  c->drain_wanted = 1;
  object_anchor(&c->obj, ANCHOR_OUTPUT);
}

static void conn_write(lua_State *L, evtcp_conn *c, int first, int count) {
  struct evbuffer *out = c->bev ? bufferevent_get_output(c->bev) : NULL;
  send_batch b;
  int i;
  /* A coroutine that sends again before it waits (answering pipelined
   * requests, say) has its later small sends queued, and the bufferevent
   * writes them together: one sendmsg per reply cost a pipelining server 5x
   * (bench/, real clients). The first send of each run still goes at once,
   * so a request-reply exchange pays no extra wake-up, and so does a send
   * of 4 KiB or more (a proxy's chunks), which one syscall serves well. */
  int direct = c->transport->write_now != NULL && (out == NULL || evbuffer_get_length(out) == 0) &&
               count <= SEND_IOV_MAX;
  if (c->corked) { /* gathered, written by conn_uncork */
    conn_queue_args(L, c, c->obj.loop->cork, first, count);
    return;
  }
  if (direct) {
    b.count = 0;
    b.total = 0;
    for (i = first; i < first + count; i++) {
      size_t len;
      const char *s = lua_tolstring(L, i, &len);
      if (len == 0) continue;
      b.iov[b.count].iov_base = (void *)s;
      b.iov[b.count].iov_len = len;
      b.slot[b.count++] = i;
      b.total += len;
    }
    if (b.count == 0) return;
    if (b.total < QUEUE_BY_REFERENCE && c->sent_run == c->obj.loop->lua_runs && lua_isyieldable(L))
      direct = 0; /* coalesce */
  }
  if (direct) {
    conn_write_batch(L, c, &b);
    return;
  }
  if ((out = conn_output_queue(c)) == NULL) luaL_error(L, "evtcp: out of memory");
  conn_queue_args(L, c, out, first, count);
}

/* After a send, in a coroutine started by evtcp.spawn: waits (yields from
 * C, resumed by object_wake when the queue drains or the state changes)
 * while more than highWaterMark bytes are queued on a live connection, so
 * a fast writer has bounded memory. Connecting counts: a coroutine that
 * sends while the handshake is still going (a fresh connect, a TLS
 * listener's accept()) would otherwise pile up all it has. Then send's
 * answer: true. */
static int conn_send_wait(lua_State *L, int status, lua_KContext ctx) {
  evtcp_conn *c = (evtcp_conn *)lua_touserdata(L, 1);
  (void)status; (void)ctx;
  if (c->obj.loop != NULL && conn_is_live(c) && conn_buffered(c) > c->high_water &&
      loop_is_spawned(L)) {
    lua_pushthread(L);
    object_add_waiter(L, 1, -1, WAKE_OUTPUT | WAKE_STATE, WAIT_WRITER);
    lua_pop(L, 1);
    return lua_yieldk(L, 0, 0, conn_send_wait);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* conn:send(data, ...) -> true | nil, "closed"
 * Over highWaterMark in a spawned coroutine, waits for room first. */
int conn_send(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  int top = lua_gettop(L), i;
  for (i = 2; i <= top; i++) {
    int t = lua_type(L, i);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) luaL_typeerror(L, i, "string");
  }
  if (!conn_is_live(c) || c->output != OUTPUT_OPEN ||
      (conn_peer_ended(c) && !c->allow_half_open && c->input_end != INPUT_EOF_DATA &&
       c->input_end != INPUT_ON_END)) {
    lua_pushnil(L);
    lua_pushliteral(L, "closed");
    return 2;
  }
  if (c->state == CONN_OPEN) {
    conn_write(L, c, 2, top - 1);
  } else {
    /* not connected yet: kept in order, sent once connected */
    for (i = 2; i <= top; i++) {
      size_t len;
      const char *s = lua_tolstring(L, i, &len);
      if (len == 0) continue;
      if (c->early == NULL && (c->early = evbuffer_new()) == NULL) luaL_error(L, "evtcp: out of memory");
      if (evbuffer_add(c->early, s, len) != 0) luaL_error(L, "evtcp: out of memory");
      c->bytes_sent += len;
      c->drain_wanted = 1;
      object_anchor(&c->obj, ANCHOR_OUTPUT);
    }
  }
  return conn_send_wait(L, LUA_OK, 0);
}
