/*
 * conn_race.c - connecting to a name with several addresses: Happy
 * Eyeballs (RFC 8305). The addresses are tried in the order the families
 * alternate in, starting with the family of the resolver's first one;
 * each attempt is a socket of our own whose non-blocking connect we watch.
 * A new attempt starts `attemptDelay` seconds after the last one, or at
 * once when one fails; an attempt that is still pending is never given up
 * for a later one (Node's nodejs/node#54359 and #48403 did: a slow first
 * address then never connects). The first socket to connect wins: the
 * others are closed, unseen by the program, and the winner is handed to
 * the transport, which makes its bufferevent on it (TLS's handshake starts
 * there). The connect timeout (conn_connect.c) bounds the whole race.
 *
 * Only a TCP connect races; a TLS handshake that fails after it is tried
 * again on the next address not yet tried (conn_try_next_address), as a
 * refused one would be.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "conn.h"

typedef struct race_attempt {
  struct conn_race *race;
  evutil_socket_t fd;     /* -1: not started, or over */
  struct event *ev;       /* writable: the connect finished */
  const struct evutil_addrinfo *ai;
} race_attempt;

struct conn_race {
  evtcp_conn *c;
  race_attempt *attempts; /* one per address, in the order tried */
  size_t count, next;     /* next: the first not started */
  size_t in_flight;
  struct event *stagger;  /* attemptDelay after the last start */
};

static void race_next(conn_race *r);

/* RFC 8305 section 4: the families alternate, starting with the first
 * address's; within a family the resolver's order is kept. */
static void race_order(conn_race *r, struct evutil_addrinfo *addrs) {
  const struct evutil_addrinfo *lead = addrs, *other = addrs;
  int family = addrs->ai_family;
  size_t n = 0;
  while (lead || other) {
    /* the next of each family not yet taken */
    while (lead && lead->ai_family != family) lead = lead->ai_next;
    while (other && other->ai_family == family) other = other->ai_next;
    if (lead) { r->attempts[n++].ai = lead; lead = lead->ai_next; }
    if (other) { r->attempts[n++].ai = other; other = other->ai_next; }
  }
  r->count = n;
}

static void attempt_close(race_attempt *a) {
  if (a->ev) { event_free(a->ev); a->ev = NULL; }
  if (a->fd >= 0) {
    evutil_closesocket(a->fd);
    a->fd = -1;
    a->race->in_flight--;
  }
}

/* Frees the race and every attempt still pending. No Lua. */
void conn_race_free(conn_race *r) {
  size_t i;
  if (r == NULL) return;
  for (i = 0; i < r->count; i++) attempt_close(&r->attempts[i]);
  if (r->stagger) event_free(r->stagger);
  free(r->attempts);
  free(r);
}

/* a won: its socket goes to the transport; the others in flight are
 * closed, unseen. The addresses not started yet stay, in case the
 * transport fails before OPEN. r may be gone when this returns. */
static void race_win(conn_race *r, race_attempt *a) {
  evtcp_conn *c = r->c;
  evutil_socket_t fd = a->fd;
  const struct evutil_addrinfo *ai = a->ai;
  size_t i;
  if (a->ev) { event_free(a->ev); a->ev = NULL; }
  a->fd = -1;
  r->in_flight--;
  for (i = 0; i < r->count; i++) attempt_close(&r->attempts[i]);
  evtimer_del(r->stagger);
  memcpy(&c->peer, ai->ai_addr, ai->ai_addrlen < sizeof c->peer ? ai->ai_addrlen : sizeof c->peer);
  conn_connected_socket(c, fd);
}

/* One attempt failed: its reason is kept (the last one is reported); the
 * next address starts at once. */
static void race_lost(conn_race *r, race_attempt *a, int err) {
  conn_note_failure(r->c, err, "libevent");
  attempt_close(a);
  evtimer_del(r->stagger);
  race_next(r);
}

static void attempt_on_writable(evutil_socket_t fd, short what, void *arg) {
  race_attempt *a = (race_attempt *)arg;
  int err = 0;
  socklen_t len = sizeof err;
  (void)what;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0) race_win(a->race, a);
  else race_lost(a->race, a, err);
}

/* Starts the attempt: 1 if it connected at once (it has won), 0 if it
 * is in flight, -1 if it failed at once (noted). */
static int attempt_start(conn_race *r, race_attempt *a) {
  evtcp_conn *c = r->c;
  int err = 0;
  a->race = r;
  a->fd = conn_own_socket(c, a->ai->ai_family, &err);
  if (a->fd < 0) return conn_note_failure(c, err ? err : ENOMEM, "evtcp");
  r->in_flight++;
  if (connect(a->fd, a->ai->ai_addr, (socklen_t)a->ai->ai_addrlen) == 0) {
    /* fastOpen connects at once (the SYN leaves with the first data) */
    a->ev = NULL;
    race_win(r, a);
    return 1;
  }
  err = errno;
  if (err == EINPROGRESS || err == EINTR) {
    a->ev = event_new(c->obj.loop->base, a->fd, EV_WRITE, attempt_on_writable, a);
    if (a->ev && event_add(a->ev, NULL) == 0) return 0;
    err = ENOMEM;
  }
  conn_note_failure(c, err, "libevent");
  attempt_close(a);
  return -1;
}

static void race_on_stagger(evutil_socket_t fd, short what, void *arg) {
  (void)fd; (void)what;
  race_next((conn_race *)arg);
}

/* Starts the next address, and arms the delay before the one after it;
 * an address that fails at once gives way to the next at once. With
 * nothing left to start and nothing in flight, the connection fails. */
static void race_next(conn_race *r) {
  while (r->next < r->count) {
    int started = attempt_start(r, &r->attempts[r->next++]);
    if (started == 1) return; /* won: r may be gone */
    if (started == 0) {
      if (r->next < r->count) {
        struct timeval tv = seconds_tv(r->c->client->attempt_delay);
        evtimer_add(r->stagger, &tv);
      }
      return;
    }
  }
  if (r->in_flight == 0) conn_connect_failed(r->c);
}

/* Races the connection to addrs (owned by c->client). Runs no Lua. */
void conn_race_start(evtcp_conn *c, struct evutil_addrinfo *addrs) {
  conn_race *r = (conn_race *)calloc(1, sizeof *r);
  size_t n = 0, i;
  const struct evutil_addrinfo *ai;
  for (ai = addrs; ai; ai = ai->ai_next) n++;
  if (r) r->attempts = (race_attempt *)calloc(n, sizeof *r->attempts);
  if (r) r->stagger = evtimer_new(c->obj.loop->base, race_on_stagger, r);
  if (r == NULL || r->attempts == NULL || r->stagger == NULL) {
    conn_race_free(r);
    conn_note_failure(c, ENOMEM, "evtcp");
    conn_connect_failed(c);
    return;
  }
  for (i = 0; i < n; i++) r->attempts[i].fd = -1;
  r->c = c;
  race_order(r, addrs);
  c->client->race = r;
  c->state = CONN_CONNECTING;
  race_next(r);
}

/* The winner's transport failed before OPEN (not finally: see the
 * transport's explain): the addresses not started yet race on. */
void conn_try_next_address(evtcp_conn *c) {
  conn_race *r = c->client->race;
  if (r == NULL) { conn_connect_failed(c); return; }
  race_next(r);
}
