/*
 * tls_info.c - conn.tls: what was negotiated, and who the peer is.
 *
 * { protocol, cipher, alpn, resumed, peerCertificate = { subject, issuer,
 *   subjectAltNames, fingerprint, serial, notBefore, notAfter, pem },
 *   peerChain = { pem, ... } }. Enough to authorize a client certificate
 * in Lua: by fingerprint (pinning), by SAN, by validity.
 */
#include "platform.h" /* first: feature macros */
#include <stdio.h>
#include <string.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "tls_context.h"

/* Pushes n bytes as lower-case hex. */
static void push_hex(lua_State *L, const unsigned char *p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  luaL_Buffer b;
  size_t i;
  luaL_buffinit(L, &b);
  for (i = 0; i < n; i++) {
    luaL_addchar(&b, digits[p[i] >> 4]);
    luaL_addchar(&b, digits[p[i] & 15]);
  }
  luaL_pushresult(&b);
}

/* Pushes the certificate in PEM (nil if OpenSSL cannot write it). */
static void push_pem(lua_State *L, X509 *x) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *data;
  long len;
  if (bio == NULL || PEM_write_bio_X509(bio, x) != 1) {
    lua_pushnil(L);
  } else {
    len = BIO_get_mem_data(bio, &data);
    lua_pushlstring(L, data, (size_t)len);
  }
  BIO_free(bio);
}

/* An ASN.1 time as seconds since the epoch (what os.time gives). */
static void push_epoch(lua_State *L, const ASN1_TIME *t) {
  ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
  int days = 0, secs = 0;
  if (epoch == NULL || t == NULL || ASN1_TIME_diff(&days, &secs, epoch, t) != 1) lua_pushnil(L);
  else lua_pushinteger(L, (lua_Integer)days * 86400 + secs);
  ASN1_TIME_free(epoch);
}

/* One subjectAltName as "DNS:x", "IP:y", "email:z" or "URI:u"; other
 * kinds are left out (0). */
static int push_alt_name(lua_State *L, const GENERAL_NAME *g) {
  const char *prefix = g->type == GEN_DNS ? "DNS:" : g->type == GEN_EMAIL ? "email:" : g->type == GEN_URI ? "URI:" : NULL;
  if (prefix) {
    const ASN1_IA5STRING *s = g->d.ia5;
    lua_pushstring(L, prefix);
    lua_pushlstring(L, (const char *)ASN1_STRING_get0_data(s), (size_t)ASN1_STRING_length(s));
    lua_concat(L, 2);
    return 1;
  }
  if (g->type == GEN_IPADD) {
    int len = ASN1_STRING_length(g->d.ip);
    char text[64];
    if (len != 4 && len != 16) return 0;
    evutil_inet_ntop(len == 4 ? AF_INET : AF_INET6, ASN1_STRING_get0_data(g->d.ip), text, sizeof text);
    lua_pushfstring(L, "IP:%s", text);
    return 1;
  }
  return 0;
}

static void push_alt_names(lua_State *L, X509 *x) {
  GENERAL_NAMES *names = (GENERAL_NAMES *)X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
  int i, n = names ? sk_GENERAL_NAME_num(names) : 0;
  lua_Integer k = 0;
  lua_createtable(L, n, 0);
  for (i = 0; i < n; i++)
    if (push_alt_name(L, sk_GENERAL_NAME_value(names, i))) lua_rawseti(L, -2, ++k);
  GENERAL_NAMES_free(names);
}

static void push_serial(lua_State *L, X509 *x) {
  BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
  char *hex = bn ? BN_bn2hex(bn) : NULL;
  size_t i;
  if (hex == NULL) {
    lua_pushnil(L);
  } else {
    for (i = 0; hex[i]; i++) hex[i] = (char)((hex[i] >= 'A' && hex[i] <= 'F') ? hex[i] + 32 : hex[i]);
    lua_pushstring(L, hex);
  }
  OPENSSL_free(hex);
  BN_free(bn);
}

/* Pushes peerCertificate's table for x. */
static void push_certificate(lua_State *L, X509 *x) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned md_len = 0;
  char buf[512];
  lua_createtable(L, 0, 8);
  X509_NAME_oneline(X509_get_subject_name(x), buf, sizeof buf);
  lua_pushstring(L, buf);
  lua_setfield(L, -2, "subject");
  X509_NAME_oneline(X509_get_issuer_name(x), buf, sizeof buf);
  lua_pushstring(L, buf);
  lua_setfield(L, -2, "issuer");
  push_alt_names(L, x);
  lua_setfield(L, -2, "subjectAltNames");
  if (X509_digest(x, EVP_sha256(), md, &md_len) == 1) {
    push_hex(L, md, md_len);
    lua_setfield(L, -2, "fingerprint");
  }
  push_serial(L, x);
  lua_setfield(L, -2, "serial");
  push_epoch(L, X509_get0_notBefore(x));
  lua_setfield(L, -2, "notBefore");
  push_epoch(L, X509_get0_notAfter(x));
  lua_setfield(L, -2, "notAfter");
  push_pem(L, x);
  lua_setfield(L, -2, "pem");
  ERR_clear_error();
}

/* peerChain: the PEM texts of the chain the peer sent, its own certificate
 * first (a server's OpenSSL leaves the client's own out of the list). */
static void push_chain(lua_State *L, SSL *ssl, X509 *peer) {
  STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
  int i, n = chain ? sk_X509_num(chain) : 0;
  lua_Integer k = 0;
  lua_createtable(L, n + 1, 0);
  if (SSL_is_server(ssl)) {
    push_pem(L, peer);
    lua_rawseti(L, -2, ++k);
  }
  for (i = 0; i < n; i++) {
    push_pem(L, sk_X509_value(chain, i));
    lua_rawseti(L, -2, ++k);
  }
}

/* Pushes conn.tls for ssl (nil for none). */
void tls_push_info(lua_State *L, SSL *ssl) {
  const unsigned char *proto = NULL;
  unsigned len = 0;
  X509 *peer;
  if (ssl == NULL) { lua_pushnil(L); return; }
  lua_createtable(L, 0, 6);
  lua_pushstring(L, SSL_get_version(ssl));
  lua_setfield(L, -2, "protocol");
  lua_pushstring(L, SSL_get_cipher_name(ssl));
  lua_setfield(L, -2, "cipher");
  SSL_get0_alpn_selected(ssl, &proto, &len);
  if (len > 0) {
    lua_pushlstring(L, (const char *)proto, len);
    lua_setfield(L, -2, "alpn");
  }
  lua_pushboolean(L, SSL_session_reused(ssl));
  lua_setfield(L, -2, "resumed");
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
  peer = SSL_get1_peer_certificate(ssl);
#else
  peer = SSL_get_peer_certificate(ssl); /* OpenSSL 1.1.1: the same, older name */
#endif
  if (peer == NULL) return;
  push_certificate(L, peer);
  lua_setfield(L, -2, "peerCertificate");
  push_chain(L, ssl, peer);
  lua_setfield(L, -2, "peerChain");
  X509_free(peer);
}
