/*
 * tls.h - TLS contexts and sessions for connections and listeners (tls.c).
 */
#ifndef EVTCP_TLS_H
#define EVTCP_TLS_H

#include <openssl/ssl.h>
#include <event2/bufferevent_ssl.h>
#include "evtcp.h"

typedef struct tls_options {
  const char *ca, *cert, *key, *server_name;
  int verify;
} tls_options;

void tls_read_options(lua_State *L, int index, int arg, tls_options *opts, int server);
SSL_CTX *tls_context_new(const tls_options *opts, int server, evtcp_failure *f);
SSL *tls_client_session(SSL_CTX *ctx, const char *host, int verify);
int tls_bev_failure(struct bufferevent *bev, evtcp_failure *f);
void tls_push_info(lua_State *L, struct bufferevent *bev);

#endif
