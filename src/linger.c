/*
 * linger.c - the lingering close: a socket that close() ends before the
 * peer has finished sending keeps being read, and what comes is thrown
 * away, until the peer's FIN (or a bound). Closing a socket that has
 * unread bytes, or that gets bytes afterwards, makes the kernel send a RST
 * instead of a FIN, and a RST destroys what the peer had not read yet: a
 * "send, then close" would lose its own last bytes (over TLS 1.3 always,
 * since the session tickets arrive unasked). nginx's lingering close is
 * the same idea.
 *
 * The lingering socket no longer belongs to its connection (which is
 * CLOSING, and reports onShutdown at once: everything it sent is with the
 * kernel): the loop owns it, counts it as work (run() waits for it, so a
 * program that exits after run() does not reset it either) and frees it
 * at lua_close. No Lua runs here.
 */
#include "platform.h" /* first: feature macros */
#include <stdlib.h>
#include <sys/socket.h>
#include "evtcp.h"

/* The longest a closed socket waits for the peer's FIN, in seconds. A
 * deadline, not an idle time: a peer that trickles bytes cannot keep it. */
#define LINGER_SECONDS 5

struct evtcp_linger {
  evtcp_loop *loop;
  evutil_socket_t fd;
  struct event *ev;
  evtcp_linger *prev, *next;
};

static void linger_free(evtcp_linger *g) {
  evtcp_loop *loop = g->loop;
  if (g->prev) g->prev->next = g->next; else loop->lingering = g->next;
  if (g->next) g->next->prev = g->prev;
  event_free(g->ev);
  evutil_closesocket(g->fd);
  loop->active--;
  free(g);
}

/* Reads and drops what came; the FIN, an error or the deadline ends it. */
static void linger_on_readable(evutil_socket_t fd, short what, void *arg) {
  char buf[16384];
  int rounds;
  if (what & EV_TIMEOUT) { linger_free((evtcp_linger *)arg); return; }
  for (rounds = 0; rounds < 16; rounds++) {
    ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n > 0) continue;
    if (n < 0 && io_would_block(EVUTIL_SOCKET_ERROR())) return;
    linger_free((evtcp_linger *)arg); /* the FIN, or the peer reset */
    return;
  }
}

/* Takes fd: our side is shut for writing (our FIN follows what is queued
 * in the kernel) and fd closes at the peer's FIN. Without memory, fd is
 * closed at once, as it would have been. */
void linger_close(evtcp_loop *loop, evutil_socket_t fd) {
  struct timeval tv = {LINGER_SECONDS, 0};
  evtcp_linger *g = (evtcp_linger *)calloc(1, sizeof *g);
  shutdown(fd, SHUT_WR);
  if (g == NULL || loop->closing ||
      (g->ev = event_new(loop->base, fd, EV_READ | EV_PERSIST, linger_on_readable, g)) == NULL ||
      event_add(g->ev, &tv) != 0) {
    if (g && g->ev) event_free(g->ev);
    free(g);
    evutil_closesocket(fd);
    return;
  }
  g->loop = loop;
  g->fd = fd;
  g->next = loop->lingering;
  if (g->next) g->next->prev = g;
  loop->lingering = g;
  loop->active++;
}

/* lua_close: the sockets still lingering are closed now. */
void linger_close_all(evtcp_loop *loop) {
  while (loop->lingering) linger_free(loop->lingering);
}
