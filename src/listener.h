/*
 * listener.h - the TCPListener struct, shared by listener.c (the listener
 * and its Lua API) and listener_proxy.c (clients behind a PROXY header).
 *
 * States (`closed` tells which):
 *
 *   LISTENING --terminate(), close(), __close, __gc--> TERMINATED
 *
 *   LISTENING   `lev` accepts. A client goes, in order:
 *                 [proxy: in `proxy_waits` until its PROXY header is read;
 *                  failed -> onError, closed; read while a client is held
 *                  -> `ready`, offered by the loop (promote_due) once the
 *                  held one is taken]
 *                 -> onConnection decides: a handler adopts it, nil/false
 *                    refuses it;
 *                 or, without onConnection, it is held (`held_fd`) for
 *                 accept() and accepting stops until it is taken.
 *               An accept failure (EMFILE) goes to onError and accepting
 *               pauses (backoff_ev). maxConnections refuses clients beyond.
 *                                    anchored: CALLBACKS (an onConnection),
 *                                    WAITER (coroutines in accept or wait)
 *   TERMINATED  the socket is closed (a Unix socket's file removed when it
 *               is ours: owns_file), held and waiting clients closed;
 *               terminate_due: onTerminate waits for the loop (PENDING).
 *               The TLS contexts stay until __gc: a client adopted inside
 *               onConnection still gets its handshake.
 */
#ifndef EVTCP_LISTENER_H
#define EVTCP_LISTENER_H

#include <sys/stat.h>
#include "conn.h"
#include "proxy.h"
#include "tls.h"

struct evtcp_listener;

/* A client of a proxyProtocol listener whose header is still being read
 * (or, read, waiting for accept() to take the client before it). */
typedef struct proxy_wait {
  struct evtcp_listener *l;
  evutil_socket_t fd;
  struct event *ev;             /* readable: no timeout, bytes do not extend it */
  struct event *deadline_ev;    /* the header's deadline; NULL for none */
  evtcp_addr peer;              /* the balancer's end, then the client's */
  proxy_reader reader;
  int ready;                    /* header read; waits for the held client to go */
  struct proxy_wait *next, *prev;
} proxy_wait;

typedef struct evtcp_listener {
  evtcp_object obj;
  struct evconnlistener *lev;
  struct event *backoff_ev;     /* re-enables accepting after a failure */
  evutil_socket_t held_fd;      /* accepted, waiting for accept(); or -1 */
  evtcp_addr held_addr;
  evtcp_addr bound;
  int connections;              /* live accepted connections (each counts itself out) */
  int max_connections;          /* 0: unlimited */
  tls_server *tls;              /* a TLS server: contexts, ALPN, SNI */
  conn_options defaults;        /* its options, for the connections it accepts */
  char *unix_path;              /* a Unix socket listener: "/path" or "@name" */
  dev_t file_dev;               /* the socket file we made, removed at the end */
  ino_t file_ino;
  proxy_wait *proxy_waits;      /* clients whose PROXY header is being read */
  double proxy_timeout;         /* seconds the header may take */
  unsigned proxy : 1;           /* the proxyProtocol option */
  unsigned promote_due : 1;     /* a client read its header while another was held */
  unsigned owns_file : 1;
  unsigned closed : 1;
  unsigned terminate_due : 1;
} evtcp_listener;

/* listener.c */
void listener_report(evtcp_listener *l, const evtcp_failure *f);
void listener_on_client(evtcp_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int socklen);

/* listener_proxy.c */
void proxy_wait_free(proxy_wait *w, int close_fd);
void listener_proxy_start(evtcp_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int socklen);
void listener_offer_ready(evtcp_listener *l);

#endif
