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
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "tls_context.h"

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
  failure_name_reason(f, e ? ERR_reason_error_string(e) : NULL);
  ERR_clear_error();
}

/* FNV-1a over n bytes, continuing from h. */
static unsigned hash_bytes(unsigned h, const unsigned char *p, size_t n) {
  while (n--) h = (h ^ *p++) * 16777619u;
  return h * 16777619u;
}

/* FNV-1a, continuing from h; NULL hashes as nothing. */
static unsigned hash_string(unsigned h, const char *s) {
  for (; s && *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h * 16777619u;
}

/* tls.alpn: an array of protocol names (1..255 bytes each) in the wire
 * format OpenSSL takes. */
static void tls_read_alpn(lua_State *L, int index, int arg, tls_options *opts) {
  lua_Integer i, n;
  opts->alpn_len = 0;
  if (lua_getfield(L, index, "alpn") == LUA_TNIL) { lua_pop(L, 1); return; }
  if (!lua_istable(L, -1)) luaL_argerror(L, arg, "option 'tls.alpn' must be an array of protocol names");
  n = (lua_Integer)lua_rawlen(L, -1);
  if (n == 0) luaL_argerror(L, arg, "option 'tls.alpn' must name at least one protocol");
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *name;
    if (lua_rawgeti(L, -1, i) != LUA_TSTRING) luaL_argerror(L, arg, "option 'tls.alpn' must hold strings");
    name = lua_tolstring(L, -1, &len);
    if (len == 0 || len > 255) luaL_argerror(L, arg, "option 'tls.alpn': a protocol name is 1 to 255 bytes");
    if (opts->alpn_len + 1 + len > sizeof opts->alpn)
      luaL_argerror(L, arg, lua_pushfstring(L, "option 'tls.alpn' is too long (%d bytes in all, each name "
                                               "with its length byte)", (int)sizeof opts->alpn));
    opts->alpn[opts->alpn_len++] = (unsigned char)len;
    memcpy(opts->alpn + opts->alpn_len, name, len);
    opts->alpn_len += len;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Reads the option table at index into opts; raises an argument error
 * naming the bad field. `tls = true` gives the defaults. */
void tls_read_options(lua_State *L, int index, int arg, tls_options *opts, int server) {
  static const char *const fields[] = {"ca", "cert", "key", "serverName"};
  opts->alpn_len = 0;
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
    if (string_has_nul(L, -1)) /* a path or name read cut at the NUL */
      luaL_argerror(L, arg, lua_pushfstring(L, "option 'tls.%s' must not contain a NUL byte", fields[i]));
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
  tls_read_alpn(L, index, arg, opts);
  opts->config_hash = hash_bytes(hash_string(hash_string(hash_string(2166136261u, opts->ca), opts->cert),
                                             opts->key), opts->alpn, opts->alpn_len);
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
  /* an idle connection gives its 2 x ~17 KiB record buffers back (bench/) */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
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
  if (server) {
    static const unsigned char sid_ctx[] = "evtcp";
    SSL_CTX_set_verify(ctx, opts->verify ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_NONE, NULL);
    /* resumption (on by default in OpenSSL) needs one when clients are verified */
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
  } else {
    SSL_CTX_set_verify(ctx, opts->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (opts->alpn_len > 0 && SSL_CTX_set_alpn_protos(ctx, opts->alpn, (unsigned)opts->alpn_len) != 0) {
      tls_failure(f, "setting ALPN");
      goto fail;
    }
    /* sessions go to the Lua state's cache (below), not OpenSSL's */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  }
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
  if (ERR_GET_REASON(e) == SSL_R_NO_APPLICATION_PROTOCOL || ERR_GET_REASON(e) == SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL)
    snprintf(msg, sizeof msg, "%s (ALPN: no protocol both sides accept)", reason);
  else if (vr != X509_V_OK)
    snprintf(msg, sizeof msg, "%s (%s)", reason, X509_verify_cert_error_string(vr));
  else
    snprintf(msg, sizeof msg, "%s", reason);
  failure_set(f, KIND_TLS, (int)ERR_GET_REASON(e), "openssl", msg);
  failure_name_reason(f, e ? ERR_reason_error_string(e) : NULL);
  return 1;
}

/* Pushes conn.tls: { protocol, cipher, peerCertificate = { subject, issuer } }. */
void tls_push_info(lua_State *L, SSL *ssl) {
  X509 *peer;
  char buf[512];
  if (ssl == NULL) { lua_pushnil(L); return; }
  lua_createtable(L, 0, 5);
  lua_pushstring(L, SSL_get_version(ssl));
  lua_setfield(L, -2, "protocol");
  lua_pushstring(L, SSL_get_cipher_name(ssl));
  lua_setfield(L, -2, "cipher");
  {
    const unsigned char *proto = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(ssl, &proto, &len);
    if (len > 0) {
      lua_pushlstring(L, (const char *)proto, len);
      lua_setfield(L, -2, "alpn");
    }
  }
  lua_pushboolean(L, SSL_session_reused(ssl));
  lua_setfield(L, -2, "resumed");
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

/* ---- servers: ALPN selection and certificates by SNI ---- */

/* The server's first protocol that the client offers too; none is a fatal
 * alert (no_application_protocol): the handshake fails. */
static int tls_select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned inlen, void *arg) {
  const tls_server *s = (const tls_server *)arg;
  (void)ssl;
  if (SSL_select_next_proto((unsigned char **)out, outlen, s->alpn, (unsigned)s->alpn_len, in, inlen) !=
      OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  return SSL_TLSEXT_ERR_OK;
}

/* Does the name a client asked for match pattern? Exact, or a wildcard
 * "*.example.test" standing for exactly one leftmost label, as in
 * certificates (RFC 6125). Both lower case. */
static int sni_matches(const char *pattern, const char *name) {
  if (pattern[0] == '*' && pattern[1] == '.') {
    const char *dot = strchr(name, '.');
    return dot != NULL && dot != name && strcmp(dot, pattern + 1) == 0;
  }
  return strcmp(pattern, name) == 0;
}

/* The servername callback: switches to the context of the name, exact
 * names before wildcards; any other name keeps the top-level one. */
static int tls_select_sni(SSL *ssl, int *alert, void *arg) {
  const tls_server *s = (const tls_server *)arg;
  const char *asked = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  char name[256];
  size_t i, n;
  int pass;
  (void)alert;
  if (asked == NULL || (n = strlen(asked)) >= sizeof name) return SSL_TLSEXT_ERR_OK;
  for (i = 0; i <= n; i++) name[i] = (char)((asked[i] >= 'A' && asked[i] <= 'Z') ? asked[i] + 32 : asked[i]);
  if (n > 0 && name[n - 1] == '.') name[n - 1] = '\0';
  for (pass = 0; pass < 2; pass++)
    for (i = 0; i < s->sni_count; i++)
      if ((s->sni[i].name[0] == '*') == pass && sni_matches(s->sni[i].name, name)) {
        SSL_set_SSL_CTX(ssl, s->sni[i].ctx);
        return SSL_TLSEXT_ERR_OK;
      }
  return SSL_TLSEXT_ERR_OK;
}

/* What every context of a server shares. */
static void tls_server_callbacks(tls_server *s, SSL_CTX *ctx) {
  if (s->alpn_len > 0) SSL_CTX_set_alpn_select_cb(ctx, tls_select_alpn, s);
}

/* Checks tls.sni (at the top of the stack) before anything is made. */
static size_t tls_check_sni(lua_State *L, int arg) {
  size_t n = 0;
  if (!lua_istable(L, -1)) luaL_argerror(L, arg, "option 'tls.sni' must be a table of names");
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    size_t len;
    if (lua_type(L, -2) != LUA_TSTRING || (lua_tolstring(L, -2, &len), len == 0 || len > 253))
      luaL_argerror(L, arg, "option 'tls.sni': each key must be a host name");
    if (!lua_istable(L, -1)) luaL_argerror(L, arg, "option 'tls.sni': each name needs a table { cert=, key= }");
    /* both fields pushed before either is checked: the name stays at -4 */
    lua_getfield(L, -1, "cert");
    lua_getfield(L, -2, "key");
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, arg, lua_pushfstring(L, "option 'tls.sni[\"%s\"]' needs cert and key strings",
                                            lua_tostring(L, -4)));
    lua_pop(L, 3);
    n++;
  }
  return n;
}

/* Makes *out from the listener's tls table at index: the default context,
 * ALPN, the SNI contexts. Raises on misuse (*out stays freeable by
 * tls_server_free); returns -1 with f for what OpenSSL refused. */
int tls_server_setup(lua_State *L, int index, int arg, tls_server **out, evtcp_failure *f) {
  tls_options opts;
  size_t count = 0;
  tls_server *s;
  if ((s = *out = (tls_server *)calloc(1, sizeof *s)) == NULL) return luaL_error(L, "evtcp: out of memory");
  index = lua_absindex(L, index);
  tls_read_options(L, index, arg, &opts, 1);
  if (lua_getfield(L, index, "sni") != LUA_TNIL) count = tls_check_sni(L, arg);
  lua_pop(L, 1);
  memcpy(s->alpn, opts.alpn, opts.alpn_len);
  s->alpn_len = opts.alpn_len;
  if ((s->ctx = tls_context_new(&opts, 1, f)) == NULL) return -1;
  tls_server_callbacks(s, s->ctx);
  if (count == 0) return 0;
  if ((s->sni = (tls_sni_entry *)calloc(count, sizeof *s->sni)) == NULL) {
    failure_from_errno(f, ENOMEM, "evtcp");
    return -1;
  }
  SSL_CTX_set_tlsext_servername_callback(s->ctx, tls_select_sni);
  SSL_CTX_set_tlsext_servername_arg(s->ctx, s);
  lua_getfield(L, index, "sni");
  lua_pushnil(L);
  while (lua_next(L, -2) != 0 && s->sni_count < count) {
    tls_sni_entry *e = &s->sni[s->sni_count];
    tls_options one = opts; /* ca and verify as the top level */
    size_t i, len;
    const char *name = lua_tolstring(L, -2, &len);
    lua_getfield(L, -1, "cert");
    one.cert = lua_tostring(L, -1);
    lua_getfield(L, -2, "key");
    one.key = lua_tostring(L, -1);
    if ((e->name = (char *)malloc(len + 1)) == NULL) { failure_from_errno(f, ENOMEM, "evtcp"); lua_pop(L, 5); return -1; }
    for (i = 0; i <= len; i++) e->name[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    s->sni_count++;
    e->ctx = tls_context_new(&one, 1, f);
    lua_pop(L, 3);
    if (e->ctx == NULL) {
      char msg[sizeof f->message];
      snprintf(msg, sizeof msg, "tls.sni[\"%.60s\"]: %.180s", e->name, f->message);
      memcpy(f->message, msg, sizeof msg);
      lua_pop(L, 2);
      return -1;
    }
    tls_server_callbacks(s, e->ctx);
  }
  lua_pop(L, 1);
  return 0;
}

void tls_server_free(tls_server *s) {
  size_t i;
  if (s == NULL) return;
  for (i = 0; i < s->sni_count; i++) {
    SSL_CTX_free(s->sni[i].ctx);
    free(s->sni[i].name);
  }
  free(s->sni);
  SSL_CTX_free(s->ctx);
  free(s);
}

/* ---- clients: sessions kept for resumption ---- */

#define TLS_CACHE_MAX 128 /* host:port pairs per Lua state; the oldest go first */

struct tls_cached {
  struct tls_cached *next;
  SSL_SESSION *session;
  char key[1];              /* "host:port|settings", allocated to length */
};

/* Keeps session (ours now) for key, replacing the one it had; the newest
 * first, and past TLS_CACHE_MAX the oldest (the last) goes. */
void tls_cache_put(evtcp_loop *loop, const char *key, SSL_SESSION *session) {
  struct tls_cached **p, *e;
  size_t n = 0;
  for (e = loop->tls_sessions; e != NULL; e = e->next)
    if (strcmp(e->key, key) == 0) {
      SSL_SESSION_free(e->session);
      e->session = session;
      return;
    }
  e = (struct tls_cached *)malloc(sizeof *e + strlen(key));
  if (e == NULL) { SSL_SESSION_free(session); return; }
  strcpy(e->key, key);
  e->session = session;
  e->next = loop->tls_sessions;
  loop->tls_sessions = e;
  for (p = &loop->tls_sessions; *p != NULL && ++n < TLS_CACHE_MAX; p = &(*p)->next) {}
  if (*p != NULL && (*p)->next != NULL) { /* one too many: drop the tail */
    e = (*p)->next;
    (*p)->next = NULL;
    SSL_SESSION_free(e->session);
    free(e);
  }
}

SSL_SESSION *tls_cache_get(evtcp_loop *loop, const char *key) {
  struct tls_cached *e;
  for (e = loop->tls_sessions; e != NULL; e = e->next)
    if (strcmp(e->key, key) == 0) return SSL_SESSION_is_resumable(e->session) ? e->session : NULL;
  return NULL;
}

void tls_cache_free_all(evtcp_loop *loop) {
  while (loop->tls_sessions != NULL) {
    struct tls_cached *e = loop->tls_sessions;
    loop->tls_sessions = e->next;
    SSL_SESSION_free(e->session);
    free(e);
  }
}
