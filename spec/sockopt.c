/*
 * sockopt.c - a spec helper (module "sockopt"): looks at a socket of this
 * process from the kernel's side, so a spec about a socket option checks
 * the socket and not the Lua flag it just set.
 *
 *   sockopt.find(localPort, remotePort) -> fd | nil
 *   sockopt.get(fd, name)               -> integer
 *     name: "nodelay", "keepalive", "keepidle", "keepintvl", "keepcnt",
 *     "user_timeout" (ms), "fastopen" (a listener's queue), "fastopen_connect",
 *     "rcvbuf", "tos", "tclass", "ttl", "mark", "v6only", "linger" (seconds, -1 off)
 *   sockopt.listening(port)             -> fd of a listening socket on port | nil
 *   sockopt.fds()                       -> number of open descriptors
 *   sockopt.heap()                      -> bytes malloc has handed out
 *   sockopt.tcp(listen)                 -> fd, port: a blocking TCP socket
 *       bound to 127.0.0.1 (port chosen by the kernel), listening if asked,
 *       as systemd hands one over
 *   sockopt.stale_unix(path)            -> true: leaves a socket file at
 *       path that nobody listens on, as a process that died leaves it
 *   sockopt.close(fd)
 *   sockopt.find_unix(path)             -> fd of a connected (not listening)
 *       socket of this process whose own address is path | nil
 *   sockopt.pipe()                      -> read fd, write fd of a new pipe
 *   sockopt.open(path)                  -> fd of path, opened for reading
 */
#include <fcntl.h>
#include <malloc.h>
#include <dirent.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/tcp.h>
#include <lua.h>
#include <lauxlib.h>

static int port_of(const struct sockaddr_storage *ss) {
  if (ss->ss_family == AF_INET) return ntohs(((const struct sockaddr_in *)ss)->sin_port);
  if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
  return -1;
}

static int sockopt_find(lua_State *L) {
  int local = (int)luaL_checkinteger(L, 1), remote = (int)luaL_checkinteger(L, 2), fd;
  for (fd = 0; fd < 65536; fd++) {
    struct sockaddr_storage a, b;
    socklen_t la = sizeof a, lb = sizeof b;
    if (getsockname(fd, (struct sockaddr *)&a, &la) != 0) continue;
    if (getpeername(fd, (struct sockaddr *)&b, &lb) != 0) continue;
    if (port_of(&a) == local && port_of(&b) == remote) {
      lua_pushinteger(L, fd);
      return 1;
    }
  }
  return 0;
}

static int sockopt_listening(lua_State *L) {
  int port = (int)luaL_checkinteger(L, 1), fd;
  for (fd = 0; fd < 65536; fd++) {
    struct sockaddr_storage a;
    socklen_t la = sizeof a;
    int listening = 0;
    socklen_t ll = sizeof listening;
    if (getsockname(fd, (struct sockaddr *)&a, &la) != 0 || port_of(&a) != port) continue;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) == 0 && listening) {
      lua_pushinteger(L, fd);
      return 1;
    }
  }
  return 0;
}

static int sockopt_get(lua_State *L) {
  int fd = (int)luaL_checkinteger(L, 1);
  const char *name = luaL_checkstring(L, 2);
  int v = 0;
  socklen_t len = sizeof v;
  int rc;
  if (strcmp(name, "nodelay") == 0) rc = getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len);
  else if (strcmp(name, "keepalive") == 0) rc = getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len);
  else if (strcmp(name, "keepidle") == 0) rc = getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len);
  else if (strcmp(name, "v6only") == 0) rc = getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len);
  else if (strcmp(name, "keepintvl") == 0) rc = getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, &len);
  else if (strcmp(name, "keepcnt") == 0) rc = getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, &len);
  else if (strcmp(name, "user_timeout") == 0) rc = getsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &v, &len);
  else if (strcmp(name, "fastopen") == 0) rc = getsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN, &v, &len);
  else if (strcmp(name, "fastopen_connect") == 0) rc = getsockopt(fd, IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &v, &len);
  else if (strcmp(name, "rcvbuf") == 0) rc = getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len);
  else if (strcmp(name, "tos") == 0) rc = getsockopt(fd, IPPROTO_IP, IP_TOS, &v, &len);
  else if (strcmp(name, "tclass") == 0) rc = getsockopt(fd, IPPROTO_IPV6, IPV6_TCLASS, &v, &len);
  else if (strcmp(name, "ttl") == 0) rc = getsockopt(fd, IPPROTO_IP, IP_TTL, &v, &len);
  else if (strcmp(name, "mark") == 0) rc = getsockopt(fd, SOL_SOCKET, SO_MARK, &v, &len);
  else if (strcmp(name, "linger") == 0) {
    struct linger lg;
    len = sizeof lg;
    rc = getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &len);
    v = lg.l_onoff ? lg.l_linger : -1;
  } else return luaL_argerror(L, 2, "unknown option");
  if (rc != 0) return luaL_error(L, "getsockopt(%d, %s) failed", fd, name);
  lua_pushinteger(L, v);
  return 1;
}

static int sockopt_fds(lua_State *L) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  struct dirent *e;
  if (d == NULL) return luaL_error(L, "cannot open /proc/self/fd");
  while ((e = readdir(d)) != NULL) if (e->d_name[0] != '.') n++;
  closedir(d);
  lua_pushinteger(L, n - 1); /* the directory's own descriptor */
  return 1;
}

static int sockopt_heap(lua_State *L) {
  struct mallinfo2 m = mallinfo2();
  lua_pushinteger(L, (lua_Integer)(m.uordblks + m.hblkhd));
  return 1;
}

static int sockopt_tcp(lua_State *L) {
  int want_listen = lua_toboolean(L, 1);
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || (want_listen && listen(fd, 16) != 0) ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0)
    return luaL_error(L, "cannot make a TCP socket");
  lua_pushinteger(L, fd);
  lua_pushinteger(L, ntohs(a.sin_port));
  return 2;
}

static int sockopt_stale_unix(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  struct sockaddr_un a;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  if (n >= sizeof a.sun_path) return luaL_error(L, "path too long");
  memcpy(a.sun_path, path, n);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 1) != 0)
    return luaL_error(L, "cannot bind %s", path);
  close(fd); /* the file stays, with nobody behind it */
  lua_pushboolean(L, 1);
  return 1;
}

static int sockopt_find_unix(lua_State *L) {
  size_t n;
  const char *path = luaL_checklstring(L, 1, &n);
  int fd;
  for (fd = 0; fd < 65536; fd++) {
    struct sockaddr_un a;
    socklen_t la = sizeof a;
    int listening = 0;
    socklen_t ll = sizeof listening;
    memset(&a, 0, sizeof a);
    if (getsockname(fd, (struct sockaddr *)&a, &la) != 0 || a.sun_family != AF_UNIX) continue;
    if (strncmp(a.sun_path, path, sizeof a.sun_path) != 0) continue;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) == 0 && !listening) {
      lua_pushinteger(L, fd);
      return 1;
    }
  }
  return 0;
}

static int sockopt_close(lua_State *L) {
  lua_pushboolean(L, close((int)luaL_checkinteger(L, 1)) == 0);
  return 1;
}

static int sockopt_pipe(lua_State *L) {
  int fds[2];
  if (pipe(fds) != 0) return 0;
  lua_pushinteger(L, fds[0]);
  lua_pushinteger(L, fds[1]);
  return 2;
}

static int sockopt_open(lua_State *L) {
  int fd = open(luaL_checkstring(L, 1), O_RDONLY);
  if (fd < 0) return 0;
  lua_pushinteger(L, fd);
  return 1;
}

int luaopen_sockopt(lua_State *L);
int luaopen_sockopt(lua_State *L) {
  static const luaL_Reg f[] = {
    {"find", sockopt_find}, {"get", sockopt_get}, {"fds", sockopt_fds}, {"listening", sockopt_listening}, {"heap", sockopt_heap},
    {"tcp", sockopt_tcp}, {"stale_unix", sockopt_stale_unix}, {"close", sockopt_close},
    {"find_unix", sockopt_find_unix}, {"pipe", sockopt_pipe}, {"open", sockopt_open}, {NULL, NULL}
  };
  luaL_newlib(L, f);
  return 1;
}
