/*
 * transport_tls.c - TLS (transport.h): an OpenSSL bufferevent does all the
 * I/O, since records are encrypted. It reads into its input, which the
 * connection takes chain by chain (conn_deliver_buffer); it carries the
 * read timeout; CONNECTING lasts until the handshake is done, on the server
 * side too, so onConnection means "handshake complete". Client sessions are
 * resumed from the Lua state's cache (tls.c). The SSL object is the
 * bufferevent's (bufferevent_openssl_get_ssl), freed after it; the rest is
 * the link.
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
#include "tls_context.h"

/* A TLS connection's own state (c->link). */
typedef struct tls_link {
  SSL_CTX *ctx;              /* a client's, for each address tried; NULL on a server's side */
  tls_server *server;        /* startTLS on an accepted connection: its own settings */
  struct bufferevent *plain; /* startTLS: the plain output still flushing, in the clear */
  char *host;                /* a client's SNI and the name checked, or NULL */
  char *session_key;         /* "host:port|name|verify|settings", its sessions' key */
  unsigned config_hash;      /* ca, cert, key, alpn: sessions are per settings */
  unsigned verify : 1;
  unsigned write_reset : 1;  /* writing close_notify met the peer's reset */
} tls_link;

static tls_link *link_of(const evtcp_conn *c) {
  return (tls_link *)c->link;
}

static SSL *ssl_of(const evtcp_conn *c) {
  return c->bev ? bufferevent_openssl_get_ssl(c->bev) : NULL;
}

/* ---- a client's `tls` option ---- */

/* A client's link from the tls option at index. Raises on misuse, before
 * anything is made; a context OpenSSL refused leaves ctx NULL and f set. */
static tls_link *tls_client_link(lua_State *L, int index, int arg, int is_unix, evtcp_failure *f) {
  tls_options opts;
  tls_link *k;
  tls_read_options(L, index, arg, &opts, 0);
  if (is_unix && opts.verify && opts.server_name == NULL)
    luaL_argerror(L, arg, "TLS over a Unix socket needs tls.serverName (the name the certificate is "
                          "checked against), or tls.verify = false");
  if ((k = (tls_link *)calloc(1, sizeof *k)) == NULL) luaL_error(L, "evtcp: out of memory");
  k->verify = opts.verify != 0;
  k->config_hash = opts.config_hash; /* for the session key: tls_dial */
  if (opts.server_name && (k->host = strdup(opts.server_name)) == NULL) {
    free(k);
    luaL_error(L, "evtcp: out of memory");
  }
  k->ctx = tls_context_new(&opts, 0, f);
  return k;
}

/* Reads the client's tls option at index into a new link: the transport
 * is TLS from now on. A context OpenSSL refused (a file that cannot be
 * read) is an error event, once started. */
void tls_client_setup(lua_State *L, evtcp_conn *c, int index, int arg, int is_unix) {
  evtcp_failure f;
  tls_link *k = tls_client_link(L, index, arg, is_unix, &f);
  c->transport = &transport_tls;
  c->link = k;
  if (k->ctx == NULL) {
    if ((c->failure = (evtcp_failure *)malloc(sizeof *c->failure)) == NULL) luaL_error(L, "evtcp: out of memory");
    *c->failure = f;
  }
}

/* The bufferevent decrypted input. */
static void tls_on_readable(struct bufferevent *bev, void *arg) {
  conn_deliver_buffer((evtcp_conn *)arg, bufferevent_get_input(bev));
}

/* Handshake first: OPEN, and onConnection, once it is done. */
static int tls_accept(evtcp_conn *c, const void *server) {
  SSL *ssl = SSL_new(((const tls_server *)server)->ctx);
  tls_link *k = (tls_link *)calloc(1, sizeof *k);
  c->bev = ssl && k ? bufferevent_openssl_socket_new(c->obj.loop->base, c->fd, ssl, BUFFEREVENT_SSL_ACCEPTING, 0)
                    : NULL;
  if (c->bev == NULL) { SSL_free(ssl); free(k); return -1; }
  c->link = k;
  conn_handshaking(c);
  bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
  bufferevent_setcb(c->bev, tls_on_readable, conn_on_written, conn_on_bev_event, c);
  bufferevent_enable(c->bev, EV_READ | EV_WRITE);
  conn_bev_timeouts(c);
  return 0;
}

/* OpenSSL's new-session callback of a client context: the session (a TLS
 * 1.3 ticket comes after the handshake) goes to the Lua state's cache, for
 * the next connection to the same host, port and settings. */
static int tls_on_new_session(SSL *ssl, SSL_SESSION *session) {
  evtcp_conn *c = (evtcp_conn *)SSL_get_app_data(ssl);
  if (c == NULL || c->link == NULL || link_of(c)->session_key == NULL || c->obj.loop == NULL) return 0;
  tls_cache_put(c->obj.loop, link_of(c)->session_key, session);
  return 1; /* the cache owns it */
}

/* A client starts: the name checked is the one dialled unless serverName
 * gave one (a Unix socket has none), and its sessions are keyed per host,
 * port, name verified and settings, since a resumed session skips
 * verification and so must have passed the same one. Returns 0, or -1
 * without memory. */
static int tls_dial(evtcp_conn *c, const char *host, int port) {
  tls_link *k = link_of(c);
  const char *name;
  size_t size;
  if (k->host == NULL && c->unix_path == NULL && (k->host = strdup(host)) == NULL) return -1;
  name = k->host ? k->host : "";
  size = strlen(host) + strlen(name) + 32;
  if ((k->session_key = (char *)malloc(size)) == NULL) return -1;
  snprintf(k->session_key, size, "%s:%d|%s|%d|%08x", host, port, name, k->verify, k->config_hash);
  SSL_CTX_sess_set_new_cb(k->ctx, tls_on_new_session);
  return 0;
}

/* A client session for the next address, resuming a cached session. */
static SSL *tls_client_ssl(evtcp_conn *c) {
  tls_link *k = link_of(c);
  SSL *ssl = tls_client_session(k->ctx, k->host, k->verify);
  SSL_SESSION *cached;
  if (ssl == NULL) return NULL;
  SSL_set_app_data(ssl, c);
  if (k->session_key && (cached = tls_cache_get(c->obj.loop, k->session_key)) != NULL)
    SSL_set_session(ssl, cached);
  return ssl;
}

static int tls_connect(evtcp_conn *c) {
  SSL *ssl = tls_client_ssl(c);
  c->bev = ssl ? bufferevent_openssl_socket_new(c->obj.loop->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, 0)
               : NULL;
  if (c->bev == NULL) { SSL_free(ssl); return conn_note_failure(c, ENOMEM, "evtcp"); }
  /* a peer that closes without close_notify is an end, not an error */
  bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
  bufferevent_setcb(c->bev, tls_on_readable, conn_on_written, conn_on_bev_event, c);
  return 0;
}

/* The bufferevent reads; decrypted input it kept while reading was
 * paused is reported by no new read, so the loop delivers it. */
static void tls_reading(evtcp_conn *c, int on) {
  if (!on) {
    bufferevent_disable(c->bev, EV_READ);
    conn_bev_timeouts(c);
    return;
  }
  conn_bev_timeouts(c);
  bufferevent_enable(c->bev, EV_READ);
  if (evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) conn_due(c, DUE_BACKLOG);
}

/* close_notify: TLS's own end of the stream, before the FIN. SSL_shutdown
 * writes to the socket itself: a reset it meets is taken from the socket
 * there, and the next read sees only an end. Kept, so that end is
 * reported as the reset it is (tls_explain). */
static void tls_end_stream(evtcp_conn *c) {
  SSL *ssl = ssl_of(c);
  if (ssl && SSL_shutdown(ssl) < 0 && SSL_get_error(ssl, -1) == SSL_ERROR_SYSCALL &&
      (errno == ECONNRESET || errno == EPIPE))
    link_of(c)->write_reset = 1;
  ERR_clear_error();
}

/* Was the connection reset? A FIN leaves the socket in CLOSE_WAIT, a
 * reset in CLOSE. (Once our side has sent its FIN, the peer's FIN moves
 * the socket to CLOSE too: then it cannot be told apart, and is an end.) */
static int tls_was_reset(const evtcp_conn *c) {
#if defined(__linux__) && defined(TCP_INFO)
  struct tcp_info info;
  socklen_t len = sizeof info;
  if (c->fd < 0 || c->fin_sent || c->unix_path ||
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
  SSL *ssl = ssl_of(c);
  return ssl == NULL || !(SSL_get_shutdown(ssl) & SSL_RECEIVED_SHUTDOWN);
}

static int tls_explain(evtcp_conn *c, short what, int err, evtcp_failure *f) {
  int reset = err == ECONNRESET || err == EPIPE;
  if (c->state == CONN_CONNECTING || c->upgrading) {
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
  if (link_of(c)->write_reset || (reset && tls_dirty_end(c)) || tls_was_reset(c)) {
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

/* ---- startTLS: TLS over a live plain connection ---- */

static size_t tls_pending(const evtcp_conn *c) {
  const tls_link *k = link_of(c);
  return k && k->plain ? evbuffer_get_length(bufferevent_get_output(k->plain)) : 0;
}

/* The TLS bufferevent takes the socket: the handshake starts. */
static void tls_upgrade_attach(evtcp_conn *c) {
  bufferevent_setfd(c->bev, c->fd);
  bufferevent_enable(c->bev, c->reading ? EV_READ | EV_WRITE : EV_WRITE);
  conn_bev_timeouts(c);
}

/* The plain output of before startTLS has left, in the clear: its
 * bufferevent goes, TLS starts; a close() that waited for it goes on. */
static void tls_plain_flushed(struct bufferevent *bev, void *arg) {
  evtcp_conn *c = (evtcp_conn *)arg;
  if (evbuffer_get_length(bufferevent_get_output(bev)) > 0) return;
  link_of(c)->plain = NULL;
  transport_tcp.free_bev(bev);
  tls_upgrade_attach(c);
  conn_on_written(c->bev, c);
}

static void tls_plain_event(struct bufferevent *bev, short what, void *arg) {
  evtcp_conn *c = (evtcp_conn *)arg;
  int err = EVUTIL_SOCKET_ERROR();
  evtcp_failure f;
  (void)bev;
  if (what & BEV_EVENT_TIMEOUT) {
    failure_set(&f, KIND_TIMEOUT, ETIMEDOUT, "evtcp", "write timeout");
    conn_end(c, &f, 0);
  } else {
    conn_fail(c, err ? err : EPIPE, "libevent");
  }
}

/* The new link from the options at index, for this side; NULL with f
 * when OpenSSL refused them. */
static tls_link *tls_upgrade_link(lua_State *L, evtcp_conn *c, int index, int arg, evtcp_failure *f) {
  tls_link *k;
  tls_server *s = NULL;
  if (c->client) {
    k = tls_client_link(L, index, arg, c->unix_path != NULL, f);
    if (k->ctx == NULL) { free(k->host); free(k); return NULL; }
    return k;
  }
  if (tls_server_setup(L, index, arg, &s, f) != 0) { tls_server_free(s); return NULL; }
  if ((k = (tls_link *)calloc(1, sizeof *k)) == NULL) {
    tls_server_free(s);
    failure_from_errno(f, ENOMEM, "evtcp");
    return NULL;
  }
  k->server = s;
  return k;
}

int tls_upgrade(lua_State *L, evtcp_conn *c, int index, int arg, evtcp_failure *f) {
  tls_link *k = tls_upgrade_link(L, c, index, arg, f);
  struct bufferevent *old = c->bev, *bev;
  SSL *ssl;
  if (k == NULL) return -1;
  c->transport->release(c); /* the plain transport's read event */
  c->transport = &transport_tls;
  c->link = k;
  if (c->client)
    ssl = tls_dial(c, c->client->host, sockaddr_port(&c->peer.sa)) == 0 ? tls_client_ssl(c) : NULL;
  else
    ssl = SSL_new(k->server->ctx);
  /* no socket yet: it is given once the plain output has left */
  bev = ssl ? bufferevent_openssl_socket_new(c->obj.loop->base, -1, ssl,
                                             c->client ? BUFFEREVENT_SSL_CONNECTING : BUFFEREVENT_SSL_ACCEPTING, 0)
            : NULL;
  if (bev == NULL) {
    SSL_free(ssl);
    conn_fail(c, ENOMEM, "evtcp");
    return 0;
  }
  bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
  bufferevent_setcb(bev, tls_on_readable, conn_on_written, conn_on_bev_event, c);
  c->bev = bev;
  if (old && evbuffer_get_length(bufferevent_get_output(old)) > 0) {
    k->plain = old;
    bufferevent_setcb(old, NULL, tls_plain_flushed, tls_plain_event, c);
    bufferevent_enable(old, EV_WRITE);
  } else {
    if (old) transport_tcp.free_bev(old);
    tls_upgrade_attach(c);
  }
  return 0;
}

static void tls_push_conn_info(lua_State *L, evtcp_conn *c) {
  SSL *ssl = ssl_of(c);
  if (ssl == NULL) lua_pushnil(L);
  else tls_push_info(L, ssl);
}

/* The SSL object goes after its bufferevent, which may still use it. */
static void tls_free_bev(struct bufferevent *bev) {
  SSL *ssl = bufferevent_openssl_get_ssl(bev);
  bufferevent_free(bev);
  SSL_free(ssl);
}

static void tls_link_free(tls_link *k) {
  if (k->ctx) SSL_CTX_free(k->ctx);
  if (k->plain) transport_tcp.free_bev(k->plain);
  tls_server_free(k->server);
  free(k->host);
  free(k->session_key);
  free(k);
}

/* A graceful close sends close_notify; a reset or a failure does not. */
static void tls_release(evtcp_conn *c) {
  tls_link *k = link_of(c);
  SSL *ssl = ssl_of(c);
  if (k == NULL) return;
  if (ssl && c->state == CONN_CLOSING && !c->aborted && c->failure == NULL && SSL_is_init_finished(ssl))
    SSL_shutdown(ssl);
  tls_link_free(k);
  c->link = NULL;
}

/* ---- the pool: a TLS session kept idle, to be taken up again ---- */

typedef struct tls_parked {
  SSL *ssl;
  tls_link *link;
} tls_parked;

static void *tls_park(evtcp_conn *c, const char **why) {
  SSL *ssl = ssl_of(c);
  tls_parked *p;
  if (ssl == NULL || link_of(c) == NULL || link_of(c)->plain != NULL || !SSL_is_init_finished(ssl)) {
    *why = "the TLS handshake is not done";
    return NULL;
  }
  if (SSL_pending(ssl) > 0 || evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
    *why = "it has unread data";
    return NULL;
  }
  if ((p = (tls_parked *)malloc(sizeof *p)) == NULL) { *why = "out of memory"; return NULL; }
  p->ssl = ssl;
  p->link = link_of(c);
  SSL_set_app_data(ssl, NULL); /* no connection while parked (new sessions are not cached) */
  bufferevent_free(c->bev);    /* keeps the SSL and the socket: no BEV_OPT_CLOSE_ON_FREE */
  c->bev = NULL;
  c->link = NULL;
  return p;
}

static int tls_resume(evtcp_conn *c, evutil_socket_t fd, void *state) {
  tls_parked *p = (tls_parked *)state;
  struct bufferevent *bev = bufferevent_openssl_socket_new(c->obj.loop->base, fd, p->ssl, BUFFEREVENT_SSL_OPEN, 0);
  if (bev == NULL) return -1;
  bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
  bufferevent_setcb(bev, tls_on_readable, conn_on_written, conn_on_bev_event, c);
  SSL_set_app_data(p->ssl, c);
  if (c->link) tls_link_free(link_of(c)); /* the new connection's own: the same settings */
  c->link = p->link;
  c->bev = bev;
  free(p);
  return 0;
}

static void tls_discard(void *state) {
  tls_parked *p = (tls_parked *)state;
  SSL_free(p->ssl);
  tls_link_free(p->link);
  free(p);
}

static const char *tls_identity(const evtcp_conn *c) {
  const tls_link *k = link_of(c);
  return k ? k->session_key : NULL;
}

const conn_transport transport_tls = {
  "tls", 1, tls_accept, tls_dial, tls_connect, tls_reading, NULL, tls_end_stream, tls_explain,
  tls_pending, tls_park, tls_resume, tls_discard, tls_identity, tls_push_conn_info, tls_free_bev, tls_release
};
