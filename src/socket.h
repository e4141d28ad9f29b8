/*
 * socket.h - making sockets (socket.c), for listeners and outgoing
 * connections bound to a local address.
 */
#ifndef EVTCP_SOCKET_H
#define EVTCP_SOCKET_H

#include <sys/stat.h>
#include "evtcp.h"

evutil_socket_t socket_new(int family, int *err);
evutil_socket_t socket_listen_ip(const struct sockaddr *sa, int len, int reuse_port, int v6only,
                                 int backlog, int *err);
evutil_socket_t socket_listen_unix(const char *spec, int backlog, struct stat *file, int *err);
evutil_socket_t socket_adopt_listening(evutil_socket_t fd, char **unix_name, int *err);

#endif
