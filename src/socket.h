/*
 * socket.h - making sockets (socket.c), for listeners and outgoing
 * connections bound to a local address.
 */
#ifndef EVTCP_SOCKET_H
#define EVTCP_SOCKET_H

#include <sys/stat.h>
#include "evtcp.h"

evutil_socket_t socket_new(int family, int *err);
/* How a listening IP socket is made. */
typedef struct socket_listen_options {
  int backlog, reuse_port, v6only;
  int fast_open;                  /* TCP Fast Open's queue length; 0: off */
} socket_listen_options;

evutil_socket_t socket_listen_ip(const struct sockaddr *sa, int len, const socket_listen_options *o, int *err);
evutil_socket_t socket_listen_unix(const char *spec, int backlog, struct stat *file, int *err);
evutil_socket_t socket_adopt_listening(evutil_socket_t fd, char **unix_name, int *err);

#endif
