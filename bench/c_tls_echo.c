/*
 * c_tls_echo.c - the TLS reference: an echo server on libevent's OpenSSL
 * bufferevents, the way the libevent book does it (one SSL per client, the
 * read callback moves input to output).
 * usage: c_tls_echo cert.pem key.pem   prints "listening on 127.0.0.1:PORT"
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static void on_read(struct bufferevent *bev, void *arg) {
  (void)arg;
  evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  (void)arg;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(bev);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg) {
  SSL *ssl = SSL_new((SSL_CTX *)arg);
  struct bufferevent *bev = bufferevent_openssl_socket_new(evconnlistener_get_base(l), fd, ssl,
                                                           BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
  int one = 1; /* no Nagle: a session ticket or a small echo is not held back */
  (void)sa; (void)len;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
  bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
}

int main(int argc, char **argv) {
  struct event_base *base = event_base_new();
  struct sockaddr_in sin;
  struct evconnlistener *l;
  socklen_t len = sizeof sin;
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (argc < 3 || SSL_CTX_use_certificate_chain_file(ctx, argv[1]) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1) {
    fprintf(stderr, "usage: c_tls_echo cert.pem key.pem\n");
    return 1;
  }
  signal(SIGPIPE, SIG_IGN);
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  l = evconnlistener_new_bind(base, on_accept, ctx, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
                              (struct sockaddr *)&sin, sizeof sin);
  if (!l) { perror("bind"); return 1; }
  getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &len);
  printf("listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
  fflush(stdout);
  event_base_dispatch(base);
  return 0;
}
