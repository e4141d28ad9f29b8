/*
 * c_bufferevent_echo.c - the reference: an echo server on libevent
 * bufferevents written the way the libevent book does it (evconnlistener,
 * a bufferevent per client, the read callback moves input to output).
 * usage: c_bufferevent_echo [port]   prints "listening on 127.0.0.1:PORT"
 */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>

static void on_read(struct bufferevent *bev, void *arg) {
  (void)arg;
  evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void on_event(struct bufferevent *bev, short what, void *arg) {
  (void)arg;
  if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(bev);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg) {
  struct bufferevent *bev = bufferevent_socket_new(evconnlistener_get_base(l), fd, BEV_OPT_CLOSE_ON_FREE);
  (void)sa; (void)len; (void)arg;
  bufferevent_setcb(bev, on_read, NULL, on_event, NULL);
  bufferevent_enable(bev, EV_READ | EV_WRITE);
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
