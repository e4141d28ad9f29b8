/*
 * proxy.c - reading the PROXY protocol header (HAProxy's specification,
 * versions 1 and 2) that a load balancer sends before a client's bytes, to
 * learn the original client's address.
 *
 * The header is read straight from the socket, never past its end: what
 * follows belongs to the connection. Version 1 is a text line of at most
 * 107 bytes ending in CRLF; version 2 a 16-byte binary head that gives the
 * length of the rest. So the reader takes 15 bytes first (both versions
 * are at least that long), then, for version 1, peeks for the line end and
 * takes exactly up to it (taking all it peeked when there is no line end
 * yet, so that a partial header never leaves bytes in the socket that
 * would wake the loop again and again), and for version 2 takes exactly
 * the length announced.
 *
 * No Lua here: listener.c drives it.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "conn.h"
#include "proxy.h"

#define V1_MAX 107     /* the longest version 1 line, CRLF included */
#define V2_HEAD 16

static const unsigned char v2_signature[12] = {
  0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};

/* Could the bytes so far begin either version's header? */
static int proxy_prefix_ok(const proxy_reader *r) {
  size_t n = r->have;
  if (memcmp(r->buf, "PROXY ", n < 6 ? n : 6) == 0) return 1;
  return memcmp(r->buf, v2_signature, n < 12 ? n : 12) == 0;
}

/* Parses a decimal port: 0..65535, digits only. */
static int parse_port(const char *s, int *port) {
  long v = 0;
  if (*s == '\0' || strlen(s) > 5) return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    v = v * 10 + (*s - '0');
  }
  if (v > 65535) return -1;
  *port = (int)v;
  return 0;
}

/* "PROXY TCP4 src dst sport dport\r\n" (or TCP6, or UNKNOWN ...). */
static proxy_result proxy_parse_v1(proxy_reader *r, evtcp_addr *client) {
  char line[V1_MAX + 1], *field[6], *save = NULL, *tok;
  int n = 0, sport, dport, family;
  size_t len = r->have - 2; /* without CRLF */
  memcpy(line, r->buf, len);
  line[len] = '\0';
  for (tok = strtok_r(line, " ", &save); tok && n < 6; tok = strtok_r(NULL, " ", &save)) field[n++] = tok;
  if (n >= 2 && strcmp(field[1], "UNKNOWN") == 0) return PROXY_DONE; /* the real peer stays */
  if (n != 6 || tok != NULL) { r->why = "PROXY v1 header: wrong number of fields"; return PROXY_BAD; }
  if (strcmp(field[1], "TCP4") == 0) family = AF_INET;
  else if (strcmp(field[1], "TCP6") == 0) family = AF_INET6;
  else { r->why = "PROXY v1 header: unknown protocol"; return PROXY_BAD; }
  if (parse_port(field[4], &sport) != 0 || parse_port(field[5], &dport) != 0) {
    r->why = "PROXY v1 header: bad port";
    return PROXY_BAD;
  }
  {
    struct sockaddr_storage ss;
    int sslen;
    if (sockaddr_parse(field[2], sport, &ss, &sslen) != 0 || ss.ss_family != family || strchr(field[2], '[')) {
      r->why = "PROXY v1 header: bad source address";
      return PROXY_BAD;
    }
    memset(client, 0, sizeof *client);
    memcpy(client, &ss, (size_t)sslen);
  }
  return PROXY_DONE;
}

/* The binary head and its address block (TLVs after it are skipped). */
static proxy_result proxy_parse_v2(proxy_reader *r, evtcp_addr *client) {
  const unsigned char *h = r->buf;
  unsigned version = h[12] >> 4, command = h[12] & 0x0F, family = h[13] >> 4;
  const unsigned char *a = h + V2_HEAD;
  size_t len = ((size_t)h[14] << 8) | h[15];
  if (version != 2 || command > 1) { r->why = "PROXY v2 header: bad version or command"; return PROXY_BAD; }
  if (command == 0) return PROXY_DONE; /* LOCAL: the balancer's own check; the family is ignored */
  /* the specification lists UNSPEC and TCP over IPv4, IPv6 and a Unix
   * socket, and UDP ones; anything else "must be rejected", and a
   * datagram's addresses do not describe this stream */
  if (h[13] != 0x00 && h[13] != 0x11 && h[13] != 0x21 && h[13] != 0x31) {
    r->why = (h[13] & 0x0F) == 2 && family >= 1 && family <= 3 ? "PROXY v2 header: a datagram protocol over a stream"
                                                               : "PROXY v2 header: unknown address family or protocol";
    return PROXY_BAD;
  }
  memset(client, 0, sizeof *client);
  if (family == 3 && len < 216) { r->why = "PROXY v2 header: short Unix address block"; return PROXY_BAD; }
  if (family == 1) {
    if (len < 12) { r->why = "PROXY v2 header: short IPv4 address block"; return PROXY_BAD; }
    client->in.sin_family = AF_INET;
    memcpy(&client->in.sin_addr, a, 4);
    memcpy(&client->in.sin_port, a + 8, 2);
  } else if (family == 2) {
    if (len < 36) { r->why = "PROXY v2 header: short IPv6 address block"; return PROXY_BAD; }
    client->in6.sin6_family = AF_INET6;
    memcpy(&client->in6.sin6_addr, a, 16);
    memcpy(&client->in6.sin6_port, a + 32, 2);
  } else {
    client->sa.sa_family = 0; /* UNSPEC or a Unix socket: the real peer stays */
  }
  return PROXY_DONE;
}

/* Takes exactly want bytes more into buf (or skips them when they do not
 * fit): 1 when done, 0 to wait, -1 on EOF or an error. */
static int proxy_take(proxy_reader *r, evutil_socket_t fd, size_t want) {
  while (r->have < want) {
    unsigned char scratch[512];
    size_t room = r->have < sizeof r->buf ? sizeof r->buf - r->have : 0;
    size_t ask = want - r->have;
    unsigned char *into = room > 0 ? r->buf + r->have : scratch;
    ssize_t n;
    if (room > 0 && ask > room) ask = room;
    if (room == 0 && ask > sizeof scratch) ask = sizeof scratch;
    n = recv(fd, into, ask, 0);
    if (n > 0) { r->have += (size_t)n; continue; }
    if (n < 0 && io_would_block(errno)) return 0;
    r->err = n == 0 ? 0 : errno;
    return -1;
  }
  return 1;
}

proxy_result proxy_read(proxy_reader *r, evutil_socket_t fd, evtcp_addr *client) {
  int got;
  if (r->have < 15) {
    got = proxy_take(r, fd, 15);
    if (got < 0) goto closed;
    if (!proxy_prefix_ok(r)) { r->why = "no PROXY protocol header"; return PROXY_BAD; }
    if (got == 0) return PROXY_AGAIN;
  }
  if (r->buf[0] == 'P') { /* version 1: up to the line end */
    /* the first 15 bytes may hold it all: "PROXY UNKNOWN\r\n", which
     * HAProxy's health checks send, is exactly that long */
    while (r->have < V1_MAX && memchr(r->buf, '\n', r->have) == NULL) {
      char peek[V1_MAX];
      char *nl;
      ssize_t n = recv(fd, peek, V1_MAX - r->have, MSG_PEEK);
      if (n == 0 || (n < 0 && !io_would_block(errno))) { r->err = n == 0 ? 0 : errno; goto closed; }
      if (n < 0) return PROXY_AGAIN;
      nl = memchr(peek, '\n', (size_t)n);
      got = proxy_take(r, fd, r->have + (nl ? (size_t)(nl - peek) + 1 : (size_t)n));
      if (got < 0) goto closed;
      if (got == 0) return PROXY_AGAIN;
      if (nl) break;
    }
    if (r->buf[r->have - 1] != '\n' || r->buf[r->have - 2] != '\r' ||
        memchr(r->buf, '\n', r->have - 1) != NULL) {
      r->why = "PROXY v1 header: no CRLF within 107 bytes";
      return PROXY_BAD;
    }
    return proxy_parse_v1(r, client);
  }
  got = proxy_take(r, fd, V2_HEAD); /* version 2 */
  if (got < 0) goto closed;
  if (got == 0) return PROXY_AGAIN;
  got = proxy_take(r, fd, V2_HEAD + (((size_t)r->buf[14] << 8) | r->buf[15]));
  if (got < 0) goto closed;
  if (got == 0) return PROXY_AGAIN;
  return proxy_parse_v2(r, client);
closed:
  r->why = r->err ? "the connection failed before its PROXY header" : "the connection closed before its PROXY header";
  return PROXY_BAD;
}
