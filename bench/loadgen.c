/*
 * loadgen.c - the load generator of evtcp's benchmarks: one thread, epoll,
 * many connections to an echo server on 127.0.0.1. Every byte that comes
 * back is checked; a run with an error is reported as such and not counted.
 *
 *   loadgen pingpong PORT CONNS SIZE SECONDS  send SIZE bytes, await the echo, repeat
 *   loadgen bulk     PORT CONNS SIZE SECONDS  stream both ways in SIZE-byte writes
 *   loadgen connect  PORT CONNS 1    SECONDS  connect, echo a byte, close, repeat
 *   loadgen idle     PORT CONNS 1    SECONDS  open CONNS, echo a byte each, print
 *                                             "ready", hold them SECONDS, close
 *
 * Prints one line of key=value pairs: ops, bytes, seconds, errors, and for
 * pingpong the p50/p99 round-trip latency in microseconds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PERIOD 65521          /* the stream pattern's period: a prime */
#define MAXRUN (256 * 1024)   /* bytes readable from any stream_at() pointer */
#define AHEAD (1 << 20)       /* bulk: bytes sent ahead of the echo, at most */
#define LAT_BUCKETS 200000    /* latency histogram, 1 us buckets */

enum mode { PINGPONG, BULK, CONNECT, IDLE };

typedef struct conn {
  int fd;
  int id;
  uint64_t sent, received;    /* stream offsets */
  uint64_t round;             /* pingpong: message number */
  double started;             /* pingpong: when the message went out */
  size_t out_pos;             /* pingpong: bytes of the message written */
  int shut;                   /* connect: our FIN is out */
} conn;

static enum mode mode;
static int port, nconns;
static size_t size;
static unsigned char pattern[PERIOD + MAXRUN];
static unsigned char *message, *inbuf;
static uint64_t ops, bytes, errors;
static uint32_t *latency;
static int ep;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fail(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(2);
}

/* The bytes of connection c's stream at offset off (a pattern of prime
 * period, shifted per connection, so that crossed streams show); MAXRUN
 * bytes can be read from the pointer. */
static const unsigned char *stream_at(const conn *c, uint64_t off) {
  return pattern + (off + (uint64_t)c->id * 7919) % PERIOD;
}

/* The pingpong message of round r: the stream at offset r * size. */
static void make_message(conn *c) {
  memcpy(message, stream_at(c, c->round * size), size);
}

static int open_conn(conn *c) {
  struct sockaddr_in sin;
  struct epoll_event ev;
  int one = 1;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) fail("socket");
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&sin, sizeof sin) < 0 && errno != EINPROGRESS) fail("connect");
  c->sent = c->received = c->out_pos = 0;
  c->shut = 0;
  ev.events = EPOLLIN | EPOLLOUT;
  ev.data.ptr = c;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) fail("epoll_ctl");
  return 0;
}

static void want(conn *c, uint32_t events) {
  struct epoll_event ev;
  ev.events = events;
  ev.data.ptr = c;
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void error_on(conn *c, const char *what) {
  if (errors++ < 5) fprintf(stderr, "loadgen: connection %d: %s\n", c->id, what);
  close(c->fd);
  open_conn(c);
}

/* ---- pingpong ---- */

static void pp_write(conn *c) {
  ssize_t n;
  if (c->out_pos == 0) { make_message(c); c->started = now(); }
  n = write(c->fd, message + c->out_pos, size - c->out_pos);
  if (n < 0) { if (errno != EAGAIN) error_on(c, "write"); return; }
  c->out_pos += (size_t)n;
  want(c, c->out_pos == size ? EPOLLIN : EPOLLIN | EPOLLOUT);
}

static void pp_read(conn *c) {
  ssize_t n = read(c->fd, inbuf, size - (size_t)c->received);
  if (n <= 0) { if (n == 0 || errno != EAGAIN) error_on(c, n == 0 ? "closed by the server" : "read"); return; }
  if (memcmp(inbuf, stream_at(c, c->round * size + c->received), (size_t)n) != 0) {
    error_on(c, "echo differs");
    return;
  }
  c->received += (uint64_t)n;
  if (c->received < size) return;
  {
    uint64_t us = (uint64_t)((now() - c->started) * 1e6);
    latency[us < LAT_BUCKETS ? us : LAT_BUCKETS - 1]++;
  }
  ops++;
  bytes += size;
  c->round++;
  c->received = 0;
  c->out_pos = 0;
  pp_write(c);
}

/* ---- bulk ---- */

static void bulk_write(conn *c) {
  while (c->sent - c->received < AHEAD) {
    ssize_t w = write(c->fd, stream_at(c, c->sent), size);
    if (w < 0) { if (errno != EAGAIN) error_on(c, "write"); return; }
    c->sent += (uint64_t)w;
  }
  want(c, EPOLLIN);
}

static void bulk_read(conn *c) {
  ssize_t n = read(c->fd, inbuf, MAXRUN);
  if (n <= 0) { if (n == 0 || errno != EAGAIN) error_on(c, n == 0 ? "closed by the server" : "read"); return; }
  if (memcmp(inbuf, stream_at(c, c->received), (size_t)n) != 0) { error_on(c, "echo differs"); return; }
  c->received += (uint64_t)n;
  bytes += (uint64_t)n;
  if (c->sent - c->received < AHEAD) want(c, EPOLLIN | EPOLLOUT);
}

/* ---- connect ---- */

static void cn_event(conn *c, uint32_t events) {
  unsigned char b;
  ssize_t n;
  if ((events & EPOLLOUT) && c->sent == 0) {
    b = (unsigned char)('a' + c->id % 26);
    if (write(c->fd, &b, 1) != 1) { error_on(c, "connect or write"); return; }
    c->sent = 1;
    want(c, EPOLLIN);
    return;
  }
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  n = read(c->fd, &b, 1);
  if (n < 0 && errno == EAGAIN) return;
  if (!c->shut) {
    if (n != 1 || b != (unsigned char)('a' + c->id % 26)) { error_on(c, "echo of the byte"); return; }
    shutdown(c->fd, SHUT_WR);   /* our FIN; the server answers with its own */
    c->shut = 1;
    return;
  }
  if (n != 0) { error_on(c, "data after the echo"); return; }
  ops++;
  close(c->fd);
  open_conn(c);
}

static void run(double seconds) {
  struct epoll_event evs[256];
  double end = now() + seconds;
  while (now() < end) {
    int i, n = epoll_wait(ep, evs, 256, 100);
    for (i = 0; i < n; i++) {
      conn *c = (conn *)evs[i].data.ptr;
      uint32_t e = evs[i].events;
      switch (mode) {
      case PINGPONG:
        if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) pp_read(c);
        else if (e & EPOLLOUT) pp_write(c);
        break;
      case BULK:
        if (e & (EPOLLIN | EPOLLHUP | EPOLLERR)) bulk_read(c);
        if (e & EPOLLOUT) bulk_write(c);
        break;
      case CONNECT:
        cn_event(c, e);
        break;
      case IDLE:
        break;
      }
    }
  }
}

/* Waits for one socket to be ready for `events`; 1 if it is. */
static int wait_fd(int fd, short events) {
  struct pollfd pfd;
  pfd.fd = fd;
  pfd.events = events;
  return poll(&pfd, 1, 5000) == 1 && !(pfd.revents & (POLLERR | POLLHUP));
}

/* idle: connect all, echo one byte each (so the server has made everything
 * a connection costs it), print "ready", hold them. */
static void idle(conn *conns, double seconds) {
  int i;
  for (i = 0; i < nconns; i++) {
    unsigned char b = 'i';
    epoll_ctl(ep, EPOLL_CTL_DEL, conns[i].fd, NULL);
    if (!wait_fd(conns[i].fd, POLLOUT) || write(conns[i].fd, &b, 1) != 1 ||
        !wait_fd(conns[i].fd, POLLIN) || read(conns[i].fd, &b, 1) != 1 || b != 'i') {
      errors++;
      continue;
    }
    ops++;
  }
  printf("ready\n");
  fflush(stdout);
  usleep((useconds_t)(seconds * 1e6));
}

static double percentile(double p) {
  uint64_t total = 0, seen = 0;
  int i;
  for (i = 0; i < LAT_BUCKETS; i++) total += latency[i];
  for (i = 0; i < LAT_BUCKETS; i++) {
    seen += latency[i];
    if (total && (double)seen >= p * (double)total) return i;
  }
  return 0;
}

int main(int argc, char **argv) {
  conn *conns;
  double seconds, t0, elapsed;
  int i;
  if (argc != 6) {
    fprintf(stderr, "usage: loadgen pingpong|bulk|connect|idle PORT CONNS SIZE SECONDS\n");
    return 1;
  }
  if (strcmp(argv[1], "pingpong") == 0) mode = PINGPONG;
  else if (strcmp(argv[1], "bulk") == 0) mode = BULK;
  else if (strcmp(argv[1], "connect") == 0) mode = CONNECT;
  else if (strcmp(argv[1], "idle") == 0) mode = IDLE;
  else { fprintf(stderr, "loadgen: unknown mode %s\n", argv[1]); return 1; }
  port = atoi(argv[2]);
  nconns = atoi(argv[3]);
  size = (size_t)atol(argv[4]);
  seconds = atof(argv[5]);
  if (port <= 0 || nconns <= 0 || size == 0 || size > MAXRUN || seconds <= 0) {
    fprintf(stderr, "loadgen: bad arguments (SIZE is 1..%d)\n", MAXRUN);
    return 1;
  }
  for (i = 0; i < PERIOD + MAXRUN; i++) pattern[i] = (unsigned char)((i % PERIOD) * 2654435761u >> 13);
  message = malloc(size);
  inbuf = malloc(MAXRUN);
  latency = calloc(LAT_BUCKETS, sizeof *latency);
  conns = calloc((size_t)nconns, sizeof *conns);
  if (!message || !inbuf || !latency || !conns) fail("malloc");
  ep = epoll_create1(0);
  if (ep < 0) fail("epoll_create1");
  for (i = 0; i < nconns; i++) { conns[i].id = i; open_conn(&conns[i]); }
  t0 = now();
  if (mode == IDLE) idle(conns, seconds);
  else run(seconds);
  elapsed = now() - t0;
  printf("mode=%s conns=%d size=%zu ops=%llu bytes=%llu seconds=%.3f errors=%llu",
         argv[1], nconns, size, (unsigned long long)ops, (unsigned long long)bytes, elapsed,
         (unsigned long long)errors);
  if (mode == PINGPONG) printf(" p50_us=%.0f p99_us=%.0f", percentile(0.5), percentile(0.99));
  printf("\n");
  for (i = 0; i < nconns; i++) close(conns[i].fd);
  return errors ? 3 : 0;
}
