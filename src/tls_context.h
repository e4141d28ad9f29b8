/*
 * tls_context.h - TLS in OpenSSL's terms, for tls.c (contexts, the session
 * cache, conn.tls) and transport_tls.c (TLS below a connection) only.
 */
#ifndef EVTCP_TLS_CONTEXT_H
#define EVTCP_TLS_CONTEXT_H

#include <openssl/ssl.h>
#include <event2/bufferevent_ssl.h>
#include "tls.h"

/* The room for tls.alpn in wire format: a protocol name may be 255 bytes
 * (its length prefix is one byte), and a list several names. */
#define TLS_ALPN_MAX 1024

typedef struct tls_options {
  const char *ca, *cert, *key, *server_name;
  const char *ciphers, *ciphersuites, *password, *crl;
  int verify;
  int min_version, max_version; /* TLS1_2_VERSION, TLS1_3_VERSION, or 0: not given */
  unsigned char alpn[TLS_ALPN_MAX]; /* tls.alpn in ALPN's wire format: length-prefixed names */
  size_t alpn_len;
  unsigned config_hash;      /* tells apart client settings a session may be resumed under */
} tls_options;

/* A listener's TLS: the default context and one per SNI name (tls.sni). */
typedef struct tls_sni_entry {
  char *name;                /* lower case; "*.example.test" for a wildcard */
  SSL_CTX *ctx;
} tls_sni_entry;

struct tls_server {
  SSL_CTX *ctx;              /* the top-level cert: every name not in sni */
  unsigned char alpn[TLS_ALPN_MAX]; /* the protocols accepted, the server's preference first */
  size_t alpn_len;
  tls_sni_entry *sni;
  size_t sni_count;
};

/* Client sessions kept for resumption, per Lua state (evtcp_loop). */
struct tls_cached;

void tls_read_options(lua_State *L, int index, int arg, tls_options *opts, int server);
SSL_CTX *tls_context_new(const tls_options *opts, int server, evtcp_failure *f);
SSL *tls_client_session(SSL_CTX *ctx, const char *host, int verify);
void tls_cache_put(evtcp_loop *loop, const char *key, SSL_SESSION *session);
SSL_SESSION *tls_cache_get(evtcp_loop *loop, const char *key);
int tls_bev_failure(struct bufferevent *bev, evtcp_failure *f);
void tls_push_info(lua_State *L, SSL *ssl);

#endif
