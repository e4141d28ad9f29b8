/*
 * proxy.h - the PROXY protocol header reader (proxy.c), used by listener.c
 * for listeners with the proxyProtocol option.
 */
#ifndef EVTCP_PROXY_H
#define EVTCP_PROXY_H

#include "conn.h"

typedef enum { PROXY_AGAIN, PROXY_DONE, PROXY_BAD } proxy_result;

/* One header being read; zero it to start. */
typedef struct proxy_reader {
  unsigned char buf[128];  /* the header so far (a longer v2 TLV tail is skipped) */
  size_t have;             /* header bytes taken from the socket */
  const char *why;         /* PROXY_BAD: what was wrong */
  int err;                 /* PROXY_BAD on a socket error: errno */
} proxy_reader;

/* Reads what has arrived of the header on fd. PROXY_DONE: *client is the
 * original client (family 0 when the header names none: LOCAL, UNKNOWN,
 * a Unix socket), and the socket is at the first byte after the header. */
proxy_result proxy_read(proxy_reader *r, evutil_socket_t fd, evtcp_addr *client);

#endif
