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
 *   sockopt.blackhole(ip [, port])      -> port, listening fd, filler fd:
 *       a listener on ip (IPv4 or IPv6) whose accept queue is full (backlog
 *       0 and one connection never accepted), so further SYNs are dropped
 *       and connects to it stay pending, as to an address that drops
 *       packets
 *   sockopt.accept(fd)                  -> fd of a connection taken from a
 *       listener's queue (a black hole's filler: its queue has room again)
 *   sockopt.syn_sent(ip, port)          -> number of this machine's sockets
 *       still connecting (SYN_SENT) to ip:port, from /proc/net/tcp{,6}
 */
#include <fcntl.h>
#include <stdio.h>
#include <strings.h>
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

/* ip:port into ss; its length, or 0 if ip is no address. */
static socklen_t sockaddr_of(const char *ip, int port, struct sockaddr_storage *ss) {
  struct sockaddr_in *in = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
  memset(ss, 0, sizeof *ss);
  if (inet_pton(AF_INET, ip, &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons((unsigned short)port);
    return sizeof *in;
  }
  if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((unsigned short)port);
    return sizeof *in6;
  }
  return 0;
}

static int sockopt_blackhole(lua_State *L) {
  struct sockaddr_storage ss;
  socklen_t len = sockaddr_of(luaL_checkstring(L, 1), (int)luaL_optinteger(L, 2, 0), &ss), la = sizeof ss;
  int l, filler, one = 1;
  if (len == 0) return luaL_argerror(L, 1, "an IP address expected");
  if ((l = socket(ss.ss_family, SOCK_STREAM, 0)) < 0) return 0;
  if (ss.ss_family == AF_INET6) setsockopt(l, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(l, (struct sockaddr *)&ss, len) != 0 || listen(l, 0) != 0 ||
      getsockname(l, (struct sockaddr *)&ss, &la) != 0) {
    close(l);
    return 0;
  }
  /* the one connection the queue holds: the next SYN finds it full */
  if ((filler = socket(ss.ss_family, SOCK_STREAM, 0)) < 0 || connect(filler, (struct sockaddr *)&ss, la) != 0) {
    close(l);
    if (filler >= 0) close(filler);
    return 0;
  }
  lua_pushinteger(L, port_of(&ss));
  lua_pushinteger(L, l);
  lua_pushinteger(L, filler);
  return 3;
}

static int sockopt_accept(lua_State *L) {
  int fd = accept((int)luaL_checkinteger(L, 1), NULL, NULL);
  if (fd < 0) return 0;
  lua_pushinteger(L, fd);
  return 1;
}

/* Counts the lines of a /proc/net/tcp file in state SYN_SENT (02) whose
 * remote address is rem (as the file prints it). */
static int count_syn_sent(const char *file, const char *rem) {
  char line[512], local[128], remote[128], state[8];
  int n = 0;
  FILE *f = fopen(file, "r");
  if (f == NULL) return 0;
  while (fgets(line, sizeof line, f)) {
    if (sscanf(line, "%*s %127s %127s %7s", local, remote, state) == 3 &&
        strcmp(state, "02") == 0 && strcasecmp(remote, rem) == 0)
      n++;
  }
  fclose(f);
  return n;
}

static int sockopt_syn_sent(lua_State *L) {
  struct sockaddr_storage ss;
  char rem[64];
  int port = (int)luaL_checkinteger(L, 2);
  if (sockaddr_of(luaL_checkstring(L, 1), port, &ss) == 0) return luaL_argerror(L, 1, "an IP address expected");
  if (ss.ss_family == AF_INET) {
    /* the address as the kernel's 32-bit word, printed in host order */
    unsigned a = ((struct sockaddr_in *)&ss)->sin_addr.s_addr;
    snprintf(rem, sizeof rem, "%08X:%04X", a, port);
    lua_pushinteger(L, count_syn_sent("/proc/net/tcp", rem));
  } else {
    const unsigned *w = (const unsigned *)(const void *)&((struct sockaddr_in6 *)&ss)->sin6_addr;
    snprintf(rem, sizeof rem, "%08X%08X%08X%08X:%04X", w[0], w[1], w[2], w[3], port);
    lua_pushinteger(L, count_syn_sent("/proc/net/tcp6", rem));
  }
  return 1;
}

int luaopen_sockopt(lua_State *L);
int luaopen_sockopt(lua_State *L) {
  static const luaL_Reg f[] = {
    {"find", sockopt_find}, {"get", sockopt_get}, {"fds", sockopt_fds}, {"listening", sockopt_listening}, {"heap", sockopt_heap},
    {"tcp", sockopt_tcp}, {"stale_unix", sockopt_stale_unix}, {"close", sockopt_close},
    {"find_unix", sockopt_find_unix}, {"pipe", sockopt_pipe}, {"open", sockopt_open},
    {"blackhole", sockopt_blackhole}, {"accept", sockopt_accept}, {"syn_sent", sockopt_syn_sent}, {NULL, NULL}
  };
  luaL_newlib(L, f);
  return 1;
}
