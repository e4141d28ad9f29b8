/*
 * conn.h - the TCPConnection struct, shared by the connection's files:
 *   conn.c          the lifetime below, the methods, the due notices, __gc
 *   conn_read.c     the read path: transport bytes to onData, frames, kept
 *                   input and receive(); the high-water-mark rule
 *   conn_send.c     the write path: send(), corking, onDrain, flushed
 *   conn_events.c   libevent's events (connected, timeouts, errors), OPEN
 *   conn_connect.c  a client on its way to OPEN
 *   conn_receive.c  receive() by pattern and receiveUntil (blocking style)
 *   conn_upgrade.c  startTLS: a live connection's transport replaced
 *   conn_frame.c    frame ends in the input; the `framing` option
 *   conn_options.c  the options of a handler table, parsed once, applied
 *   conn_props.c    the properties and the metatable
 * and by the transports (transport.h), each of which owns its kind wholly.
 *
 * Lifetime, as a state machine (API.md sections 4 and 7). `state` holds
 * the five states; OPEN has two sides, each an enum of its own, and a few
 * flags; every one that changes behaviour is on this diagram.
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
 *               is its handshake, has no other address); `early` holds
 *               what send() queued. close() with something queued sets
 *               output CLOSING and connecting goes on.
 *                                                          anchored: CONNECTING,
 *                                                          OUTPUT (early data)
 *   OPEN        `was_open` is set (dial's answer, and whether a close
 *               lingers). Two sides:
 *
 *     input (`input_end`, conn_input_end):
 *       INPUT_OPEN --the peer's FIN--> INPUT_EOF --kept input to onData-->
 *         (INPUT_EOF_DATA while it runs) --> INPUT_ON_END (onEnd runs)
 *         --> INPUT_ENDED; then, unless allowHalfOpen, close as close()
 *         does. A pause() during INPUT_EOF_DATA holds onEnd back until
 *         resume(): onData never follows onEnd. In EOF_DATA and ON_END a
 *         send() still queues.
 *       While INPUT_OPEN the transport reads (`reading`) unless held:
 *         `paused` (pause() .. resume()), `input_full` (highWaterMark
 *         kept, nobody reading it), or output CLOSING.
 *       Who takes the bytes: onData, or with `receiving` (receive() was
 *         called) the `input` buffer; `framing` cuts onData's frames from
 *         `input` too.
 *     output (`output`, conn_output):
 *       OUTPUT_OPEN --shutdown()--> OUTPUT_SHUTTING --flushed--> OUTPUT_SHUT
 *         (`fin_sent`: our FIN, after TLS's close_notify; reading goes on)
 *     `upgrading` (conn_upgrade.c): startTLS() replaced the plain transport
 *       by TLS on the same socket; until the handshake is done no input is
 *       delivered and sends queue encrypted; then onUpgrade. A failure
 *       ends the connection as any other.
 *       OUTPUT_OPEN or SHUT(TING) --close()--> OUTPUT_CLOSING --flushed--> CLOSING
 *       `drain_wanted`: a send() queued bytes, onDrain once flushed.
 *       `corked`: sends gather in loop->cork while a batch of frames is
 *         delivered, written together after it (conn_send.c).
 *                                                          anchored: CALLBACKS
 *                                                          (its handler has a
 *                                                          callback), OUTPUT
 *                                                          (queued output)
 *   CLOSING     the socket and the bev are released; `failure` says why if
 *               it failed. reset() sets `aborted` (no close_notify, SO_LINGER
 *               0). A close() before the peer's FIN lingers (linger.c).
 *               The Lua-visible `closed` is true from just before
 *               onShutdown/onError.                        anchored: PENDING
 *   TERMINATED  nothing is owned but `input` (what receive() may still
 *               read) and the address; __gc frees the rest. Not anchored.
 *
 * Due notices: `due` is the one queue of what the loop delivers later
 * (methods never run callbacks): DUE_INPUT kept input for a new onData,
 * DUE_BACKLOG input the transport held while paused, DUE_DRAIN onDrain,
 * DUE_FINISH the final callbacks. conn_due() sets them; conn.c's
 * conn_run_pending delivers them, in that order.
 *
 * In every state, ANCHOR_PENDING while due notices wait, ANCHOR_WAITER
 * while a coroutine waits on it. The settings (no_delay, allow_half_open,
 * keep_alive, the timeouts, high_water) change no state.
 *
 * Data path: the transport (`transport`, with its own state in `link`)
 * carries the bytes; the connection's files know no transport. Input goes
 * to the Lua string in one copy; output is written at once when nothing is
 * queued (plain sockets), and only what the kernel does not take is copied
 * into the bufferevent's output (long strings are queued by reference).
 */
#ifndef EVTCP_CONN_H
#define EVTCP_CONN_H

#include <stdint.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "evtcp.h"
#include "transport.h"

#define READ_CHUNK (64 * 1024)  /* bytes read per recv(), and handed to one onData */
#define READ_ROUNDS 8           /* recv() calls per wake-up at most */

typedef enum {
  CONN_RESOLVING, CONN_CONNECTING, CONN_OPEN, CONN_CLOSING, CONN_TERMINATED
} conn_state;

/* OPEN's input side: the peer's end, and onEnd. */
typedef enum {
  INPUT_OPEN, INPUT_EOF, INPUT_EOF_DATA, INPUT_ON_END, INPUT_ENDED
} conn_input_end;

/* OPEN's output side: our end. */
typedef enum {
  OUTPUT_OPEN, OUTPUT_SHUTTING, OUTPUT_SHUT, OUTPUT_CLOSING
} conn_output;

/* What the loop delivers later (conn_due). */
enum { DUE_INPUT = 1, DUE_BACKLOG = 2, DUE_DRAIN = 4, DUE_FINISH = 8 };

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

/* The options of a handler table (conn_options.c), parsed once: a
 * listener's defaults when it is made, a handler's when it is adopted.
 * `given` says which the table had; only those are applied. */
enum {
  OPT_NO_DELAY = 1, OPT_HALF_OPEN = 2, OPT_TIMEOUT = 4, OPT_READ_TIMEOUT = 8,
  OPT_WRITE_TIMEOUT = 16, OPT_KEEP_ALIVE = 32, OPT_HIGH_WATER = 64, OPT_FRAMING = 128,
  OPT_USER_TIMEOUT = 256
};

/* TCP keepalive: idle seconds before the first probe (-1 the system's, 0
 * off), then a probe every `interval` seconds, `count` unanswered ones
 * failing the connection (0: the system's). */
typedef struct conn_keepalive {
  int idle;
  unsigned short interval, count;
} conn_keepalive;

typedef struct conn_options {
  unsigned given;                 /* OPT_* bits */
  int no_delay, allow_half_open;
  double connect_timeout, read_timeout, write_timeout; /* seconds; 0: none */
  conn_keepalive keep_alive;
  unsigned user_timeout_ms;       /* TCP_USER_TIMEOUT; 0: the system's */
  size_t high_water;
  conn_framing *framing;          /* owned; NULL: raw chunks */
} conn_options;

/* What only a client connection needs, until it is open and after: made
 * by connect(), so an accepted connection does not carry it. */
typedef struct conn_race conn_race; /* conn_race.c */

typedef struct conn_client {
  evtcp_lookup *lookup;
  conn_race *race;                /* the attempts at addrs, until OPEN */
  char *pool_key;                 /* the pool it is taken from and kept in */
  const conn_transport *pool_transport; /* the transport the key was made for */
  struct pool_entry *parked;      /* taken from the pool: resumed from the loop */
  double attempt_delay;           /* attemptDelay: seconds between attempts */
  struct evutil_addrinfo *addrs;  /* the name's, until OPEN */
  struct event *connect_timer;    /* the `timeout` option, until OPEN */
  double connect_timeout;         /* < 0: none */
  struct bufferevent *retired_bev;/* a failed address's, freed from the loop */
  evutil_socket_t retired_fd;
  char *host;                     /* the name dialled: what startTLS verifies */
  int bind_port;                  /* localPort, 0: the system's; -1: no local bind */
  evtcp_addr bind_addr;           /* localAddress (family 0: none) */
} conn_client;

/* What a listener hands conn_adopt_accepted: the client and how the
 * listener's connections start. The connection keeps `live` and counts
 * itself out of it when it ends; it knows nothing else of the listener. */
typedef struct conn_accepted {
  evutil_socket_t fd;
  evtcp_addr peer, local;         /* local: zeroed for a wildcard listener */
  const char *unix_path;          /* a Unix listener's path, or NULL */
  const conn_transport *transport;
  const void *server;             /* the transport's server settings (TLS) */
  const conn_options *defaults;   /* the listener's options */
  int *live;                      /* the listener's count of live connections */
} conn_accepted;

/* Fields ordered to leave almost no padding between them (256 bytes on
 * LP64): this struct is most of an idle connection's memory. */
typedef struct evtcp_conn {
  evtcp_object obj;
  conn_state state;
  unsigned char input_end;        /* conn_input_end */
  unsigned char output;           /* conn_output */
  unsigned char due;              /* DUE_* */
  unsigned reading : 1;           /* the transport reads */
  unsigned paused : 1;            /* pause(): the program stopped reading */
  unsigned input_full : 1;        /* highWaterMark reached on `input` */
  unsigned receiving : 1;         /* read with receive(): input is buffered */
  unsigned was_open : 1;          /* OPEN was reached */
  unsigned drain_wanted : 1;      /* a send queued bytes: onDrain once flushed */
  unsigned fin_sent : 1;          /* our FIN is sent */
  unsigned corked : 1;            /* sends go to loop->cork */
  unsigned aborted : 1;           /* reset(): no close_notify */
  unsigned upgrading : 1;         /* startTLS(): OPEN, the handshake not yet done */
  unsigned no_delay : 1;          /* settings, from here on */
  unsigned allow_half_open : 1;   /* after the peer's FIN, the program closes */
  unsigned fast_open : 1;         /* a client's first data goes in the SYN */
  unsigned pooled : 1;            /* setKeepAlive detached it: methods raise */
  evutil_socket_t fd;             /* the socket, once connected or accepted; -1.
                                   * Always ours: closed by conn_release, so __gc
                                   * closes it at once (libevent defers its own) */
  unsigned sent_run;              /* loop->lua_runs at the last send written at once */
  struct bufferevent *bev;        /* connecting, or output queued: see conn_send.c */
  const conn_transport *transport;/* how the bytes travel (transport.h) */
  void *link;                     /* the transport's own state */
  uint64_t bytes_read;            /* payload bytes received (after TLS) */
  uint64_t bytes_sent;            /* payload bytes send() accepted, less any dropped */
  size_t line_scanned;            /* input bytes known to hold no line end or delimiter */
  struct evbuffer *early;         /* sends before the socket exists */
  struct evbuffer *input;         /* bytes kept for receive() and frames */
  evtcp_failure *failure;         /* what onError will report */
  int *live;                      /* the accepting listener's count, or NULL */
  double read_timeout, write_timeout; /* <= 0: none (0 is "no timeout", as everywhere) */
  size_t high_water;
  evtcp_addr peer, local;
  conn_keepalive keep_alive;      /* idle -1: the system's, 0: off */
  unsigned user_timeout_ms;       /* TCP_USER_TIMEOUT; 0: the system's */
  char *unix_path;                /* a Unix socket: its path ("/p" or "@name"), else NULL */
  conn_client *client;            /* client connections only, else NULL */
  conn_framing *framing;          /* onData's frames; NULL: chunks as they come */
  unsigned reused_times;          /* reusedTimes: how often taken from the pool */
} evtcp_conn;

/* Has the peer's FIN been read? */
static inline int conn_peer_ended(const evtcp_conn *c) { return c->input_end != INPUT_OPEN; }
/* Are the kept input and onEnd still to come after the FIN? */
static inline int conn_end_due(const evtcp_conn *c) {
  return c->input_end == INPUT_EOF || c->input_end == INPUT_EOF_DATA;
}
static inline int conn_is_live(const evtcp_conn *c) { return c->state < CONN_CLOSING; }

/* conn.c: the lifetime */
extern object_type conn_type;
evtcp_conn *conn_check(lua_State *L, int index);
evtcp_conn *conn_check_any(lua_State *L, int index);
evtcp_conn *conn_alloc(lua_State *L, evtcp_loop *loop);
void conn_adopt_handler(lua_State *L, evtcp_conn *c, int handler_index);
int conn_push(evtcp_conn *c);
void conn_deliver(evtcp_conn *c, evtcp_event_type type);
void conn_notice(const evtcp_conn *c, evtcp_notice *n, evtcp_event_type type);
void conn_due(evtcp_conn *c, unsigned due);
void conn_end(evtcp_conn *c, const evtcp_failure *failure, int rst);
void conn_fail(evtcp_conn *c, int err, const char *component);
int conn_note_failure(evtcp_conn *c, int err, const char *component);
void conn_free_bev(evtcp_conn *c, struct bufferevent **bev, evutil_socket_t *fd);
void conn_retire_bev(evtcp_conn *c);
int conn_handler_has(lua_State *L, const char *name);
int conn_handler_has_callbacks(lua_State *L, int handler_index);
void conn_handshaking(evtcp_conn *c);

/* conn_read.c: the read path */
void conn_start_reading(evtcp_conn *c);
void conn_stop_reading(evtcp_conn *c);
void conn_update_read_timeout(evtcp_conn *c);
void conn_deliver_data(evtcp_conn *c, const char *buf, size_t n);
void conn_deliver_buffer(evtcp_conn *c, struct evbuffer *in);
void conn_deliver_backlog(evtcp_conn *c);
void conn_on_peer_eof(evtcp_conn *c);
void conn_finish_input(evtcp_conn *c);
int conn_deliver_kept(evtcp_conn *c);
void conn_kept_input_due(evtcp_conn *c);
void conn_input_drained(evtcp_conn *c);
void conn_input_allow_more(evtcp_conn *c);
void conn_input_take(lua_State *L, evtcp_conn *c, size_t n);

/* conn_send.c: the write path */
size_t conn_buffered(const evtcp_conn *c);
int conn_send(lua_State *L);
void conn_flushed(evtcp_conn *c, int from_loop);
void conn_on_written(struct bufferevent *bev, void *arg);
void conn_cork(evtcp_conn *c);
void conn_uncork(evtcp_conn *c);

/* conn_events.c: libevent's events, OPEN */
int conn_become_open(evtcp_conn *c);
void conn_on_bev_event(struct bufferevent *bev, short what, void *arg);
void conn_on_connected(evtcp_conn *c);
void conn_bev_timeouts(evtcp_conn *c);

/* conn_connect.c: a client's socket, its failure, its winner's transport */
evutil_socket_t conn_own_socket(const evtcp_conn *c, int family, int *err);
void conn_connect_failed(evtcp_conn *c);
void conn_connected_socket(evtcp_conn *c, evutil_socket_t fd);

/* pool.c: conn:setKeepAlive, and the pool dial and connect take from */
int conn_keep_in_pool(lua_State *L);
int pool_take(evtcp_conn *c);
void pool_entry_free(struct pool_entry *e);

/* conn_race.c: Happy Eyeballs over a name's addresses */
void conn_race_start(evtcp_conn *c, struct evutil_addrinfo *addrs);
void conn_try_next_address(evtcp_conn *c);
void conn_race_free(conn_race *r);

/* conn_upgrade.c: startTLS */
int conn_start_tls(lua_State *L);
void conn_upgrade_done(evtcp_conn *c);

/* conn_frame.c */
ev_ssize_t conn_find_delimiter(evtcp_conn *c, size_t have, const char *delim, size_t dlen);
int conn_find_line(evtcp_conn *c, size_t have, size_t *line, size_t *eol);
int conn_next_frame(evtcp_conn *c, size_t *len, size_t *skip);
void conn_frame_too_long(evtcp_conn *c);
int conn_framing_parse(lua_State *L, int index, conn_framing **out, const char **why);
void conn_push_framing(lua_State *L, const evtcp_conn *c);
void conn_set_framing(evtcp_conn *c, conn_framing *f);

/* conn_options.c */
void conn_options_read(lua_State *L, int h, int arg, conn_options *o);
void conn_options_free(conn_options *o);
int conn_options_apply(evtcp_conn *c, const conn_options *o, int copy_framing);
void conn_apply_socket_options(evtcp_conn *c);
void conn_set_no_delay(evtcp_conn *c, int on);
void conn_set_keep_alive(evtcp_conn *c, const conn_keepalive *k);
const char *conn_keep_alive_value(lua_State *L, int index, conn_keepalive *k);
void conn_push_keep_alive(lua_State *L, const evtcp_conn *c);
void conn_set_user_timeout(evtcp_conn *c, unsigned ms);
const char *conn_user_timeout_value(lua_State *L, int index, unsigned *ms);

/* conn_sockopt.c: setOption / getOption by name */
int conn_set_option(lua_State *L);
int conn_get_option(lua_State *L);

/* conn_receive.c */
int conn_read(lua_State *L);
int conn_receive(lua_State *L);
int conn_receive_until(lua_State *L);
int conn_take(lua_State *L);
int conn_state_name(lua_State *L);
int conn_flags(lua_State *L);

/* conn_props.c */
void conn_props_open(lua_State *L, const luaL_Reg *methods, const luaL_Reg *meta, object_type *t);

#endif
