/*
 * tls.c - TLS contexts from the `tls` option (read by tls_options.c), and a
 * listener's TLS: ALPN selection and certificates by SNI.
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
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>
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

/* A path that cannot be read, told in the system's words and naming the
 * file (OpenSSL would say "system lib"). Returns 1 if so. */
static int tls_file_unreadable(evtcp_failure *f, const char *field, const char *path) {
  char msg[sizeof f->message];
  if (is_pem(path) || access(path, R_OK) == 0) return 0;
  failure_from_errno(f, errno, "evtcp");
  snprintf(msg, sizeof msg, "tls.%s '%.150s': %.80s", field, path, f->message);
  memcpy(f->message, msg, sizeof msg);
  f->kind = KIND_TLS;
  return 1;
}

/* What OpenSSL refused of tls.<field>, naming the file (or saying it was
 * PEM text). Returns 0 for the caller's goto. */
static int tls_field_failure(evtcp_failure *f, const char *field, const char *value) {
  char doing[200];
  if (value == NULL || is_pem(value)) snprintf(doing, sizeof doing, "loading tls.%s (PEM text)", field);
  else snprintf(doing, sizeof doing, "loading tls.%s '%.150s'", field, value);
  tls_failure(f, doing);
  return 0;
}

/* The passphrase of an encrypted key: tls.password, or none at all - never
 * OpenSSL's default, which would ask on the terminal and block the loop. */
static int tls_password(char *buf, int size, int rwflag, void *userdata) {
  const char *password = (const char *)userdata;
  size_t n = password ? strlen(password) : 0;
  (void)rwflag;
  if (n > (size_t)size) n = (size_t)size;
  if (n > 0) memcpy(buf, password, n);
  return (int)n;
}

/* Every PEM certificate in text into the verify store; how many. */
static int load_pem_ca(SSL_CTX *ctx, const char *text) {
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  BIO *bio = BIO_new_mem_buf(text, -1);
  X509 *x;
  int n = 0;
  while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
    n += X509_STORE_add_cert(store, x) == 1;
    X509_free(x);
  }
  BIO_free(bio);
  ERR_clear_error(); /* the end of the PEM text reads as an error */
  return n;
}

static int load_ca(SSL_CTX *ctx, const char *ca) {
  struct stat st;
  if (is_pem(ca)) return load_pem_ca(ctx, ca) > 0;
  if (stat(ca, &st) == 0 && S_ISDIR(st.st_mode)) return SSL_CTX_load_verify_locations(ctx, NULL, ca) == 1;
  return SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1;
}

/* tls.cert: a chain file, or PEM text whose first certificate is ours
 * and the rest its chain. */
static int load_cert(SSL_CTX *ctx, const char *cert) {
  BIO *bio;
  X509 *x;
  int ok;
  if (!is_pem(cert)) return SSL_CTX_use_certificate_chain_file(ctx, cert) == 1;
  bio = BIO_new_mem_buf(cert, -1);
  x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
  ok = x != NULL && SSL_CTX_use_certificate(ctx, x) == 1;
  X509_free(x);
  while (ok && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
    if (SSL_CTX_add_extra_chain_cert(ctx, x) != 1) { X509_free(x); ok = 0; } /* else the chain owns it */
  ERR_clear_error(); /* the end of the PEM text reads as an error */
  BIO_free(bio);
  return ok;
}

static int load_key(SSL_CTX *ctx, const char *key, const char *password) {
  BIO *bio;
  EVP_PKEY *pk;
  int ok;
  if (!is_pem(key)) return SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) == 1;
  bio = BIO_new_mem_buf(key, -1);
  pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, tls_password, (void *)password) : NULL;
  ok = pk != NULL && SSL_CTX_use_PrivateKey(ctx, pk) == 1;
  EVP_PKEY_free(pk);
  BIO_free(bio);
  return ok;
}

/* tls.crl: the revocation lists (a file or PEM text), checked for the
 * peer's own certificate against the CA that verifies it. */
static int load_crl(SSL_CTX *ctx, const char *crl) {
  X509_STORE *store = SSL_CTX_get_cert_store(ctx);
  int n = 0;
  if (is_pem(crl)) {
    BIO *bio = BIO_new_mem_buf(crl, -1);
    X509_CRL *x;
    while (bio && (x = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
      n += X509_STORE_add_crl(store, x) == 1;
      X509_CRL_free(x);
    }
    BIO_free(bio);
    ERR_clear_error();
  } else {
    X509_LOOKUP *lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
    n = lookup ? X509_load_crl_file(lookup, crl, X509_FILETYPE_PEM) : 0;
  }
  return n > 0 && X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK) == 1;
}

/* The files of opts (ca, crl, cert, key) into ctx; 0 with f on failure. */
static int tls_load_files(SSL_CTX *ctx, const tls_options *opts, int server, evtcp_failure *f) {
  const char *const fields[] = {"ca", "crl", "cert", "key"};
  const char *const values[] = {opts->ca, opts->crl, opts->cert, opts->key};
  size_t i;
  for (i = 0; i < 4; i++)
    if (values[i] && tls_file_unreadable(f, fields[i], values[i])) return 0;
  if (opts->ca) {
    if (!load_ca(ctx, opts->ca)) return tls_field_failure(f, "ca", opts->ca);
  } else if (!server && opts->verify && SSL_CTX_set_default_verify_paths(ctx) != 1) {
    tls_failure(f, "loading the system's CA store");
    return 0;
  }
  if (opts->crl && !load_crl(ctx, opts->crl)) return tls_field_failure(f, "crl", opts->crl);
  if (opts->cert == NULL) return 1;
  if (!load_cert(ctx, opts->cert)) return tls_field_failure(f, "cert", opts->cert);
  if (!load_key(ctx, opts->key, opts->password)) return tls_field_failure(f, "key", opts->key);
  if (SSL_CTX_check_private_key(ctx) != 1) {
    tls_failure(f, "tls.key does not match tls.cert");
    return 0;
  }
  return 1;
}

/* Protocol versions and ciphers; 0 with f when OpenSSL takes none. */
static int tls_set_protocols(SSL_CTX *ctx, const tls_options *opts, evtcp_failure *f) {
  SSL_CTX_set_min_proto_version(ctx, opts->min_version ? opts->min_version : TLS1_2_VERSION);
  if (opts->max_version) SSL_CTX_set_max_proto_version(ctx, opts->max_version);
  if (opts->ciphers && SSL_CTX_set_cipher_list(ctx, opts->ciphers) != 1) {
    tls_failure(f, "tls.ciphers");
    return 0;
  }
  if (opts->ciphersuites && SSL_CTX_set_ciphersuites(ctx, opts->ciphersuites) != 1) {
    tls_failure(f, "tls.ciphersuites");
    return 0;
  }
  return 1;
}

/* Makes a context for opts; NULL with f filled in on failure. */
SSL_CTX *tls_context_new(const tls_options *opts, int server, evtcp_failure *f) {
  SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  int ok;
  if (ctx == NULL) { tls_failure(f, "creating the TLS context"); return NULL; }
  /* an idle connection gives its 2 x ~17 KiB record buffers back (bench/) */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  /* the password is the option table's: only while the files load */
  SSL_CTX_set_default_passwd_cb(ctx, tls_password);
  SSL_CTX_set_default_passwd_cb_userdata(ctx, (void *)opts->password);
  ok = tls_set_protocols(ctx, opts, f) && tls_load_files(ctx, opts, server, f);
  SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
  if (!ok) goto fail;
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

/* An entry of tls.sni (at the top, its name below it) takes cert, key
 * and password: the rest (ca, versions, ...) is the top level's. */
static void tls_check_sni_keys(lua_State *L, int arg) {
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
    lua_pop(L, 1);
    if (strcmp(key, "cert") != 0 && strcmp(key, "key") != 0 && strcmp(key, "password") != 0) {
      const char *name = lua_tostring(L, -3);
      luaL_argerror(L, arg, lua_pushfstring(L, "option 'tls.sni[\"%s\"]' has no key '%s' (it takes cert, key "
                                               "and password)", name, luaL_tolstring(L, -1, NULL)));
    }
  }
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
    tls_check_sni_keys(L, arg);
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

/* Makes *out from the tls table at index of a listener (or of startTLS on
 * an accepted connection): the default context, ALPN, the SNI contexts.
 * Raises on misuse before anything is made; returns -1 with f for what
 * OpenSSL refused (*out, if set, for tls_server_free). */
int tls_server_setup(lua_State *L, int index, int arg, tls_server **out, evtcp_failure *f) {
  tls_options opts;
  size_t count = 0;
  tls_server *s;
  index = lua_absindex(L, index);
  tls_read_options(L, index, arg, &opts, 1);
  if (lua_getfield(L, index, "sni") != LUA_TNIL) count = tls_check_sni(L, arg);
  lua_pop(L, 1);
  if ((s = *out = (tls_server *)calloc(1, sizeof *s)) == NULL) return luaL_error(L, "evtcp: out of memory");
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
    if (lua_getfield(L, -3, "password") == LUA_TSTRING) one.password = lua_tostring(L, -1);
    lua_pop(L, 1); /* the entry keeps it */
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
