/*
 * transport.h - the byte stream below a connection, as one small table of
 * operations (LuaSocket's p_io is the idea): the connection's state machine
 * (conn.h) is written once and asks its transport for everything that
 * depends on how the bytes travel. A transport owns its kind wholly: its
 * setup, handshake and teardown, conn.tls, and its own state behind
 * `c->link`; nothing outside its file knows what that holds.
 *
 *   transport_tcp  (transport_tcp.c) a plain stream socket, TCP or Unix
 *                  domain: reads with its own event (its link) straight
 *                  into the Lua string, writes at once with sendmsg() when
 *                  nothing is queued, and leaves the bufferevent to connect
 *                  and to queue output.
 *   transport_tls  (transport_tls.c) TLS over a stream socket (TCP or
 *                  Unix): an OpenSSL bufferevent does all the I/O, since
 *                  records are encrypted; CONNECTING lasts until the
 *                  handshake is done, on the server side too. Its link
 *                  holds the client's context, name and session key.
 *
 * A Unix domain socket is the plain stream over another kind of socket:
 * what differs (it has no TCP options) belongs to the socket, not to the
 * stream, and is decided where the options are applied (conn_options.c).
 *
 * `c->transport` is a pointer, set before CONNECTING (a client's `tls`
 * option, a listener's) and replaceable on a live connection: the old one
 * released (its link freed), the new one started on the same socket.
 *
 * A transport changes the connection's state only through these calls
 * (conn.h): conn_become_open (OPEN), conn_handshaking (CONNECTING while a
 * handshake runs), conn_deliver_data / conn_deliver_buffer (bytes came),
 * conn_on_peer_eof (the peer's end), conn_due (DUE_BACKLOG: held input to
 * deliver from the loop), conn_fail / conn_note_failure (it failed), and
 * the bufferevent callbacks conn_on_written and conn_on_bev_event. It
 * reads the connection's fields freely.
 */
#ifndef EVTCP_TRANSPORT_H
#define EVTCP_TRANSPORT_H

#include <sys/types.h>
#include <sys/uio.h>

struct evtcp_conn;
struct evtcp_failure;

typedef struct conn_transport {
  const char *name;
  /* Input arrives in the bufferevent's input buffer, which then carries
   * the read timeout too (else the transport reads by itself). */
  unsigned bev_reads;
  /* An accepted socket (c->fd) starts: OPEN at once, or a handshake
   * first. server: the listener's settings for this transport. Returns
   * 0, or -1 without memory. */
  int (*accept)(struct evtcp_conn *c, const void *server);
  /* Optional. A client starts: the name and port it dials (what TLS
   * checks and resumes sessions by). Returns 0, or -1 without memory. */
  int (*dial)(struct evtcp_conn *c, const char *host, int port);
  /* A new bufferevent in c->bev to connect to the next address with.
   * Returns 0, or -1 with the reason noted (conn_note_failure). */
  int (*connect)(struct evtcp_conn *c);
  /* Reading starts (on: c->reading was just set) or stops (just cleared). */
  void (*reading)(struct evtcp_conn *c, int on);
  /* Optional. Writes iov at once, nothing being queued: the bytes taken,
   * or -1 with errno. NULL: everything goes through the bufferevent. */
  ssize_t (*write_now)(struct evtcp_conn *c, const struct iovec *iov, int count);
  /* Optional. Our side of the stream ends, just before the socket's FIN. */
  void (*end_stream)(struct evtcp_conn *c);
  /* Optional. A bufferevent event the transport explains itself: fills f
   * and returns 1 (while CONNECTING, a failure that is final: no other
   * address is tried); 0 leaves it to the connection. err: the socket's. */
  int (*explain)(struct evtcp_conn *c, short what, int err, struct evtcp_failure *f);
  /* Optional. Output bytes it holds beyond the bufferevent's (TLS, while
   * the plain output of before startTLS still flushes). */
  size_t (*pending)(const struct evtcp_conn *c);
  /* Optional (NULL: the transport keeps nothing beyond the socket). The
   * pool (pool.c): park takes the transport's live state out of an idle
   * c, freeing its bufferevent but not the socket, or returns NULL with
   * *why (bytes it holds unread); resume makes c's bufferevent on fd
   * from that state, ready to be OPEN (0, or -1 without memory); discard
   * frees a state never resumed. identity names the settings a pooled
   * connection must share with the one that takes it (TLS: the session
   * key, name and settings). */
  void *(*park)(struct evtcp_conn *c, const char **why);
  int (*resume)(struct evtcp_conn *c, evutil_socket_t fd, void *state);
  void (*discard)(void *state);
  const char *(*identity)(const struct evtcp_conn *c);
  /* Optional. Pushes conn.tls (NULL: nil). */
  void (*push_info)(lua_State *L, struct evtcp_conn *c);
  /* Frees one of its bufferevents (the connection's, or a failed
   * address's), and what the transport tied to it; never the socket. */
  void (*free_bev)(struct bufferevent *bev);
  /* On the way out (CLOSING, or replaced): frees its link, once. TLS
   * sends close_notify first when the close is graceful. No Lua. */
  void (*release)(struct evtcp_conn *c);
} conn_transport;

extern const conn_transport transport_tcp, transport_tls;

#endif
