/*
 * transport.h - the byte stream below a connection, as one small table of
 * operations (LuaSocket's p_io is the idea): the connection's state machine
 * (conn.h, conn.c, conn_io.c) is written once and asks its transport for
 * everything that depends on how the bytes travel.
 *
 *   transport_tcp  (transport_tcp.c) a plain stream socket, TCP or Unix
 *                  domain: reads with our own event straight into the Lua
 *                  string, writes at once with sendmsg() when nothing is
 *                  queued, and uses a bufferevent only to connect and to
 *                  queue output.
 *   transport_tls  (transport_tls.c) TLS over a stream socket (TCP or
 *                  Unix): an OpenSSL bufferevent does all the I/O, since
 *                  records are encrypted; CONNECTING lasts until the
 *                  handshake is done, on the server side too.
 *
 * A Unix domain socket is the plain stream over another kind of socket:
 * what differs (it has no TCP options) belongs to the socket, not to the
 * stream, and is decided where the options are applied (conn_io.c).
 *
 * The connection's `tls` bit picks its transport (conn_transport_of), so
 * the choice costs no memory in every connection. A transport calls back
 * up through conn.h: conn_deliver_data (bytes arrived), conn_on_peer_eof
 * (the peer's end), conn_on_written and conn_on_bev_event (libevent's).
 */
#ifndef EVTCP_TRANSPORT_H
#define EVTCP_TRANSPORT_H

#include <sys/types.h>
#include <sys/uio.h>

struct evtcp_conn;

typedef struct conn_transport {
  const char *name;
  /* Reads go through the bufferevent, so it carries the read timeout. */
  unsigned bev_reads;
  /* An accepted socket (c->fd) starts: OPEN at once, or a handshake
   * first (CONNECTING). server is the listener's TLS context or NULL.
   * Returns 0, or -1 without memory. */
  int (*accept)(struct evtcp_conn *c, SSL_CTX *server);
  /* A new bufferevent in c->bev (and c->ssl) to connect to the next
   * address with. Returns 0, or -1 with the reason noted (c->failure). */
  int (*connect)(struct evtcp_conn *c);
  /* OPEN is reached: what reading needs. Returns 0, or -1 without memory. */
  int (*open)(struct evtcp_conn *c);
  /* Reading starts (c->reading was just set) or stops (just cleared). */
  void (*start_reading)(struct evtcp_conn *c);
  void (*stop_reading)(struct evtcp_conn *c);
  /* Input the transport held while reading was paused, delivered from the
   * loop after resume(). */
  void (*deliver_backlog)(struct evtcp_conn *c);
  /* Writes iov at once, nothing being queued: the bytes taken, or -1 with
   * errno. NULL: everything goes through the bufferevent's queue. */
  ssize_t (*write_now)(struct evtcp_conn *c, const struct iovec *iov, int count);
  /* Our side of the stream ends, just before the socket's FIN. */
  void (*end_stream)(struct evtcp_conn *c);
  /* A bufferevent event the transport explains itself: fills f and
   * returns 1 (while CONNECTING, a failure that is final: no other address
   * is tried); 0 leaves it to the connection. err: the socket's error. */
  int (*explain)(struct evtcp_conn *c, short what, int err, evtcp_failure *f);
  /* On the way out (CLOSING): frees what only the transport has, before
   * the bufferevent and the socket go. No Lua. */
  void (*release)(struct evtcp_conn *c);
} conn_transport;

extern const conn_transport transport_tcp, transport_tls;

#endif
