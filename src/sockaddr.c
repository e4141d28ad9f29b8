/*
 * sockaddr.c - socket address helpers shared by connections and listeners.
 * Nothing here touches Lua but the push function.
 */
#include "platform.h" /* first: feature macros */
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include "evtcp.h"

/* Fills ss from an IPv4 or IPv6 literal (IPv6 may be written in brackets).
 * Returns 0, or -1 if host is not a literal. */
int sockaddr_parse(const char *host, int port, struct sockaddr_storage *ss, int *len) {
  char buf[64];
  size_t n = strlen(host);
  memset(ss, 0, sizeof *ss);
  if (n >= 2 && host[0] == '[' && host[n - 1] == ']' && n - 2 < sizeof buf) {
    memcpy(buf, host + 1, n - 2);
    buf[n - 2] = '\0';
    host = buf;
  }
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
