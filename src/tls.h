/*
 * tls.h - TLS as the rest of evtcp sees it: no OpenSSL type in sight.
 * What TLS is made of (contexts, sessions, the link of a connection) is
 * tls_context.h's, for tls.c and transport_tls.c alone.
 */
#ifndef EVTCP_TLS_H
#define EVTCP_TLS_H

#include "evtcp.h"

struct evtcp_conn;

/* A listener's TLS: contexts, ALPN, SNI (tls.c). */
typedef struct tls_server tls_server;

int tls_server_setup(lua_State *L, int index, int arg, tls_server **out, evtcp_failure *f);
void tls_server_free(tls_server *s);

/* A client connection's `tls` option (transport_tls.c): the transport and
 * its link set on c; a context OpenSSL refused is c->failure, reported
 * once the connection starts. Raises on misuse; is_unix: a Unix socket,
 * which has no name to check unless tls.serverName gives one. */
void tls_client_setup(lua_State *L, struct evtcp_conn *c, int index, int arg, int is_unix);

/* startTLS (conn_upgrade.c): the plain transport of an OPEN connection is
 * replaced by TLS on the same socket, a client's if c dialled, else a
 * server's; the tls table at index as its options. Raises on misuse
 * before anything changes; -1 with f when OpenSSL refused the settings
 * (nothing changed); 0 when the handshake is under way (or failed without
 * memory: c is then failing). What the plain transport still had queued
 * goes first, in the clear. */
int tls_upgrade(lua_State *L, struct evtcp_conn *c, int index, int arg, evtcp_failure *f);

#endif
