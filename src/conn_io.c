/*
 * conn_io.c - the connection's read path, whatever its transport
 * (transport.h): reading started and stopped, backpressure, input handed
 * to onData or kept for receive(), the peer's FIN, the bufferevent's events
 * while connecting and open, OPEN itself, and the socket options. The write
 * path is conn_send.c.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/uio.h>
#include <netinet/tcp.h>
#include "conn.h"

/* ---- reading ---- */


static int conn_wants_reading(const evtcp_conn *c) {
  return c->state == CONN_OPEN && !c->paused && !c->input_full && !c->peer_eof && !c->close_wanted;
}

/* The bufferevent's timeouts: write always, read only where the
 * bufferevent reads (transport.h) and only while reading. */
void conn_bev_timeouts(evtcp_conn *c) {
  struct timeval r, w;
  int use_r = conn_transport_of(c)->bev_reads && c->reading && c->read_timeout > 0;
  if (c->bev == NULL) return;
  if (use_r) r = seconds_tv(c->read_timeout);
  if (c->write_timeout > 0) w = seconds_tv(c->write_timeout);
  bufferevent_set_timeouts(c->bev, use_r ? &r : NULL, c->write_timeout > 0 ? &w : NULL);
}

void conn_start_reading(evtcp_conn *c) {
  if (c->reading || !conn_wants_reading(c)) return;
  c->reading = 1;
  conn_transport_of(c)->start_reading(c);
}

void conn_stop_reading(evtcp_conn *c) {
  if (!c->reading) return;
  c->reading = 0;
  conn_transport_of(c)->stop_reading(c);
}

/* Re-arms reading so a changed read timeout takes effect. */
void conn_update_read_timeout(evtcp_conn *c) {
  conn_stop_reading(c);
  conn_start_reading(c);
}

/* ---- libevent callbacks ---- */

/* Input was added for receive(): pause at highWaterMark, wake the reader. */
static void conn_input_grew(evtcp_conn *c) {
  if (evbuffer_get_length(c->input) >= conn_input_limit(c)) {
    c->input_full = 1;
    conn_stop_reading(c);
  }
  object_wake(&c->obj, WAKE_INPUT);
}

/* Appends n bytes to `input`, made on first need. 0, or -1 when memory
 * ran out (the connection has failed). */
static int conn_keep(evtcp_conn *c, const char *buf, size_t n) {
  if ((c->input == NULL && (c->input = evbuffer_new()) == NULL) || evbuffer_add(c->input, buf, n) != 0) {
    conn_fail(c, ENOMEM, "evtcp");
    return -1;
  }
  return 0;
}

/* Bytes read from the socket (or decrypted): to onData, or kept in `input`
 * for receive(). Input is appended by copy, sized to what came: reserving
 * a 64 KiB read area in the buffer instead kept 128 KiB per idle
 * connection (libevent rounds the reservation up). */
void conn_deliver_data(evtcp_conn *c, const char *buf, size_t n) {
  int ran;
  c->bytes_read += n;
  if (!c->receiving && ((c->input && evbuffer_get_length(c->input) > 0) || c->framing)) {
    /* bytes kept while there was no onData go first; frames are cut
     * from the buffer */
    if (conn_keep(c, buf, n) == 0 && !conn_deliver_kept(c)) conn_input_grew(c);
    return;
  }
  if (!c->receiving && (conn_deliver_bytes(c, buf, n, &ran) != LUA_OK || ran)) return;
  /* no onData: keep the bytes for receive(), up to highWaterMark */
  if (conn_keep(c, buf, n) == 0) conn_input_grew(c);
}

/* The peer's FIN: what came before it has been delivered; then onEnd, then
 * (without allowHalfOpen) our side closes once what is queued is flushed. */
void conn_on_peer_eof(evtcp_conn *c) {
  c->peer_eof = 1;
  conn_stop_reading(c);
  object_wake(&c->obj, WAKE_INPUT); /* a receive("a") is complete */
  c->end_due = 1;
  conn_finish_input(c);
}

/* After the peer's FIN: what was kept before it goes to onData, then
 * onEnd. A pause() in between holds the rest back until resume(): onData
 * never follows onEnd. Replies sent meanwhile are flushed before the close. */
void conn_finish_input(evtcp_conn *c) {
  if (!c->end_due) return;
  if (!c->receiving) {
    c->in_on_end = 1;
    conn_deliver_kept(c);
    c->in_on_end = 0;
    if (c->paused) return; /* resume() goes on */
    if (loop_has_error(c->obj.loop)) { object_defer(&c->obj); return; } /* the next run does */
  }
  c->end_due = 0;
  if (c->state == CONN_OPEN) {
    c->in_on_end = 1;
    conn_deliver(c, EVT_END);
    c->in_on_end = 0;
  }
  if (c->state == CONN_OPEN && conn_buffered(c) == 0) conn_flushed(c, 1);
}

/* Input a transport has in a buffer (TLS: decrypted), handed on as
 * conn_deliver_data does while the program reads. */
void conn_deliver_buffer(evtcp_conn *c, struct evbuffer *in) {
  size_t len;
  while (c->reading && !loop_has_error(c->obj.loop) && (len = evbuffer_get_length(in)) > 0) {
    if (c->receiving) {
      if (evbuffer_add_buffer(c->input, in) != 0) { conn_fail(c, ENOMEM, "evtcp"); return; }
      conn_input_grew(c);
    } else {
      /* one chain (a TLS record or so) at a time, straight from the
       * buffer into the Lua string: pulling several chains up allocated a
       * new one and copied once more (bench/: TLS bulk) */
      struct evbuffer_iovec v;
      size_t n;
      if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0) break;
      n = v.iov_len < READ_CHUNK ? v.iov_len : READ_CHUNK;
      conn_deliver_data(c, (const char *)v.iov_base, n);
      evbuffer_drain(in, n);
    }
  }
}

/* OPEN: the socket is connected (client) or accepted (server). */
int conn_become_open(evtcp_conn *c) {
#if !defined(MSG_NOSIGNAL) && defined(SO_NOSIGPIPE)
  {
    int one = 1;
    setsockopt(c->fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
  }
#endif
  c->state = CONN_OPEN;
  c->was_open = 1;
  object_unanchor(&c->obj, ANCHOR_CONNECTING);
  if (c->client) { /* what connecting used is done with */
    if (c->client->connect_timer) { event_free(c->client->connect_timer); c->client->connect_timer = NULL; }
    if (c->client->addrs) { evutil_freeaddrinfo(c->client->addrs); c->client->addrs = c->client->next_addr = NULL; }
  }
  /* the peer's address is known (dialled or accepted); the local one is
   * asked for when the program reads it: no syscalls here */
  conn_apply_socket_options(c);
  conn_bev_timeouts(c);
  if (conn_transport_of(c)->open(c) != 0) return -1;
  if (c->early && evbuffer_get_length(c->early) > 0 && c->bev) {
    if (bufferevent_write_buffer(c->bev, c->early) != 0) return -1;
  }
  conn_start_reading(c);
  return 0;
}

/* The socket's pending error (SO_ERROR), or err when it has none. */
static int conn_socket_error(evtcp_conn *c, int err) {
  int soerr = 0;
  socklen_t len = sizeof soerr;
  if (err == ECONNRESET || err == EPIPE || c->fd < 0) return err;
  if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr != 0) return soerr;
  return err;
}

void conn_on_bev_event(struct bufferevent *bev, short what, void *arg) {
  evtcp_conn *c = (evtcp_conn *)arg;
  int err = EVUTIL_SOCKET_ERROR();
  evtcp_failure f;
  (void)bev;
  if (c->state == CONN_CONNECTING) {
    if (what & BEV_EVENT_CONNECTED) {
      free(c->failure); /* an earlier address may have failed */
      c->failure = NULL;
      c->fd = bufferevent_getfd(c->bev);
      {
        socklen_t len = sizeof c->local;
        if (getsockname(c->fd, &c->local.sa, &len) != 0) memset(&c->local, 0, sizeof c->local);
      }
      if (conn_become_open(c) != 0) { conn_fail(c, ENOMEM, "evtcp"); return; }
      conn_deliver(c, EVT_CONNECTION);
      /* a close() or shutdown() that came while connecting, with nothing
       * left to flush (what was queued is flushed first: conn_on_written) */
      if (c->state == CONN_OPEN && conn_buffered(c) == 0 && (c->close_wanted || c->write_shut_wanted))
        conn_flushed(c, 1);
      object_wake(&c->obj, WAKE_STATE); /* dial() */
      return;
    }
    if (conn_transport_of(c)->explain(c, what, err, &f)) { /* final: a failed handshake */
      free(c->failure);
      c->failure = NULL;
      conn_end(c, &f, 0);
      return;
    }
    /* this address failed: remember why, try the next one */
    conn_note_failure(c, err ? err : ECONNREFUSED, "libevent");
    if (c->client == NULL) { conn_end(c, NULL, 0); return; } /* accepted: no other address */
    conn_retire_bev(c);
    conn_try_next_address(c);
    return;
  }
  if (c->state != CONN_OPEN) return;
  if (what & BEV_EVENT_TIMEOUT) {
    failure_set(&f, KIND_TIMEOUT, ETIMEDOUT, "evtcp",
                (what & BEV_EVENT_READING) ? "read timeout" : "write timeout");
    conn_end(c, &f, 0);
    return;
  }
  if (what & BEV_EVENT_ERROR) err = conn_socket_error(c, err);
  if (conn_transport_of(c)->explain(c, what, err, &f)) {
    conn_end(c, &f, 0);
  } else if (what & BEV_EVENT_ERROR) {
    conn_fail(c, err ? err : EPIPE, "libevent");
  } else if ((what & BEV_EVENT_EOF) && (what & BEV_EVENT_WRITING)) {
    /* over TLS: the peer's close_notify came while we still had output,
     * which can no longer be delivered (libevent stops writing): as a
     * write to a closed socket is over plain TCP */
    conn_fail(c, EPIPE, "libevent");
  } else if (what & BEV_EVENT_EOF) {
    conn_on_peer_eof(c); /* where the bufferevent reads (TLS) */
  }
}

/* ---- socket options ---- */

/* TCP_NODELAY on the connection's own socket (c->fd: a bufferevent's fd
 * is not there on an accepted connection), now if it is open. TCP options
 * are kept but not applied on a Unix socket, which has none. */
void conn_set_no_delay(evtcp_conn *c, int on) {
  c->no_delay = on != 0;
  if (c->fd >= 0 && c->state == CONN_OPEN && c->unix_path == NULL)
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

/* Keepalive: seconds of idle before probes, -1 the system's, 0 off. */
void conn_set_keep_alive(evtcp_conn *c, int seconds) {
  int on = seconds != 0;
  c->keep_alive = seconds;
  if (c->fd < 0 || c->state != CONN_OPEN || c->unix_path != NULL) return;
  setsockopt(c->fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
#ifdef EVTCP_TCP_KEEPIDLE
  if (seconds > 0) setsockopt(c->fd, IPPROTO_TCP, EVTCP_TCP_KEEPIDLE, &seconds, sizeof seconds);
#endif
}

/* The options as the socket opens: only what differs from a new socket's
 * defaults costs a system call (listening sockets have SO_KEEPALIVE off). */
void conn_apply_socket_options(evtcp_conn *c) {
  if (c->no_delay) conn_set_no_delay(c, 1);
  if (c->keep_alive != 0) conn_set_keep_alive(c, c->keep_alive);
}
