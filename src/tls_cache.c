/*
 * tls_cache.c - client sessions kept for resumption, per Lua state: the
 * next connection to the same host, port and settings resumes the last
 * one's session (a TLS 1.3 ticket, a TLS 1.2 ticket or session id).
 * Newest first; a short list, so a linear search.
 */
#include "platform.h" /* first: feature macros */
#include <stdlib.h>
#include <string.h>
#include "tls_context.h"

#define TLS_CACHE_MAX 128 /* host:port pairs per Lua state; the oldest go first */

struct tls_cached {
  struct tls_cached *next;
  SSL_SESSION *session;
  char key[1];              /* "host:port|settings", allocated to length */
};

/* Keeps session (ours now) for key, replacing the one it had; the newest
 * first, and past TLS_CACHE_MAX the oldest (the last) goes. */
void tls_cache_put(evtcp_loop *loop, const char *key, SSL_SESSION *session) {
  struct tls_cached **p, *e;
  size_t n = 0;
  for (e = loop->tls_sessions; e != NULL; e = e->next)
    if (strcmp(e->key, key) == 0) {
      SSL_SESSION_free(e->session);
      e->session = session;
      return;
    }
  e = (struct tls_cached *)malloc(sizeof *e + strlen(key));
  if (e == NULL) { SSL_SESSION_free(session); return; }
  strcpy(e->key, key);
  e->session = session;
  e->next = loop->tls_sessions;
  loop->tls_sessions = e;
  for (p = &loop->tls_sessions; *p != NULL && ++n < TLS_CACHE_MAX; p = &(*p)->next) {}
  if (*p != NULL && (*p)->next != NULL) { /* one too many: drop the tail */
    e = (*p)->next;
    (*p)->next = NULL;
    SSL_SESSION_free(e->session);
    free(e);
  }
}

SSL_SESSION *tls_cache_get(evtcp_loop *loop, const char *key) {
  struct tls_cached *e;
  for (e = loop->tls_sessions; e != NULL; e = e->next)
    if (strcmp(e->key, key) == 0) return SSL_SESSION_is_resumable(e->session) ? e->session : NULL;
  return NULL;
}

void tls_cache_free_all(evtcp_loop *loop) {
  while (loop->tls_sessions != NULL) {
    struct tls_cached *e = loop->tls_sessions;
    loop->tls_sessions = e->next;
    SSL_SESSION_free(e->session);
    free(e);
  }
}
