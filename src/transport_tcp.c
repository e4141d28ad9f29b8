/*
 * transport_tcp.c - the plain stream (transport.h): a TCP or Unix domain
 * socket read with our own event (the link) straight from the socket into a
 * 64 KiB stack buffer and from there into the Lua string: one copy, many
 * KiB per wake-up (a bufferevent reads 4 KiB at a time). A send() with
 * nothing queued is written at once with sendmsg(); the bufferevent only
 * connects and queues what the kernel does not take.
 *
 * An accepted connection gets its bufferevent only when output first has
 * to be queued (conn_send.c): an idle or ping-pong connection never needs
 * one, and it is most of what a connection costs in memory.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include "conn.h"

/* The read event: reads up to READ_ROUNDS chunks while the socket has data and the
 * program still wants it (a callback may close, pause or fail). */
static void tcp_on_readable(evutil_socket_t fd, short what, void *arg) {
  evtcp_conn *c = (evtcp_conn *)arg;
  char buf[READ_CHUNK];
  int round;
  if (what & EV_TIMEOUT) {
    evtcp_failure f;
    failure_set(&f, KIND_TIMEOUT, ETIMEDOUT, "evtcp", "read timeout");
    conn_end(c, &f, 0);
    return;
  }
  for (round = 0; round < READ_ROUNDS; round++) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      conn_deliver_data(c, buf, (size_t)n);
      /* (after a startTLS, the socket is TLS's: this event is gone) */
      if (!c->reading || c->transport != &transport_tcp || loop_has_error(c->obj.loop) || (size_t)n < sizeof buf)
        return;
    } else if (n == 0) {
      conn_on_peer_eof(c);
      return;
    } else {
      int err = EVUTIL_SOCKET_ERROR();
      if (!io_would_block(err)) conn_fail(c, err, "evtcp");
      return;
    }
  }
}

/* Accepted: OPEN at once, nothing to negotiate. */
static int tcp_accept(evtcp_conn *c, const void *server) {
  (void)server;
  return conn_become_open(c);
}

/* The bufferevent makes the socket and connects it; it never reads. */
static int tcp_connect(evtcp_conn *c) {
  c->bev = bufferevent_socket_new(c->obj.loop->base, -1, 0);
  if (c->bev == NULL) return conn_note_failure(c, ENOMEM, "evtcp");
  bufferevent_setcb(c->bev, NULL, conn_on_written, conn_on_bev_event, c);
  return 0;
}

/* The link is the read event, made when reading first starts; its
 * timeout is the read timeout, which re-adding it restarts. */
static void tcp_reading(evtcp_conn *c, int on) {
  struct event *ev = (struct event *)c->link;
  struct timeval tv;
  if (!on) {
    if (ev) event_del(ev);
    return;
  }
  if (ev == NULL && (ev = event_new(c->obj.loop->base, c->fd, EV_READ | EV_PERSIST, tcp_on_readable, c)) == NULL) {
    conn_fail(c, ENOMEM, "evtcp"); /* stops reading: nothing to stop */
    return;
  }
  c->link = ev;
  if (c->read_timeout > 0) tv = seconds_tv(c->read_timeout);
  event_add(ev, c->read_timeout > 0 ? &tv : NULL);
}

static ssize_t tcp_write_now(evtcp_conn *c, const struct iovec *iov, int count) {
  struct msghdr msg;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = (struct iovec *)iov;
  msg.msg_iovlen = (size_t)count;
  return sendmsg(c->fd, &msg, EVTCP_MSG_NOSIGNAL | MSG_DONTWAIT);
}

static void tcp_free_bev(struct bufferevent *bev) {
  bufferevent_free(bev);
}

static void tcp_release(evtcp_conn *c) {
  if (c->link) { event_free((struct event *)c->link); c->link = NULL; }
}

/* Every event is the socket's own: the connection reads it as such; the
 * socket's FIN is the stream's end; there is no conn.tls. */
const conn_transport transport_tcp = {
  "tcp", 0, tcp_accept, NULL, tcp_connect, tcp_reading, tcp_write_now, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, tcp_free_bev, tcp_release
};
