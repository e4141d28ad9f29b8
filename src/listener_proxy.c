/*
 * listener_proxy.c - a proxyProtocol listener's clients before they are
 * offered: each one's PROXY header is read (proxy.c) with a deadline, then
 * the client is offered as any other, with the original client's address;
 * a failed header is the listener's onError. While accept() holds a client,
 * those whose headers are read wait their turn in arrival order.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "conn.h"
#include "listener.h"

void proxy_wait_free(proxy_wait *w, int close_fd) {
  evtcp_listener *l = w->l;
  if (w->prev) w->prev->next = w->next;
  else l->proxy_waits = w->next;
  if (w->next) w->next->prev = w->prev;
  if (w->ev) event_free(w->ev);
  if (w->deadline_ev) event_free(w->deadline_ev);
  if (close_fd) evutil_closesocket(w->fd);
  free(w);
}

/* A client whose PROXY header failed (malformed, missing, closed early):
 * closed, and reported to the listener's onError, kind "io". */
static void listener_proxy_failed(proxy_wait *w, const char *why, int err) {
  evtcp_listener *l = w->l;
  evtcp_failure f;
  failure_set(&f, KIND_IO, err ? err : EPROTO, "evtcp", why);
  proxy_wait_free(w, 1);
  listener_report(l, &f);
}

/* Offers a client whose header is read, unless one is held for accept():
 * then it waits its turn (listener_run_pending). Frees w. */
static void listener_proxy_offer(proxy_wait *w) {
  evtcp_listener *l = w->l;
  evutil_socket_t fd = w->fd;
  evtcp_addr peer = w->peer;
  if (l->held_fd >= 0) {
    w->ready = 1;
    event_del(w->ev);
    if (w->deadline_ev) event_del(w->deadline_ev); /* read in time: no longer bound */
    return;
  }
  proxy_wait_free(w, 0);
  listener_on_client(l, fd, &peer.sa, (int)sizeof peer);
}

/* The deadline is its own timer: a persistent read event's timeout would
 * start again at every byte, and a client trickling one byte at a time
 * would hold its slot for as long as it likes. */
static void listener_on_proxy_deadline(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  listener_proxy_failed((proxy_wait *)arg, "no PROXY protocol header in time", ETIMEDOUT);
}

static void listener_on_proxy_readable(evutil_socket_t fd, short what, void *arg) {
  proxy_wait *w = (proxy_wait *)arg;
  evtcp_addr client;
  proxy_result r;
  (void)what;
  memset(&client, 0, sizeof client);
  r = proxy_read(&w->reader, fd, &client);
  if (r == PROXY_AGAIN) return;
  if (r == PROXY_BAD) { listener_proxy_failed(w, w->reader.why, w->reader.err); return; }
  if (client.sa.sa_family != 0) w->peer = client;
  listener_proxy_offer(w);
}

/* Behind a balancer: read the client's PROXY header before anything else. */
void listener_proxy_start(evtcp_listener *l, evutil_socket_t fd, const struct sockaddr *sa, int socklen) {
  proxy_wait *w = (proxy_wait *)calloc(1, sizeof *w);
  struct timeval tv;
  if (w == NULL) { evutil_closesocket(fd); return; }
  w->l = l;
  w->fd = fd;
  memcpy(&w->peer, sa, (size_t)socklen < sizeof w->peer ? (size_t)socklen : sizeof w->peer);
  w->ev = event_new(l->obj.loop->base, fd, EV_READ | EV_PERSIST, listener_on_proxy_readable, w);
  if (l->proxy_timeout > 0) /* 0: none, as readTimeout = 0 means everywhere */
    w->deadline_ev = evtimer_new(l->obj.loop->base, listener_on_proxy_deadline, w);
  if (w->ev == NULL || (l->proxy_timeout > 0 && w->deadline_ev == NULL)) {
    if (w->ev) event_free(w->ev);
    evutil_closesocket(fd);
    free(w);
    return;
  }
  w->next = l->proxy_waits;
  if (w->next) w->next->prev = w;
  l->proxy_waits = w;
  event_add(w->ev, NULL);
  if (w->deadline_ev) {
    tv = seconds_tv(l->proxy_timeout);
    event_add(w->deadline_ev, &tv);
  }
}

/* After accept() took the held client: the oldest client whose header was
 * read meanwhile is offered next. */
void listener_offer_ready(evtcp_listener *l) {
  proxy_wait *w, *oldest = NULL;
  for (w = l->proxy_waits; w != NULL; w = w->next)
    if (w->ready) oldest = w; /* the list is newest first */
  if (oldest != NULL && l->held_fd < 0 && !l->closed) listener_proxy_offer(oldest);
}

