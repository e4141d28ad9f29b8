/*
 * conn_events.c - what libevent reports on a connection's bufferevent,
 * whatever its transport: connected (or the handshake done), an address
 * that failed, timeouts, errors and ends; and OPEN itself. The read path
 * is conn_read.c, the write path conn_send.c.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "conn.h"

/* The bufferevent's timeouts: write always, read only where the
 * bufferevent reads (transport.h) and only while reading. */
void conn_bev_timeouts(evtcp_conn *c) {
  struct timeval r, w;
  int use_r = c->transport->bev_reads && c->reading && c->read_timeout > 0;
  if (c->bev == NULL) return;
  if (use_r) r = seconds_tv(c->read_timeout);
  if (c->write_timeout > 0) w = seconds_tv(c->write_timeout);
  bufferevent_set_timeouts(c->bev, use_r ? &r : NULL, c->write_timeout > 0 ? &w : NULL);
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
    conn_race_free(c->client->race); /* before the addresses it points into */
    c->client->race = NULL;
    if (c->client->addrs) { evutil_freeaddrinfo(c->client->addrs); c->client->addrs = NULL; }
  }
  /* the peer's address is known (dialled or accepted); the local one is
   * asked for when the program reads it: no syscalls here */
  conn_apply_socket_options(c);
  conn_bev_timeouts(c);
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

/* CONNECTING -> OPEN: the socket connected (over TLS: the handshake is
 * done); onConnection, and dial() returns. */
void conn_on_connected(evtcp_conn *c) {
  socklen_t len = sizeof c->local;
  free(c->failure); /* an earlier address may have failed */
  c->failure = NULL;
  c->fd = bufferevent_getfd(c->bev);
  if (getsockname(c->fd, &c->local.sa, &len) != 0) memset(&c->local, 0, sizeof c->local);
  if (conn_become_open(c) != 0) { conn_fail(c, ENOMEM, "evtcp"); return; }
  conn_deliver(c, EVT_CONNECTION);
  /* a close() or shutdown() that came while connecting, with nothing
   * left to flush (what was queued is flushed first: conn_on_written) */
  if (c->state == CONN_OPEN && conn_buffered(c) == 0 && c->output != OUTPUT_OPEN)
    conn_flushed(c, 1);
  object_wake(&c->obj, WAKE_STATE); /* dial() */
}

void conn_on_bev_event(struct bufferevent *bev, short what, void *arg) {
  evtcp_conn *c = (evtcp_conn *)arg;
  int err = EVUTIL_SOCKET_ERROR();
  evtcp_failure f;
  (void)bev;
  if (c->state == CONN_CONNECTING) {
    if (what & BEV_EVENT_CONNECTED) {
      conn_on_connected(c);
      return;
    }
    if (c->transport->explain && c->transport->explain(c, what, err, &f)) { /* final: a failed handshake */
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
  if (c->upgrading && (what & BEV_EVENT_CONNECTED)) { /* startTLS's handshake */
    conn_upgrade_done(c);
    return;
  }
  if (what & BEV_EVENT_TIMEOUT) {
    failure_set(&f, KIND_TIMEOUT, ETIMEDOUT, "evtcp",
                (what & BEV_EVENT_READING) ? "read timeout" : "write timeout");
    conn_end(c, &f, 0);
    return;
  }
  if (what & BEV_EVENT_ERROR) err = conn_socket_error(c, err);
  if (c->transport->explain && c->transport->explain(c, what, err, &f)) {
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
