/*
 * socket.c - making sockets: a non-blocking, close-on-exec socket; the
 * listening sockets of TCP ports and Unix paths (stale socket files
 * replaced); adopting a socket that listens already. No Lua here.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include "evtcp.h"
#include "socket.h"

/* A non-blocking, close-on-exec stream socket of family, or -1 with *err. */
evutil_socket_t socket_new(int family, int *err) {
  evutil_socket_t fd = socket(family, SOCK_STREAM, 0);
  if (fd < 0) { *err = errno; return -1; }
  if (evutil_make_socket_nonblocking(fd) != 0 || evutil_make_socket_closeonexec(fd) != 0) {
    *err = errno;
    evutil_closesocket(fd);
    return -1;
  }
  return fd;
}

/* Makes the listening socket ourselves rather than with libevent's
 * evconnlistener_new_bind: libevent 2.1 sets SO_REUSEPORT only on Linux,
 * and turns SO_KEEPALIVE on for the listening socket, which accepted
 * sockets would inherit. Returns the socket, or -1 with *err set. */
evutil_socket_t socket_listen_ip(const struct sockaddr *sa, int len, const socket_listen_options *o, int *err) {
  int one = 1;
  evutil_socket_t fd = socket_new(sa->sa_family, err);
  if (fd < 0) return -1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) goto fail;
  if (o->reuse_port) {
#ifdef SO_REUSEPORT
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) goto fail;
#else
    errno = ENOPROTOOPT; /* this system cannot share a port */
    goto fail;
#endif
  }
  /* IPv6: dual-stack unless ipv6Only, whatever the system's default */
  if (sa->sa_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &o->v6only, sizeof o->v6only) != 0)
    goto fail;
  if (bind(fd, sa, (socklen_t)len) != 0) goto fail;
  if (o->fast_open > 0) {
#ifdef TCP_FASTOPEN
    if (setsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN, &o->fast_open, sizeof o->fast_open) != 0) goto fail;
#else
    errno = ENOPROTOOPT; /* no TCP Fast Open here */
    goto fail;
#endif
  }
  if (listen(fd, o->backlog) != 0) goto fail;
  return fd;
fail:
  *err = errno;
  evutil_closesocket(fd);
  return -1;
}

/* A socket file at path that no process listens on (left by one that
 * died): connecting to it is refused. A live listener, or anything that is
 * not a socket, is not stale and is never removed. */
static int unix_file_is_stale(const char *path) {
  struct stat st;
  struct sockaddr_un sun;
  evutil_socket_t probe;
  int stale;
  if (lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode) || strlen(path) >= sizeof sun.sun_path) return 0;
  memset(&sun, 0, sizeof sun);
  sun.sun_family = AF_UNIX;
  memcpy(sun.sun_path, path, strlen(path) + 1);
  probe = socket(AF_UNIX, SOCK_STREAM, 0);
  if (probe < 0) return 0;
  /* non-blocking: a live listener with a full backlog says EAGAIN */
  evutil_make_socket_nonblocking(probe);
  stale = connect(probe, (struct sockaddr *)&sun, sizeof sun) != 0 && errno == ECONNREFUSED;
  evutil_closesocket(probe);
  return stale;
}

/* Binds and listens on a Unix socket ("unix:/path" or "unix:@name"),
 * replacing a stale socket file. Returns the socket, or -1 with *err;
 * *file is the socket file made (st_ino 0: none, the abstract namespace),
 * for the listener to remove at its end. */
evutil_socket_t socket_listen_unix(const char *spec, int backlog, struct stat *file, int *err) {
  struct sockaddr_un sun;
  socklen_t len;
  const char *why;
  int is_file;
  evutil_socket_t fd;
  memset(file, 0, sizeof *file);
  sockaddr_unix_parse(spec, &sun, &len, &why); /* checked by the caller */
  is_file = sun.sun_path[0] != '\0';
  if ((fd = socket_new(AF_UNIX, err)) < 0) return -1;
  if (bind(fd, (struct sockaddr *)&sun, len) != 0) {
    if (!(errno == EADDRINUSE && is_file && unix_file_is_stale(sun.sun_path))) goto fail;
    unlink(sun.sun_path);
    if (bind(fd, (struct sockaddr *)&sun, len) != 0) goto fail;
  }
  if (is_file && lstat(sun.sun_path, file) != 0) memset(file, 0, sizeof *file);
  if (listen(fd, backlog) != 0) goto fail;
  return fd;
fail:
  *err = errno;
  evutil_closesocket(fd);
  return -1;
}

/* Adopts a socket that is bound and listening already (systemd, inetd).
 * Returns fd, or -1 with *err (EINVAL: not a listening stream socket): fd
 * is left open for its owner then. A Unix socket's name goes to *unix_name
 * (malloc'd), else it is left NULL. */
evutil_socket_t socket_adopt_listening(evutil_socket_t fd, char **unix_name, int *err) {
  int type = 0, listening = 0;
  socklen_t n = sizeof type;
  struct sockaddr_storage ss;
  socklen_t sslen = sizeof ss;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &n) != 0) {
    *err = errno == ENOTSOCK ? EINVAL : errno; /* a file or a pipe: not a listening socket either */
    return -1;
  }
  n = sizeof listening;
  if (type != SOCK_STREAM || getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &n) != 0 || !listening) {
    *err = EINVAL;
    return -1;
  }
  if (getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0 ||
      evutil_make_socket_nonblocking(fd) != 0 || evutil_make_socket_closeonexec(fd) != 0) {
    *err = errno;
    return -1;
  }
  if (ss.ss_family == AF_UNIX) {
    const struct sockaddr_un *sun = (const struct sockaddr_un *)&ss;
    size_t len = sslen > offsetof(struct sockaddr_un, sun_path) ? sslen - offsetof(struct sockaddr_un, sun_path) : 0;
    char name[sizeof sun->sun_path + 1];
    if (len > 0 && sun->sun_path[0] == '\0') { /* abstract: "@name" */
      name[0] = '@';
      memcpy(name + 1, sun->sun_path + 1, len - 1);
      name[len] = '\0';
    } else {
      memcpy(name, sun->sun_path, len);
      name[len] = '\0'; /* len counts the path's NUL, or not: both end here */
    }
    if ((*unix_name = strdup(name)) == NULL) { *err = ENOMEM; return -1; }
  }
  return fd;
}

