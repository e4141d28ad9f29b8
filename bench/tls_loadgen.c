/*
 * tls_loadgen.c - the TLS load generator: libevent's OpenSSL bufferevents,
 * one thread, many TLS 1.3 connections to an echo server on 127.0.0.1.
 * Every byte that comes back is checked; a run with an error is reported
 * as such and not counted.
 *
 *   tls_loadgen pingpong  PORT CONNS SIZE SECONDS  send SIZE bytes, await the echo, repeat
 *   tls_loadgen bulk      PORT CONNS SIZE SECONDS  stream both ways in SIZE-byte writes
 *   tls_loadgen handshake PORT CONNS 0|1 SECONDS   connect, handshake, echo a byte,
 *                                                  close, repeat; 1: resume the session
 *   tls_loadgen idle      PORT CONNS 1 SECONDS     open CONNS, echo a byte each, print
 *                                                  "ready", hold them SECONDS
 *
 * Prints one line of key=value pairs: ops, bytes, seconds, errors, resumed.
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PERIOD 65521 /* the stream pattern's period: a prime */
#define AHEAD (1 << 20)

enum mode { PINGPONG, BULK, HANDSHAKE, IDLE };

typedef struct client {
  struct bufferevent *bev;
  int id;
  uint64_t sent, received;
} client;

static enum mode mode;
static struct event_base *base;
static struct sockaddr_in addr;
static SSL_CTX *ctx;
static SSL_SESSION *session; /* handshake 1: the session every connection resumes */
static size_t size;
static int resume;
static int stopping;
static unsigned char pattern[2 * PERIOD + (1 << 17)];
static uint64_t ops, bytes, errors, resumed;
static int nclients;

static void start(client *c);

static const unsigned char *stream_at(uint64_t offset) {
  return pattern + offset % PERIOD;
}

/* Writes the next SIZE bytes of c's stream. */
static void send_chunk(client *c) {
  size_t left = size;
  while (left > 0) {
    size_t n = left < (1 << 17) ? left : (1 << 17);
    bufferevent_write(c->bev, stream_at(c->sent + (uint64_t)c->id * 7919), n);
    c->sent += n;
    left -= n;
  }
}

static void finish(client *c) {
  if (c->bev) bufferevent_free(c->bev);
  c->bev = NULL;
}

static void on_read(struct bufferevent *bev, void *arg) {
  client *c = (client *)arg;
  struct evbuffer *in = bufferevent_get_input(bev);
  size_t n;
  while ((n = evbuffer_get_length(in)) > 0) {
    size_t chunk = n < (1 << 17) ? n : (1 << 17);
    unsigned char buf[1 << 17];
    evbuffer_remove(in, buf, chunk);
    if (memcmp(buf, stream_at(c->received + (uint64_t)c->id * 7919), chunk) != 0) errors++;
    c->received += chunk;
    bytes += chunk;
  }
  if (mode == PINGPONG && c->received == c->sent) {
    ops++;
    if (!stopping) send_chunk(c);
  } else if (mode == HANDSHAKE && c->received == c->sent) {
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    ops++;
    if (SSL_session_reused(ssl)) resumed++;
    if (resume && session == NULL) session = SSL_get1_session(ssl);
    SSL_shutdown(ssl); /* close_notify: a session ended without one is not resumable */
    finish(c);
    if (!stopping) start(c);
  } else if (mode == IDLE && c->received == c->sent) {
    if (++ops == (uint64_t)nclients) { printf("ready\n"); fflush(stdout); }
  } else if (mode == BULK && !stopping && c->sent - c->received < AHEAD) {
    send_chunk(c);
  }
}

static void on_write(struct bufferevent *bev, void *arg) {
  client *c = (client *)arg;
  (void)bev;
  if (mode == BULK && !stopping && c->sent - c->received < AHEAD) send_chunk(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  client *c = (client *)arg;
  if (what & BEV_EVENT_CONNECTED) {
    int one = 1; /* as every server here: Nagle would hold a small write back */
    setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    send_chunk(c);
    return;
  }
  if (!stopping) errors++;
  finish(c);
}

static void start(client *c) {
  SSL *ssl = SSL_new(ctx);
  c->sent = c->received = 0;
  if (session) SSL_set_session(ssl, session);
  c->bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                          BEV_OPT_CLOSE_ON_FREE);
  bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
  bufferevent_setcb(c->bev, on_read, mode == BULK ? on_write : NULL, on_event, c);
  bufferevent_setwatermark(c->bev, EV_WRITE, size, 0);
  bufferevent_enable(c->bev, EV_READ | EV_WRITE);
  if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&addr, sizeof addr) != 0) errors++;
}

static void on_stop(evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what; (void)arg;
  stopping = 1;
  event_base_loopexit(base, NULL);
}

int main(int argc, char **argv) {
  int i;
  double seconds;
  client *clients;
  struct timeval tv;
  size_t k;
  if (argc < 6) {
    fprintf(stderr, "usage: tls_loadgen pingpong|bulk|handshake PORT CONNS SIZE SECONDS\n");
    return 2;
  }
  mode = strcmp(argv[1], "pingpong") == 0 ? PINGPONG : strcmp(argv[1], "bulk") == 0 ? BULK
       : strcmp(argv[1], "idle") == 0 ? IDLE : HANDSHAKE;
  nclients = atoi(argv[3]);
  size = (size_t)atol(argv[4]);
  seconds = atof(argv[5]);
  if (mode == HANDSHAKE) { resume = size != 0; size = 1; }
  if (mode == IDLE) size = 1;
  signal(SIGPIPE, SIG_IGN);
  for (k = 0; k < sizeof pattern; k++) pattern[k] = (unsigned char)((k % PERIOD) * 31 + 7);
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons((unsigned short)atoi(argv[2]));
  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* a benchmark of the server, not of verification */
  base = event_base_new();
  clients = (client *)calloc((size_t)nclients, sizeof *clients);
  for (i = 0; i < nclients; i++) {
    clients[i].id = i;
    start(&clients[i]);
    if (resume && i == 0) { /* the first handshake makes the session the rest resume */
      while (session == NULL && errors == 0) event_base_loop(base, EVLOOP_ONCE);
    }
  }
  if (mode == IDLE) { /* all connected and echoed once, then held */
    while (ops < (uint64_t)nclients && errors == 0) event_base_loop(base, EVLOOP_ONCE);
  } else {
    ops = bytes = resumed = 0;
  }
  tv.tv_sec = (long)seconds;
  tv.tv_usec = (long)((seconds - (double)tv.tv_sec) * 1e6);
  event_base_once(base, -1, EV_TIMEOUT, on_stop, NULL, &tv);
  event_base_dispatch(base);
  printf("ops=%llu bytes=%llu seconds=%.3f errors=%llu resumed=%llu\n", (unsigned long long)ops,
         (unsigned long long)bytes, seconds, (unsigned long long)errors, (unsigned long long)resumed);
  return 0;
}
