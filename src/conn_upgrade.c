/*
 * conn_upgrade.c - conn:startTLS(tlsOptions): an open plain connection
 * becomes TLS on the same socket, as SMTP's and IMAP's STARTTLS, LDAP's
 * StartTLS and PostgreSQL's SSLRequest need. The transport is replaced
 * (transport_tls.c, tls_upgrade); the connection stays OPEN, `upgrading`
 * until the handshake is done: no input is delivered meanwhile (OpenSSL
 * reads only the handshake), and sends queue behind it, to go encrypted.
 *
 * Input that is already buffered, unread, when startTLS is called came in
 * the clear after the peer's last plaintext message: handing it over once
 * TLS is up would make it look as if it had come encrypted (the STARTTLS
 * injection attacks, CVE-2011-0411, CVE-2021-23222). The upgrade fails
 * instead, with kind "tls".
 *
 * Callback style (called in a plain callback): returns true at once, and
 * onUpgrade or onError follows. In a spawned coroutine or at the top level
 * it waits (the Lua layer's upgrade wait): true, or nil and the error.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdio.h>
#include "conn.h"
#include "tls.h"

/* Why an upgrade cannot start on c, or NULL. */
static const char *conn_upgrade_misuse(const evtcp_conn *c) {
  if (c->state < CONN_OPEN) return "evtcp: startTLS on a connection that is still connecting (wait until it is open)";
  if (c->state > CONN_OPEN) return "evtcp: startTLS on a closed connection";
  if (c->transport != &transport_tcp) return "evtcp: startTLS on a connection that is TLS already";
  if (c->output != OUTPUT_OPEN) return "evtcp: startTLS after shutdown() or close()";
  return NULL;
}

/* Starts the handshake, or ends c with why it cannot be. */
static void conn_upgrade_begin(lua_State *L, evtcp_conn *c) {
  size_t kept = c->input ? evbuffer_get_length(c->input) : 0;
  evtcp_failure f;
  char msg[sizeof f.message];
  if (kept > 0) {
    snprintf(msg, sizeof msg, "startTLS refused: %zu bytes came in the clear after the peer's last message and "
             "were not read; they would pass as sent over TLS (a STARTTLS injection)", kept);
    failure_set(&f, KIND_TLS, EPROTO, "evtcp", msg);
    evbuffer_drain(c->input, kept); /* never delivered: not even as plaintext, once "upgraded" */
    conn_end(c, &f, 0);
  } else if (conn_peer_ended(c)) {
    failure_set(&f, KIND_TLS, ECONNRESET, "evtcp", "startTLS: the peer closed the connection before the TLS handshake");
    conn_end(c, &f, 0);
  } else if (tls_upgrade(L, c, 2, 2, &f) != 0) {
    conn_end(c, &f, 0);
  } else if (conn_is_live(c)) {
    c->upgrading = 1;
  }
}

/* The Lua layer's wait returned (it may have yielded): its results. */
static int conn_upgrade_waited(lua_State *L, int status, lua_KContext ctx) {
  (void)status; (void)ctx;
  return lua_gettop(L);
}

/* conn:startTLS(tlsOptions) -> true | nil, errorObject (waiting). */
int conn_start_tls(lua_State *L) {
  evtcp_conn *c = conn_check(L, 1);
  const char *misuse = conn_upgrade_misuse(c);
  if (misuse) return luaL_error(L, "%s", misuse);
  if (lua_isnoneornil(L, 2) && c->client) { /* a client's defaults: the name dialled, verified */
    lua_settop(L, 1);
    lua_pushboolean(L, 1);
  }
  lua_settop(L, 2);
  /* what was sent before goes first, in the clear */
  if (c->corked) conn_uncork(c);
  if (conn_is_live(c)) conn_upgrade_begin(L, c);
  if (c->obj.loop->running && !loop_is_spawned(L)) { /* a plain callback: onUpgrade or onError follows */
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_settop(L, 1);
  loop_push_scheduler(L, 3); /* the Lua layer's wait for the upgrade */
  lua_insert(L, 1);
  lua_callk(L, 1, LUA_MULTRET, 0, conn_upgrade_waited);
  return lua_gettop(L);
}

/* The handshake is done: onUpgrade; a close() or shutdown() that came
 * meanwhile with nothing left to flush goes on. */
void conn_upgrade_done(evtcp_conn *c) {
  c->upgrading = 0;
  conn_bev_timeouts(c);
  conn_deliver(c, EVT_UPGRADE);
  object_wake(&c->obj, WAKE_STATE);
  if (c->state == CONN_OPEN && conn_buffered(c) == 0 && c->output != OUTPUT_OPEN) conn_flushed(c, 1);
}
