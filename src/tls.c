/*
 * tls.c - TLS contexts from the `tls` option, and what conn.tls shows.
 *
 * A client context verifies the peer by default (the system's CA store,
 * or `ca`); `verify = false` is the only way to skip it. The host name
 * dialled (or `serverName`) is sent as SNI and checked against the
 * certificate. A listener's context has `cert` and `key`, and with `ca` +
 * `verify = true` asks clients for certificates.
 *
 * `ca`, `cert` and `key` are file paths (`ca` may be a folder), or PEM
 * text when the string starts with "-----BEGIN". The option table's shape
 * is checked first (argument errors naming the field); what OpenSSL says
 * of the files is a failure of kind "tls" with its reason.
 */
#include "platform.h" /* first: feature macros */
#include <string.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "tls.h"

static int is_pem(const char *s) {
  return strncmp(s, "-----BEGIN", 10) == 0;
}

/* The reason of the last OpenSSL error, with what we were doing. */
static void tls_failure(evtcp_failure *f, const char *doing) {
  unsigned long e = ERR_peek_last_error();
  char reason[200];
  char msg[256];
  ERR_error_string_n(e, reason, sizeof reason);
  snprintf(msg, sizeof msg, "%s: %s", doing, e ? reason : "unknown OpenSSL error");
  failure_set(f, KIND_TLS, (int)ERR_GET_REASON(e), "openssl", msg);
  ERR_clear_error();
}

/* Reads the option table at index into opts; raises an argument error
 * naming the bad field. `tls = true` gives the defaults. */
void tls_read_options(lua_State *L, int index, int arg, tls_options *opts, int server) {
  static const char *const fields[] = {"ca", "cert", "key", "serverName"};
  size_t i;
  memset(opts, 0, sizeof *opts);
  opts->verify = !server;
  if (lua_type(L, index) == LUA_TBOOLEAN) {
    if (server) luaL_argerror(L, arg, "option 'tls' must be a table with cert and key");
    return;
  }
  if (!lua_istable(L, index)) luaL_argerror(L, arg, "option 'tls' must be true or a table");
  index = lua_absindex(L, index);
  for (i = 0; i < sizeof fields / sizeof fields[0]; i++) {
    int t = lua_getfield(L, index, fields[i]);
    if (t != LUA_TNIL && t != LUA_TSTRING)
      luaL_argerror(L, arg, lua_pushfstring(L, "option 'tls.%s' must be a string", fields[i]));
    lua_pop(L, 1);
  }
  if (lua_getfield(L, index, "verify") != LUA_TNIL) {
    if (!lua_isboolean(L, -1)) luaL_argerror(L, arg, "option 'tls.verify' must be a boolean");
    opts->verify = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  /* the strings stay referenced by the option table while we use them */
  lua_getfield(L, index, "ca");
  opts->ca = lua_tostring(L, -1);
  lua_getfield(L, index, "cert");
  opts->cert = lua_tostring(L, -1);
  lua_getfield(L, index, "key");
  opts->key = lua_tostring(L, -1);
  lua_getfield(L, index, "serverName");
  opts->server_name = lua_tostring(L, -1);
  lua_pop(L, 4);
  if ((opts->cert == NULL) != (opts->key == NULL))
    luaL_argerror(L, arg, "option 'tls' needs both cert and key, or neither");
  if (server && opts->cert == NULL) luaL_argerror(L, arg, "option 'tls' of a listener needs cert and key");
}

static int load_ca(SSL_CTX *ctx, const char *ca) {
  if (is_pem(ca)) {
    BIO *bio = BIO_new_mem_buf(ca, -1);
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    X509 *x;
    int n = 0;
    if (bio == NULL) return 0;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
      if (X509_STORE_add_cert(store, x) == 1) n++;
      X509_free(x);
    }
    BIO_free(bio);
    ERR_clear_error(); /* the end of the PEM text reads as an error */
    return n > 0;
  } else {
    struct stat st;
    if (stat(ca, &st) == 0 && S_ISDIR(st.st_mode))
      return SSL_CTX_load_verify_locations(ctx, NULL, ca) == 1;
    return SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1;
  }
}

static int load_cert_and_key(SSL_CTX *ctx, const char *cert, const char *key) {
  int ok;
  if (is_pem(cert)) {
    BIO *bio = BIO_new_mem_buf(cert, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    ok = x != NULL && SSL_CTX_use_certificate(ctx, x) == 1;
    X509_free(x);
    /* the rest of the chain, if any */
    while (ok && bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
      if (SSL_CTX_add_extra_chain_cert(ctx, x) != 1) { X509_free(x); ok = 0; }
    }
    ERR_clear_error();
    BIO_free(bio);
  } else {
    ok = SSL_CTX_use_certificate_chain_file(ctx, cert) == 1;
  }
  if (!ok) return 0;
  if (is_pem(key)) {
    BIO *bio = BIO_new_mem_buf(key, -1);
    EVP_PKEY *pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    ok = pk != NULL && SSL_CTX_use_PrivateKey(ctx, pk) == 1;
    EVP_PKEY_free(pk);
    BIO_free(bio);
  } else {
    ok = SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1;
  }
  return ok && SSL_CTX_check_private_key(ctx) == 1;
}

/* Makes a context for opts; NULL with f filled in on failure. */
SSL_CTX *tls_context_new(const tls_options *opts, int server, evtcp_failure *f) {
  SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == NULL) { tls_failure(f, "creating the TLS context"); return NULL; }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  if (opts->ca) {
    if (!load_ca(ctx, opts->ca)) { tls_failure(f, "loading the CA certificates"); goto fail; }
  } else if (!server && opts->verify) {
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) { tls_failure(f, "loading the system's CA store"); goto fail; }
  }
  if (opts->cert && !load_cert_and_key(ctx, opts->cert, opts->key)) {
    tls_failure(f, "loading the certificate and key");
    goto fail;
  }
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
  /* OpenSSL 3 reports a peer that closes without close_notify as an SSL
   * error, which libevent's allow_dirty_shutdown does not recognize: an
   * end like any other, as it was with OpenSSL 1.1 */
  SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
  if (server)
    SSL_CTX_set_verify(ctx, opts->verify ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_NONE, NULL);
  else
    SSL_CTX_set_verify(ctx, opts->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
  return ctx;
fail:
  SSL_CTX_free(ctx);
  return NULL;
}

/* A client session on ctx for host: SNI (not for IP literals) and, when
 * verifying, the certificate's name checked against host. host NULL (a
 * Unix socket without serverName, verify off): neither. */
SSL *tls_client_session(SSL_CTX *ctx, const char *host, int verify) {
  SSL *ssl = SSL_new(ctx);
  unsigned char buf[16];
  int literal;
  if (ssl == NULL || host == NULL) return ssl;
  literal = evutil_inet_pton(AF_INET, host, buf) == 1 || evutil_inet_pton(AF_INET6, host, buf) == 1;
  if (!literal) SSL_set_tlsext_host_name(ssl, host);
  if (verify) {
    if (literal) X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
    else SSL_set1_host(ssl, host);
  }
  return ssl;
}

/* The failure of a TLS bufferevent: OpenSSL's error, or the verification
 * result in words. Returns 0 if OpenSSL reported nothing (a socket error). */
int tls_bev_failure(struct bufferevent *bev, evtcp_failure *f) {
  unsigned long e = bufferevent_get_openssl_error(bev);
  SSL *ssl = bufferevent_openssl_get_ssl(bev);
  char reason[200], msg[256];
  long vr;
  if (e == 0) return 0;
  while (bufferevent_get_openssl_error(bev) != 0) {} /* drain the rest */
  ERR_error_string_n(e, reason, sizeof reason);
  vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
  if (vr != X509_V_OK)
    snprintf(msg, sizeof msg, "%s (%s)", reason, X509_verify_cert_error_string(vr));
  else
    snprintf(msg, sizeof msg, "%s", reason);
  failure_set(f, KIND_TLS, (int)ERR_GET_REASON(e), "openssl", msg);
  return 1;
}

/* Pushes conn.tls: { protocol, cipher, peerCertificate = { subject, issuer } }. */
void tls_push_info(lua_State *L, struct bufferevent *bev) {
  SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
  X509 *peer;
  char buf[512];
  if (ssl == NULL) { lua_pushnil(L); return; }
  lua_createtable(L, 0, 3);
  lua_pushstring(L, SSL_get_version(ssl));
  lua_setfield(L, -2, "protocol");
  lua_pushstring(L, SSL_get_cipher_name(ssl));
  lua_setfield(L, -2, "cipher");
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  peer = SSL_get1_peer_certificate(ssl);
#else
  peer = SSL_get_peer_certificate(ssl); /* OpenSSL 1.1.1: the same, older name */
#endif
  if (peer) {
    lua_createtable(L, 0, 2);
    X509_NAME_oneline(X509_get_subject_name(peer), buf, sizeof buf);
    lua_pushstring(L, buf);
    lua_setfield(L, -2, "subject");
    X509_NAME_oneline(X509_get_issuer_name(peer), buf, sizeof buf);
    lua_pushstring(L, buf);
    lua_setfield(L, -2, "issuer");
    lua_setfield(L, -2, "peerCertificate");
    X509_free(peer);
  }
}
