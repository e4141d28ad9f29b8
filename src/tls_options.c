/*
 * tls_options.c - the `tls` option table, read and checked before any
 * context is made (tls.c makes them).
 *
 * Every key is checked, an unknown one included: a mistyped `minVersion`
 * must not leave old protocols on unseen. The strings read stay referenced
 * by the option table, which the caller keeps on the stack while the
 * contexts are made.
 */
#include "platform.h" /* first: feature macros */
#include <string.h>
#include <openssl/ssl.h>
#include "tls_context.h"

/* The keys of a `tls` table; `sni` on a listener's only (and on the server
 * side of startTLS), `serverName` on a client's only. */
static const char *const string_keys[] = {"ca", "cert", "key", "serverName", "ciphers", "ciphersuites",
                                          "password", "crl"};
static const char *const other_keys[] = {"verify", "alpn", "minVersion", "maxVersion", "sni"};

static int key_known(const char *key, int server) {
  size_t i;
  if (strcmp(key, server ? "serverName" : "sni") == 0) return 0;
  for (i = 0; i < sizeof string_keys / sizeof string_keys[0]; i++)
    if (strcmp(key, string_keys[i]) == 0) return 1;
  for (i = 0; i < sizeof other_keys / sizeof other_keys[0]; i++)
    if (strcmp(key, other_keys[i]) == 0) return 1;
  return 0;
}

/* Raises naming the first key that a tls table of this side does not take. */
static void tls_check_keys(lua_State *L, int index, int arg, int server) {
  lua_pushnil(L);
  while (lua_next(L, index) != 0) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, arg, lua_pushfstring(L, "option 'tls' has a key of type %s; its keys are names",
                                            luaL_typename(L, -1)));
    if (!key_known(lua_tostring(L, -1), server))
      luaL_argerror(L, arg, lua_pushfstring(L, "option 'tls' has no key '%s'%s", lua_tostring(L, -1),
                                            server ? " on a server" : " on a client"));
  }
}

/* FNV-1a over n bytes, continuing from h. */
static unsigned hash_bytes(unsigned h, const unsigned char *p, size_t n) {
  while (n--) h = (h ^ *p++) * 16777619u;
  return h * 16777619u;
}

/* FNV-1a, continuing from h; NULL hashes as nothing. */
static unsigned hash_string(unsigned h, const char *s) {
  return s ? hash_bytes(h, (const unsigned char *)s, strlen(s)) : h * 16777619u;
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

/* tls.minVersion / tls.maxVersion: "1.2" or "1.3" (older versions are not
 * offered at all); 0 when not given. */
static int tls_read_version(lua_State *L, int index, int arg, const char *key) {
  const char *v;
  int version = 0;
  if (lua_getfield(L, index, key) == LUA_TNIL) { lua_pop(L, 1); return 0; }
  v = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "";
  if (strcmp(v, "1.2") == 0) version = TLS1_2_VERSION;
  else if (strcmp(v, "1.3") == 0) version = TLS1_3_VERSION;
  else luaL_argerror(L, arg, lua_pushfstring(L, "option 'tls.%s' must be \"1.2\" or \"1.3\"", key));
  lua_pop(L, 1);
  return version;
}

/* The string fields, each checked then read (NULL when absent). */
static void tls_read_strings(lua_State *L, int index, int arg, tls_options *opts) {
  const char **out[] = {&opts->ca, &opts->cert, &opts->key, &opts->server_name, &opts->ciphers,
                        &opts->ciphersuites, &opts->password, &opts->crl};
  size_t i;
  for (i = 0; i < sizeof string_keys / sizeof string_keys[0]; i++) {
    int t = lua_getfield(L, index, string_keys[i]);
    if (t != LUA_TNIL && t != LUA_TSTRING)
      luaL_argerror(L, arg, lua_pushfstring(L, "option 'tls.%s' must be a string", string_keys[i]));
    if (string_has_nul(L, -1)) /* a path or name read cut at the NUL */
      luaL_argerror(L, arg, lua_pushfstring(L, "option 'tls.%s' must not contain a NUL byte", string_keys[i]));
    *out[i] = lua_tostring(L, -1); /* the table keeps the string */
    lua_pop(L, 1);
  }
}

/* What tells apart the client settings a session may be resumed under. */
static unsigned tls_settings_hash(const tls_options *o) {
  unsigned h = 2166136261u;
  const char *const strings[] = {o->ca, o->cert, o->key, o->ciphers, o->ciphersuites, o->crl};
  size_t i;
  for (i = 0; i < sizeof strings / sizeof strings[0]; i++) h = hash_string(h, strings[i]);
  h = hash_bytes(h, o->alpn, o->alpn_len);
  h = hash_bytes(h, (const unsigned char *)&o->min_version, sizeof o->min_version);
  return hash_bytes(h, (const unsigned char *)&o->max_version, sizeof o->max_version);
}

/* Reads the option table at index into opts; raises an argument error
 * naming the bad field. `tls = true` gives the defaults (a client's). */
void tls_read_options(lua_State *L, int index, int arg, tls_options *opts, int server) {
  memset(opts, 0, sizeof *opts);
  opts->verify = !server;
  if (lua_type(L, index) == LUA_TBOOLEAN) {
    if (server) luaL_argerror(L, arg, "option 'tls' must be a table with cert and key");
    return;
  }
  if (!lua_istable(L, index)) luaL_argerror(L, arg, "option 'tls' must be true or a table");
  index = lua_absindex(L, index);
  tls_check_keys(L, index, arg, server);
  tls_read_strings(L, index, arg, opts);
  if (lua_getfield(L, index, "verify") != LUA_TNIL) {
    if (!lua_isboolean(L, -1)) luaL_argerror(L, arg, "option 'tls.verify' must be a boolean");
    opts->verify = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  tls_read_alpn(L, index, arg, opts);
  opts->min_version = tls_read_version(L, index, arg, "minVersion");
  opts->max_version = tls_read_version(L, index, arg, "maxVersion");
  if (opts->min_version && opts->max_version && opts->min_version > opts->max_version)
    luaL_argerror(L, arg, "option 'tls.minVersion' is above tls.maxVersion");
  if ((opts->cert == NULL) != (opts->key == NULL))
    luaL_argerror(L, arg, "option 'tls' needs both cert and key, or neither");
  if (server && opts->cert == NULL) luaL_argerror(L, arg, "option 'tls' of a listener needs cert and key");
  if (opts->crl && opts->ca == NULL && server)
    luaL_argerror(L, arg, "option 'tls.crl' needs tls.ca: a CRL is checked with the CA that verifies clients");
  opts->config_hash = tls_settings_hash(opts);
}
