/*
 * c_direct_echo.c - the limit: libevent events with direct read()/write().
 * Reads 64 KiB at a time and writes back at once; only what the kernel does
 * not take is kept, and then EV_WRITE is armed until it is written.
 * usage: c_direct_echo [port]   prints "listening on 127.0.0.1:PORT"
 */
#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct client {
  struct event *rd, *wr;
  char *pending;        /* bytes the kernel did not take */
  size_t len, cap;
} client;

static void client_free(client *c) {
  evutil_socket_t fd = event_get_fd(c->rd);
  event_free(c->rd);
  event_free(c->wr);
  free(c->pending);
  free(c);
  close(fd);
}

static void on_writable(evutil_socket_t fd, short what, void *arg) {
  client *c = arg;
  ssize_t n = write(fd, c->pending, c->len);
  (void)what;
  if (n < 0) { if (errno != EAGAIN) client_free(c); return; }
  memmove(c->pending, c->pending + n, c->len - (size_t)n);
  c->len -= (size_t)n;
  if (c->len == 0) { event_del(c->wr); event_add(c->rd, NULL); }
}

static void on_readable(evutil_socket_t fd, short what, void *arg) {
  client *c = arg;
  char buf[65536];
  ssize_t n = read(fd, buf, sizeof buf), w;
  (void)what;
  if (n <= 0) { if (n == 0 || errno != EAGAIN) client_free(c); return; }
  w = write(fd, buf, (size_t)n);
  if (w < 0) { if (errno != EAGAIN) { client_free(c); return; } w = 0; }
  if (w < n) {  /* keep the rest, stop reading until it is out */
    size_t rest = (size_t)(n - w);
    if (c->cap < rest) { c->pending = realloc(c->pending, rest); c->cap = rest; }
    memcpy(c->pending, buf + w, rest);
    c->len = rest;
    event_del(c->rd);
    event_add(c->wr, NULL);
  }
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg) {
  struct event_base *base = evconnlistener_get_base(l);
  client *c = calloc(1, sizeof *c);
  (void)sa; (void)len; (void)arg;
  c->rd = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, c);
  c->wr = event_new(base, fd, EV_WRITE | EV_PERSIST, on_writable, c);
  event_add(c->rd, NULL);
}

int main(int argc, char **argv) {
  struct event_base *base = event_base_new();
  struct sockaddr_in sin;
  struct evconnlistener *l;
  socklen_t len = sizeof sin;
  signal(SIGPIPE, SIG_IGN);
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons((unsigned short)(argc > 1 ? atoi(argv[1]) : 0));
  l = evconnlistener_new_bind(base, on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
                              (struct sockaddr *)&sin, sizeof sin);
  if (!l) { perror("bind"); return 1; }
  getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &len);
  printf("listening on 127.0.0.1:%d\n", ntohs(sin.sin_port));
  fflush(stdout);
  event_base_dispatch(base);
  return 0;
}
