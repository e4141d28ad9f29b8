/*
 * sockaddr.c - socket address helpers shared by connections and listeners.
 * Nothing here touches Lua but the push function.
 */
#include "platform.h" /* first: feature macros */
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include "evtcp.h"

/* host without the brackets of an IPv6 literal written as in URLs
 * ("[::1]"), copied into buf; host itself otherwise. */
const char *sockaddr_unbracket(const char *host, char *buf, size_t size) {
  size_t n = strlen(host);
  if (n < 2 || host[0] != '[' || host[n - 1] != ']' || n - 2 >= size) return host;
  memcpy(buf, host + 1, n - 2);
  buf[n - 2] = '\0';
  return buf;
}

/* Fills ss from an IPv4 or IPv6 literal (IPv6 may be written in brackets).
 * Returns 0, or -1 if host is not a literal. */
int sockaddr_parse(const char *host, int port, struct sockaddr_storage *ss, int *len) {
  char buf[64];
  memset(ss, 0, sizeof *ss);
  host = sockaddr_unbracket(host, buf, sizeof buf);
  {
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    if (evutil_inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
      sin->sin_family = AF_INET;
      sin->sin_port = htons((unsigned short)port);
      *len = (int)sizeof *sin;
      return 0;
    }
  }
  {
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (evutil_inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
      sin6->sin6_family = AF_INET6;
      sin6->sin6_port = htons((unsigned short)port);
      *len = (int)sizeof *sin6;
      return 0;
    }
  }
  return -1;
}

/* Pushes the address part of sa as text, or nil. [-0, +1, m] */
void sockaddr_push_ip(lua_State *L, const struct sockaddr *sa) {
  char buf[INET6_ADDRSTRLEN];
  const char *s = NULL;
  if (sa && sa->sa_family == AF_INET)
    s = evutil_inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, sizeof buf);
  else if (sa && sa->sa_family == AF_INET6)
    s = evutil_inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf, sizeof buf);
  if (s) lua_pushstring(L, s);
  else lua_pushnil(L);
}

int sockaddr_port(const struct sockaddr *sa) {
  if (sa && sa->sa_family == AF_INET) return ntohs(((const struct sockaddr_in *)sa)->sin_port);
  if (sa && sa->sa_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
  return 0;
}

/* ---- Unix domain sockets: "unix:/path" and, on Linux, "unix:@name" ---- */

int sockaddr_is_unix(const char *spec) {
  return strncmp(spec, "unix:", 5) == 0;
}

/* Fills sun from a "unix:" address. Returns 0, or -1 with a reason if the
 * path is empty or does not fit in sun_path. The abstract namespace
 * ("@name") has no file: its address is a NUL and the name, no terminator. */
int sockaddr_unix_parse(const char *spec, struct sockaddr_un *sun, socklen_t *len,
                        const char **why) {
  const char *path = spec + 5;
  size_t n = strlen(path);
  memset(sun, 0, sizeof *sun);
  sun->sun_family = AF_UNIX;
  if (n == 0 || (path[0] == '@' && n == 1)) { *why = "the socket path is empty"; return -1; }
  if (path[0] == '@') {
#ifdef __linux__
    if (n > sizeof sun->sun_path) { *why = "the socket name is too long"; return -1; }
    memcpy(sun->sun_path + 1, path + 1, n - 1);
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    return 0;
#else
    *why = "abstract Unix socket names (unix:@name) exist on Linux only";
    return -1;
#endif
  }
  if (n >= sizeof sun->sun_path) { *why = "the socket path is too long"; return -1; }
  memcpy(sun->sun_path, path, n + 1);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
  return 0;
}
