/*
 * conn.h - the TCPConnection struct, shared by the connection's files
 * (conn.c, conn_io.c, conn_connect.c, conn_receive.c, conn_props.c) and the
 * listener's.
 *
 * Lifetime, as a state machine (API.md sections 4 and 7). `state` holds the
 * five states; each flag below that changes behaviour is placed on the
 * diagram, in the state where it can be set.
 *
 *   RESOLVING --lookup ok--> CONNECTING --connected (TLS: handshake done)--> OPEN
 *       |                        |   failed: next address, back to CONNECTING  |
 *       +--- failure, reset(), connect timeout, close() with nothing queued ---+--> CLOSING
 *   CLOSING --(from the loop) onShutdown or onError, then onTerminate--> TERMINATED
 *
 *   RESOLVING   `client->lookup` in flight (a client connection carries a
 *               conn_client, made by connect()).       anchored: CONNECTING
 *   CONNECTING  `bev` connects to one of `client->addrs`; a failed
 *               address's bev is retired (`client->retired_*`) and freed
 *               from the loop (an accepted TLS connection, whose CONNECTING
 *               is its handshake, has no other address); `early`
 *               holds what send() queued. close() with something queued
 *               sets close_wanted and connecting goes on.
 *                                                          anchored: CONNECTING,
 *                                                          OUTPUT (early data)
 *   OPEN        was_open is set (dial's answer). Two directions, each with
 *               its own sub-states:
 *
 *     input:  READING (`reading`: read_ev added, or TLS: the bev reads)
 *               --pause()--> paused --resume()--> READING
 *               --highWaterMark kept, nobody reading--> input_full --drained--> READING
 *               --the peer's FIN--> peer_eof, end_due: the kept input goes
 *                 to onData, then onEnd runs (a pause() between holds both
 *                 back until resume(); in_on_end: a send() from them still
 *                 queues); then, unless allow_half_open, close as close() does
 *             `receiving`: bytes go to `input` for receive(), not to onData.
 *             `input_due`: bytes kept while there was no onData wait for a
 *             new one (delivered from the loop). `backlog_due`: the
 *             transport held input while paused (TLS: decrypted bytes);
 *             resume() has the loop deliver them.
 *     output: WRITABLE --send() queued--> drain_wanted --flushed--> drain_due
 *                 (onDrain from the loop)
 *               --shutdown()--> write_shut_wanted --flushed--> write_shut_done
 *                 (FIN sent; TLS: close_notify first); reading goes on until
 *                 the peer's FIN
 *               --close()--> close_wanted --flushed--> CLOSING
 *                                                          anchored: CALLBACKS
 *                                                          (its handler has a
 *                                                          callback), OUTPUT
 *                                                          (queued output)
 *   CLOSING     the socket and the bev are released; `failure` says why if
 *               it failed; finish_due: the final callbacks wait for the
 *               loop. reset() sets aborted (no close_notify, SO_LINGER 0).
 *               `closed` (the Lua-visible property) is set just before
 *               onShutdown/onError.                        anchored: PENDING
 *   TERMINATED  nothing is owned but `input` (what receive() may still
 *               read) and the address; __gc frees the rest. Not anchored.
 *
 * In every state, ANCHOR_PENDING while the connection sits in the loop's
 * deferred queue, ANCHOR_WAITER while a coroutine waits on it. The other
 * fields (no_delay, tls_verify, keep_alive, the timeouts, high_water) are
 * settings, read where they apply, never states; `tls` picks the transport
 * (transport.h) once, before CONNECTING.
 *
 * Callbacks: onConnection when OPEN is reached (client side) or when the
 * listener adopts the socket (server side; over TLS when its handshake is
 * done); onData and onEnd while OPEN; the rest on the way out of CLOSING.
 * Methods never run callbacks: they move the state and queue the connection
 * (object_defer) so the loop delivers them.
 *
 * Data path: what depends on how the bytes travel (a plain socket, TLS)
 * is the transport's (transport.h), picked by the `tls` bit; the rest of
 * the data path is conn_io.c, and knows no transport. Input goes to the
 * Lua string in one copy; output is written at once when nothing is
 * queued (plain sockets), and only what the kernel does not take is copied
 * into the bufferevent's output (long strings are queued by reference).
 */
#ifndef EVTCP_CONN_H
#define EVTCP_CONN_H

#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "evtcp.h"
#include "tls.h"
#include "transport.h"

#define READ_CHUNK (64 * 1024)  /* bytes read per recv(), and handed to one onData */
#define READ_ROUNDS 8           /* recv() calls per wake-up at most */

typedef enum {
  CONN_RESOLVING, CONN_CONNECTING, CONN_OPEN, CONN_CLOSING, CONN_TERMINATED
} conn_state;

typedef union evtcp_addr {
  struct sockaddr sa;
  struct sockaddr_in in;
  struct sockaddr_in6 in6;
} evtcp_addr;

/* The callback style's framing (conn_frame.c): onData gets n bytes
 * (size > 0), what comes before a delimiter, or else a line. */
typedef struct conn_framing {
  size_t size;
  size_t delim_len;
  char delim[];
} conn_framing;

enum { FRAME_PARTIAL, FRAME_WHOLE, FRAME_TOO_LONG };

/* What only a client connection needs, until it is open and after: made
 * by connect(), so an accepted connection does not carry it. */
typedef struct conn_client {
  evtcp_lookup *lookup;
  struct evutil_addrinfo *addrs, *next_addr;
  struct event *connect_timer;    /* the `timeout` option, until OPEN */
  double connect_timeout;         /* < 0: none */
  struct bufferevent *retired_bev;/* a failed address's, freed from the loop */
  SSL *retired_ssl;
  evutil_socket_t retired_fd;
  int bind_port;                  /* localPort, 0: the system's; -1: no local bind */
  evtcp_addr bind_addr;           /* localAddress (family 0: none) */
  SSL_CTX *tls_ctx;               /* for each address tried */
  char *tls_host;                 /* SNI and the name checked */
  char *tls_session_key;          /* "host:port|name|verify|settings", its sessions' key */
  unsigned tls_config_hash;       /* ca, cert, key, alpn: sessions are per settings */
} conn_client;

/* Fields ordered to leave almost no padding between them (256 bytes on
 * LP64): this struct is most of an idle connection's memory. */
typedef struct evtcp_conn {
  evtcp_object obj;
  conn_state state;
  unsigned closed : 1;            /* the Lua-visible `closed` */
  unsigned write_shut_wanted : 1; /* shutdown(): close our side once flushed */
  unsigned write_shut_done : 1;
  unsigned close_wanted : 1;      /* close(): finish once flushed */
  unsigned peer_eof : 1;          /* the peer's FIN has been read */
  unsigned paused : 1;            /* pause(): the program stopped reading */
  unsigned input_full : 1;        /* highWaterMark reached on `input` */
  unsigned reading : 1;           /* read_ev is added */
  unsigned no_delay : 1;
  unsigned drain_wanted : 1;      /* a send queued bytes: onDrain once flushed */
  unsigned drain_due : 1;         /* onDrain to deliver from the loop */
  unsigned finish_due : 1;        /* CLOSING: callbacks to deliver */
  unsigned receiving : 1;         /* read with receive(): input is buffered */
  unsigned was_open : 1;          /* OPEN was reached (dial's answer) */
  unsigned input_due : 1;         /* kept input to hand to a new onData */
  unsigned allow_half_open : 1;   /* after the peer's FIN, the program closes */
  unsigned in_on_end : 1;         /* onEnd (or the data before it) runs: send() still queues */
  unsigned end_due : 1;           /* the FIN was read; onEnd waits for the kept input */
  unsigned tls : 1;               /* the transport: TLS, or a plain stream */
  unsigned tls_verify : 1;
  unsigned backlog_due : 1;       /* input the transport held while paused */
  unsigned aborted : 1;           /* reset(): no close_notify */
  unsigned tls_write_reset : 1;   /* TLS: writing close_notify met the peer's reset */
  unsigned corked : 1;            /* sends go to loop->cork until the frames are delivered */
  evutil_socket_t fd;             /* the socket, once connected or accepted; -1.
                                   * Always ours: closed by conn_release, so __gc
                                   * closes it at once (libevent defers its own) */
  unsigned sent_run;              /* loop->lua_runs at the last send written at once */
  struct bufferevent *bev;        /* connecting, or output queued: see conn.c */
  SSL *ssl;                       /* over TLS: ours too, freed after the bev */
  uint64_t bytes_read;            /* payload bytes received (after TLS) */
  uint64_t bytes_sent;            /* payload bytes send() accepted, less any dropped */
  size_t line_scanned;            /* input bytes known to hold no line end or delimiter */
  struct event *read_ev;          /* a plain stream's reads (transport_tcp.c) */
  struct evbuffer *early;         /* sends before the socket exists */
  struct evbuffer *input;         /* bytes kept for receive() */
  evtcp_failure *failure;         /* what onError will report */
  struct evtcp_listener *listener;/* the listener that accepted it */
  double read_timeout, write_timeout; /* <= 0: none (0 is "no timeout", as everywhere) */
  size_t high_water;
  evtcp_addr peer, local;
  int keep_alive;                 /* seconds, 0: off */
  char *unix_path;                /* a Unix socket: its path ("/p" or "@name"), else NULL */
  conn_client *client;            /* client connections only, else NULL */
  conn_framing *framing;          /* onData's frames; NULL: chunks as they come */
} evtcp_conn;

size_t conn_buffered(const evtcp_conn *c);
void conn_apply_socket_options(evtcp_conn *c);
void conn_read_options(lua_State *L, evtcp_conn *c, int handler_index, int arg, int client);
void conn_kept_input_due(evtcp_conn *c);
void conn_set_no_delay(evtcp_conn *c, int on);
void conn_set_keep_alive(evtcp_conn *c, int seconds);
int conn_handler_has_callbacks(lua_State *L, int handler_index);
void conn_props_open(lua_State *L, const luaL_Reg *methods, const luaL_Reg *meta, const void *mt_key);
void listener_local_address(struct evtcp_listener *l, evtcp_addr *out);
SSL_CTX *listener_tls_context(struct evtcp_listener *l);
const char *listener_unix_path(struct evtcp_listener *l);

/* Shared by the connection's files: conn.c (state machine, methods,
 * collection), conn_io.c (read path), conn_send.c (write path),
 * conn_connect.c (connecting),
 * conn_receive.c (blocking-style reads) and the transports. */
int conn_note_failure(evtcp_conn *c, int err, const char *component);
void conn_deliver_data(evtcp_conn *c, const char *buf, size_t n);
void conn_deliver_buffer(evtcp_conn *c, struct evbuffer *in);
void conn_on_peer_eof(evtcp_conn *c);
void conn_finish_input(evtcp_conn *c);
int tls_client_begin(evtcp_conn *c, const char *host, int port);
void conn_on_written(struct bufferevent *bev, void *arg);
void conn_on_bev_event(struct bufferevent *bev, short what, void *arg);
void conn_free_bev(struct bufferevent **bev, SSL **ssl, evutil_socket_t *fd);
void conn_end(evtcp_conn *c, const evtcp_failure *failure, int rst);
evtcp_conn *conn_alloc(lua_State *L, evtcp_loop *loop);
void conn_adopt_handler(lua_State *L, evtcp_conn *c, int handler_index, int arg, int client);
void conn_start_reading(evtcp_conn *c);
int conn_handler_has(lua_State *L, const char *name);
void conn_try_next_address(evtcp_conn *c);
void conn_input_drained(evtcp_conn *c);
ev_ssize_t conn_find_delimiter(evtcp_conn *c, size_t have, const char *delim, size_t dlen);
int conn_find_line(evtcp_conn *c, size_t have, size_t *line, size_t *eol);
int conn_next_frame(evtcp_conn *c, size_t *len, size_t *skip);
size_t conn_input_limit(const evtcp_conn *c);
void conn_frame_too_long(evtcp_conn *c);
int conn_framing_parse(lua_State *L, int index, conn_framing **out, const char **why);
void conn_push_framing(lua_State *L, const evtcp_conn *c);
void conn_set_framing(evtcp_conn *c, conn_framing *f);
int conn_read(lua_State *L);
int conn_receive(lua_State *L);
int conn_receive_until(lua_State *L);
int conn_take(lua_State *L);
int conn_state_name(lua_State *L);
int conn_flags(lua_State *L);
int conn_send(lua_State *L);
int conn_is_live(const evtcp_conn *c);
int conn_become_open(evtcp_conn *c);
void conn_begin(lua_State *L, evtcp_conn *c, const char *host, int port);
void conn_bev_timeouts(evtcp_conn *c);
void conn_deliver(evtcp_conn *c, evtcp_event_type type);
int conn_deliver_bytes(evtcp_conn *c, const char *data, size_t len, int *ran);
int conn_deliver_kept(evtcp_conn *c);
void conn_fail(evtcp_conn *c, int err, const char *component);
void conn_flushed(evtcp_conn *c, int from_loop);
void conn_cork(evtcp_conn *c);
void conn_uncork(evtcp_conn *c);
int conn_push(evtcp_conn *c);
void conn_retire_bev(evtcp_conn *c);
void conn_stop_reading(evtcp_conn *c);
void conn_update_read_timeout(evtcp_conn *c);

/* The connection's transport: the bit costs no memory a pointer would. */
static inline const conn_transport *conn_transport_of(const evtcp_conn *c) {
  return c->tls ? &transport_tls : &transport_tcp;
}

#endif
