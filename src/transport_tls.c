/*
 * transport_tls.c - TLS (transport.h): an OpenSSL bufferevent does all the
 * I/O, since records are encrypted. It reads into its input, which the
 * connection takes chain by chain (conn_deliver_buffer); it carries the
 * read timeout; CONNECTING lasts until the handshake is done, on the server
 * side too, so onConnection means "handshake complete". Client sessions are
 * resumed from the Lua state's cache (tls.c).
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include "conn.h"

/* The bufferevent decrypted input. */
static void tls_on_readable(struct bufferevent *bev, void *arg) {
  conn_deliver_buffer((evtcp_conn *)arg, bufferevent_get_input(bev));
}

/* Handshake first: OPEN, and onConnection, once it is done. */
static int tls_accept(evtcp_conn *c, SSL_CTX *server) {
  SSL *ssl = SSL_new(server);
  c->bev = ssl ? bufferevent_openssl_socket_new(c->obj.loop->base, c->fd, ssl, BUFFEREVENT_SSL_ACCEPTING, 0)
               : NULL;
  if (c->bev == NULL) { SSL_free(ssl); return -1; }
  c->ssl = ssl;
  object_anchor(&c->obj, ANCHOR_CONNECTING); /* the handshake is work in flight */
  bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
  bufferevent_setcb(c->bev, tls_on_readable, conn_on_written, conn_on_bev_event, c);
  bufferevent_enable(c->bev, EV_READ | EV_WRITE);
  conn_bev_timeouts(c);
  c->state = CONN_CONNECTING;
  return 0;
}

/* OpenSSL's new-session callback of a client context: the session (a TLS
 * 1.3 ticket comes after the handshake) goes to the Lua state's cache, for
 * the next connection to the same host, port and settings. */
static int tls_on_new_session(SSL *ssl, SSL_SESSION *session) {
  evtcp_conn *c = (evtcp_conn *)SSL_get_app_data(ssl);
  if (c == NULL || c->client->tls_session_key == NULL || c->obj.loop == NULL) return 0;
  tls_cache_put(c->obj.loop, c->client->tls_session_key, session);
  return 1; /* the cache owns it */
}

/* A client connection's sessions: keyed per host, port, name verified and
 * settings, since a resumed session skips verification and so must have
 * passed the same one. Returns 0, or -1 without memory. */
int tls_client_begin(evtcp_conn *c, const char *host, int port) {
  const char *name = c->client->tls_host ? c->client->tls_host : "";
  size_t size = strlen(host) + strlen(name) + 32;
  char *key = (char *)malloc(size);
  if (key == NULL) return -1;
  snprintf(key, size, "%s:%d|%s|%d|%08x", host, port, name, c->tls_verify, c->client->tls_config_hash);
  c->client->tls_session_key = key;
  SSL_CTX_sess_set_new_cb(c->client->tls_ctx, tls_on_new_session);
  return 0;
}

/* A client session for the next address, resuming a cached session. */
static SSL *tls_client_ssl(evtcp_conn *c) {
  SSL *ssl = tls_client_session(c->client->tls_ctx, c->client->tls_host, c->tls_verify);
  SSL_SESSION *cached;
  if (ssl == NULL) return NULL;
  SSL_set_app_data(ssl, c);
  if (c->client->tls_session_key && (cached = tls_cache_get(c->obj.loop, c->client->tls_session_key)) != NULL)
    SSL_set_session(ssl, cached);
  return ssl;
}

static int tls_connect(evtcp_conn *c) {
  SSL *ssl = tls_client_ssl(c);
  c->bev = ssl ? bufferevent_openssl_socket_new(c->obj.loop->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, 0)
               : NULL;
  if (c->bev == NULL) { SSL_free(ssl); return conn_note_failure(c, ENOMEM, "evtcp"); }
  c->ssl = ssl;
  /* a peer that closes without close_notify is an end, not an error */
  bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
  bufferevent_setcb(c->bev, tls_on_readable, conn_on_written, conn_on_bev_event, c);
  return 0;
}

/* The bufferevent is there already and reads. */
static int tls_open(evtcp_conn *c) {
  (void)c;
  return 0;
}

static void tls_start_reading(evtcp_conn *c) {
  conn_bev_timeouts(c);
  bufferevent_enable(c->bev, EV_READ);
  if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
    c->backlog_due = 1; /* decrypted while paused: no new read will report it */
    object_defer(&c->obj);
  }
}

static void tls_stop_reading(evtcp_conn *c) {
  bufferevent_disable(c->bev, EV_READ);
  conn_bev_timeouts(c);
}

static void tls_deliver_backlog(evtcp_conn *c) {
  if (c->reading && c->bev) tls_on_readable(c->bev, c);
}

/* close_notify: TLS's own end of the stream, before the FIN. SSL_shutdown
 * writes to the socket itself: a reset it meets is taken from the socket
 * there, and the next read sees only an end. Kept, so that end is
 * reported as the reset it is (tls_explain). */
static void tls_end_stream(evtcp_conn *c) {
  if (c->ssl && SSL_shutdown(c->ssl) < 0 && SSL_get_error(c->ssl, -1) == SSL_ERROR_SYSCALL &&
      (errno == ECONNRESET || errno == EPIPE))
    c->tls_write_reset = 1;
  ERR_clear_error();
}

/* Was the connection reset? A FIN leaves the socket in CLOSE_WAIT, a
 * reset in CLOSE. (Once our side has sent its FIN, the peer's FIN moves
 * the socket to CLOSE too: then it cannot be told apart, and is an end.) */
static int tls_was_reset(const evtcp_conn *c) {
#if defined(__linux__) && defined(TCP_INFO)
  struct tcp_info info;
  socklen_t len = sizeof info;
  if (c->fd < 0 || c->write_shut_done || c->unix_path ||
      getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0)
    return 0;
  return info.tcpi_state == TCP_CLOSE;
#else
  (void)c; /* elsewhere a reset OpenSSL swallowed reads as an end */
  return 0;
#endif
}

/* An end without the peer's close_notify (a FIN, or worse). */
static int tls_dirty_end(const evtcp_conn *c) {
  return c->ssl == NULL || !(SSL_get_shutdown(c->ssl) & SSL_RECEIVED_SHUTDOWN);
}

static int tls_explain(evtcp_conn *c, short what, int err, evtcp_failure *f) {
  int reset = err == ECONNRESET || err == EPIPE;
  if (c->state == CONN_CONNECTING) {
    /* an EOF or a reset here is the peer aborting the handshake: the TCP
     * connection was up (a refusal would be ECONNREFUSED) */
    if (tls_bev_failure(c->bev, f)) return 1;
    if (!(what & BEV_EVENT_EOF) && !reset) return 0; /* this address failed */
    failure_set(f, KIND_TLS, err ? err : ECONNRESET, "openssl",
                "the peer closed the connection during the TLS handshake");
    return 1;
  }
  /* a reset is a reset over TLS too, whatever OpenSSL queued about it */
  if (what & BEV_EVENT_ERROR) return !reset && tls_bev_failure(c->bev, f);
  if (!(what & BEV_EVENT_EOF) || (what & BEV_EVENT_WRITING)) return 0;
  /* the peer's end, as read */
  if (c->tls_write_reset || (reset && tls_dirty_end(c)) || tls_was_reset(c)) {
    /* a reset can come as an end: libevent's dirty shutdown (an end
     * without close_notify) is any failed read, ECONNRESET included;
     * SSL_shutdown may have taken the error first; or a write inside
     * SSL_read did, and the kernel's state tells */
    failure_from_errno(f, ECONNRESET, "libevent");
    return 1;
  }
  /* the peer's close_notify ends its direction only (TLS allows sending
   * after it, and the peer may be reading still), but libevent stopped
   * writing with reading: what is queued would never leave */
  bufferevent_enable(c->bev, EV_WRITE);
  return 0;
}

/* A graceful close sends close_notify; a reset or a failure does not. */
static void tls_release(evtcp_conn *c) {
  if (c->ssl && c->state == CONN_CLOSING && !c->aborted && c->failure == NULL &&
      SSL_is_init_finished(c->ssl))
    SSL_shutdown(c->ssl);
}

const conn_transport transport_tls = {
  "tls", 1, tls_accept, tls_connect, tls_open, tls_start_reading, tls_stop_reading,
  tls_deliver_backlog, NULL, tls_end_stream, tls_explain, tls_release
};
