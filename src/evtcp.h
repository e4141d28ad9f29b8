/*
 * evtcp.h - the private header of evtcp.core.
 *
 * One C file per Lua type:
 *   loop.c        the per-state event_base, run/step/stop, the callback
 *                 trampoline, Ctrl-C, the one check of seconds
 *   object.c      what every object has: its type (metatable, __gc, type
 *                 check), registry, anchors, the deferred-work queue,
 *                 waiters, errors (object.h)
 *   conn*.c       TCPConnection (conn.h lists its files)
 *   transport_tcp.c the plain stream below a connection (transport.h)
 *   transport_tls.c TLS below a connection; client sessions resumed
 *   listener_proxy.c  a proxyProtocol listener's clients until their header is read
 *   proxy.c       the PROXY protocol header reader (listeners)
 *   listener.c    TCPListener
 *   event.c       TCPEvent, the immutable event objects handed to callbacks
 *   timer.c       evtcp.after timers
 *   linger.c      the lingering close: closed sockets read until the peer's FIN
 *   error.c       error objects and the errno -> kind mapping
 *   tls.c         TLS contexts and sessions (OpenSSL), conn.tls
 *   resolve.c     asynchronous name resolution (evdns), no Lua in it
 *   resolver.c    core.lookup: one lookup as a Lua object (evtcp.resolve)
 *   sockaddr.c    address helpers
 *   socket.c      making sockets: listening (TCP, Unix), adopting, bound
 *   module.c      luaopen_evtcp_core
 *
 * Lua is entered from libevent only on the main thread, through
 * loop_pcall() (callbacks) or loop_resume_thread() (a coroutine waiting in
 * C), and never from __gc.
 */
#ifndef EVTCP_H
#define EVTCP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <lua.h>
#include <lauxlib.h>
#include <event2/event.h>
#include <event2/bufferevent.h>
#include <event2/buffer.h>
#include <event2/listener.h>
#include <event2/dns.h>
#include <event2/util.h>

#define EVTCP_NSIG 32     /* signal numbers evtcp.signal may catch are below */

#define EVTCP_REENTER_MSG "evtcp: the loop is already running (use a coroutine)"

/* Uservalue slots shared by connections and listeners. */
enum {
  UV_HANDLER = 1, /* the options table: callbacks are looked up on it */
  UV_FIELDS,      /* user fields, created on first assignment */
  UV_ERRORS,      /* the `errors` array, created on first error */
  UV_WAITER,      /* the coroutines waiting on this object: loop.c */
  UV_OWNER,       /* connections: the listener that accepted them */
  UV_LISTENER_COUNT = UV_WAITER,
  UV_CONN_COUNT = UV_OWNER
};

typedef struct evtcp_loop evtcp_loop;
#define LOOP_CLOSERS 8 /* files that keep state in the loop (loop_at_close) */
typedef struct evtcp_linger evtcp_linger;

#include "object.h"

/* A DNS lookup in flight; outlives its connection when cancelled (evdns
 * reports cancellation later), so it is a separate allocation. */
typedef struct evtcp_lookup evtcp_lookup;

struct evtcp_loop {
  lua_State *L;            /* the main thread: callbacks run on it */
  struct event_base *base;
  struct evdns_base *dns;  /* created on the first host-name lookup */
  struct event *pending_ev;
  evtcp_object *pending_head;
  evtcp_lookup *lookups;   /* in flight, freed at lua_close if still there */
  int running;             /* inside run/step/blocking drive */
  int stop_requested;
  int errors_ref;          /* queue of errors raised by callbacks, not yet raised */
  int errors_head, errors_tail; /* its oldest and newest index; empty: head > tail */
  int active;              /* anchored objects: run() returns at 0 */
  int closing;             /* lua_close is tearing the loop down */
  struct event *sigint_ev; /* Ctrl-C while the loop waits: loop.c */
  void (*sigint_prev)(int); /* the handler sigint_ev stands in for, while it is added */
  int interrupted;         /* SIGINT came while the loop ran */
  struct event *signal_ev[EVTCP_NSIG]; /* evtcp.signal: one event per signal */
  int weak_ref;            /* weak table: lightuserdata -> userdata */
  lua_Integer wait_seq;    /* orders waiters: oldest woken first */
  struct tls_cached *tls_sessions; /* TLS client sessions for resumption: tls.c */
  unsigned lua_runs;       /* counts entries into Lua from the loop (callbacks, resumes) */
  struct evbuffer *cork;   /* the replies to a batch of frames, written at once: conn_send.c */
  void *cork_owner;        /* the connection corked, if any */
  uint64_t bytes_scanned;  /* input searched for line ends and delimiters (specs) */
  struct evtcp_linger *lingering; /* closed sockets read until the peer's FIN: linger.c */
  struct pool_entry *pool; /* idle client connections kept for reuse: pool.c */
  void (*closers[LOOP_CLOSERS])(evtcp_loop *loop); /* loop_at_close */
  int closer_count;
};

/* A Lua string with a NUL inside: C would read it cut at the NUL (a name
 * checked against an allow-list would then connect elsewhere), so names and
 * paths that hold one are argument errors. */
static inline int string_has_nul(lua_State *L, int idx) {
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  return s != NULL && strlen(s) != n;
}

/* A socket error that means "try again later", not a failure. */
#define io_would_block(err) ((err) == EAGAIN || (err) == EWOULDBLOCK || (err) == EINTR)

/* ---- loop.c ---- */
evtcp_loop *loop_get(lua_State *L);
evtcp_loop *loop_get_unchecked(lua_State *L);
evtcp_loop *loop_open(lua_State *L);
void loop_at_close(evtcp_loop *loop, void (*fn)(evtcp_loop *loop));
int loop_pcall(evtcp_loop *loop, int nargs, int nresults);
int loop_has_error(evtcp_loop *loop);
#define EVTCP_MAX_SECONDS 1e9
int seconds_get(lua_State *L, int index, double *s);
double seconds_check(lua_State *L, int arg, const char *what);
struct timeval seconds_tv(double s);
void loop_push_scheduler(lua_State *L, int i);
int loop_is_spawned(lua_State *L);
void loop_resume_thread(evtcp_loop *loop, lua_State *L);


/* ---- event.c ---- */
typedef enum {
  EVT_CONNECTION, EVT_DATA, EVT_ERROR, EVT_CLOSE, EVT_TERMINATE, EVT_DRAIN, EVT_END, EVT_UPGRADE,
  EVT_COUNT
} evtcp_event_type;

/* What a libevent callback wants delivered: built into a TCPEvent inside
 * the protected call, so that allocation failures are Lua errors there. */
typedef struct evtcp_notice {
  evtcp_event_type type;
  const char *data;        /* EVT_DATA: the bytes */
  size_t len;
  const struct sockaddr *peer; /* ip and port of the remote end, or NULL */
  const char *path;        /* a Unix socket's path (event.ip), or NULL */
  int handled;             /* set by event_dispatch if a callback ran */
  /* EVT_DATA: called once the bytes are copied into the event, before the
   * callback runs (input taken from a buffer is consumed then), or NULL */
  void (*copied)(void *arg);
  void *copied_arg;
} evtcp_notice;

/* A notice of type with nothing else set yet. */
static inline void notice_init(evtcp_notice *n, evtcp_event_type type) {
  memset(n, 0, sizeof *n);
  n->type = type;
}

void event_open(lua_State *L);
extern const char *const event_callback_names[EVT_COUNT]; /* "onConnection"... by type */
int event_deliver(evtcp_loop *loop, evtcp_notice *notice, int nargs, int nresults);

/* ---- error.c ---- */
typedef enum {
  KIND_REFUSED, KIND_UNREACHABLE, KIND_DNS, KIND_TIMEOUT, KIND_RESET,
  KIND_TLS, KIND_ACCEPT, KIND_IO
} evtcp_kind;

typedef struct evtcp_failure {
  evtcp_kind kind;
  int code;
  const char *component;   /* "evtcp", "libevent", "dns", "openssl" */
  char message[256];
  char name[64];           /* errName: "ECONNREFUSED", "EAI_NONAME", OpenSSL's reason */
} evtcp_failure;

void failure_from_errno(evtcp_failure *f, int err, const char *component);
void failure_from_dns(evtcp_failure *f, int gai_code);
void failure_name_reason(evtcp_failure *f, const char *reason);
void failure_set(evtcp_failure *f, evtcp_kind kind, int code, const char *component, const char *msg);
void error_push(lua_State *L, const evtcp_failure *f);
void error_open(lua_State *L);

/* ---- resolve.c ---- */
typedef void (*lookup_cb)(void *owner, int gai_code, struct evutil_addrinfo *addrs);
evtcp_lookup *lookup_start(evtcp_loop *loop, const char *host, const char *port,
                           lookup_cb cb, void *owner);
void lookup_cancel(evtcp_lookup *lookup);
void resolve_close(evtcp_loop *loop);
int resolve_add_hosts(evtcp_loop *loop, const char *path);

/* ---- linger.c ---- */
void linger_close(evtcp_loop *loop, evutil_socket_t fd);
void linger_close_all(evtcp_loop *loop);
void pool_close_all(evtcp_loop *loop); /* pool.c */

/* ---- tls.c, as module.c needs it ---- */
void tls_cache_free_all(evtcp_loop *loop);

/* ---- resolver.c ---- */
void resolver_open(lua_State *L);

/* ---- socket helpers (sockaddr.c) ---- */
const char *sockaddr_unbracket(const char *host, char *buf, size_t size);
int sockaddr_parse(const char *host, int port, struct sockaddr_storage *ss, int *len);
void sockaddr_push_ip(lua_State *L, const struct sockaddr *sa);
int sockaddr_port(const struct sockaddr *sa);
struct sockaddr_un;
int sockaddr_is_unix(const char *spec);
int sockaddr_unix_parse(const char *spec, struct sockaddr_un *sun, socklen_t *len, const char **why);

/* ---- conn.c / listener.c ---- */
void conn_open(lua_State *L);
void listener_open(lua_State *L);
void timer_open(lua_State *L);
void signal_open(lua_State *L);
int signal_install(lua_State *L);
void signal_close_all(evtcp_loop *loop);
void loop_signals_changed(evtcp_loop *loop); /* loop.c: Ctrl-C follows evtcp.signal("INT") */
int listener_listen(lua_State *L);
int timer_after(lua_State *L);
int conn_connect(lua_State *L);
int conn_adopt_accepted(lua_State *L);

#endif
