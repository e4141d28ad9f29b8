/*
 * resolve.c - asynchronous host-name resolution with evdns.
 *
 * A lookup is its own small allocation because it can outlive the object
 * that asked for it: evdns reports a cancellation later, from the loop. The
 * loop keeps the lookups in flight on a list so that lua_close can free the
 * ones evdns never reported back.
 *
 * Names under ".invalid" fail at once, without a query (RFC 6761, 6.4:
 * resolvers should answer them negatively themselves). /etc/hosts is read
 * by evdns when the resolver is created, on the first host-name lookup.
 */
#include "platform.h" /* first: feature macros */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include "evtcp.h"

struct evtcp_lookup {
  evtcp_loop *loop;
  struct evdns_getaddrinfo_request *request;
  lookup_cb cb;
  void *owner;            /* NULL once cancelled */
  evtcp_lookup *next, *prev;
};

static int is_invalid_name(const char *host) {
  size_t n = strlen(host);
  if (n > 0 && host[n - 1] == '.') n--;
  if (n == 7 && strncasecmp(host, "invalid", 7) == 0) return 1;
  return n > 8 && strncasecmp(host + n - 8, ".invalid", 8) == 0;
}

static void lookup_unlink(evtcp_lookup *lk) {
  if (lk->prev) lk->prev->next = lk->next;
  else lk->loop->lookups = lk->next;
  if (lk->next) lk->next->prev = lk->prev;
}

/* evdns's callback: hands the result to the owner, unless cancelled. */
static void lookup_done(int result, struct evutil_addrinfo *res, void *arg) {
  evtcp_lookup *lk = (evtcp_lookup *)arg;
  lookup_unlink(lk);
  if (lk->owner != NULL && !lk->loop->closing)
    lk->cb(lk->owner, result, res); /* the owner takes res */
  else if (res != NULL)
    evutil_freeaddrinfo(res);
  free(lk);
}

/* The loop's evdns, made on first use from the system's configuration
 * (resolv.conf and /etc/hosts); NULL without memory. */
static struct evdns_base *resolve_base(evtcp_loop *loop) {
  if (loop->dns == NULL) loop->dns = evdns_base_new(loop->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
  return loop->dns;
}

/* Adds the names of a hosts file (the /etc/hosts format) to those the
 * resolver answers from, before asking a name server. evdns keeps the
 * entries it has. Returns 0, or -1 with errno when the file cannot be read. */
int resolve_add_hosts(evtcp_loop *loop, const char *path) {
  FILE *f = fopen(path, "r"); /* evdns, failing to read it, would add a default localhost */
  if (f == NULL) return -1;
  fclose(f);
  if (resolve_base(loop) == NULL) { errno = ENOMEM; return -1; }
  return evdns_base_load_hosts(loop->dns, path) == 0 ? 0 : -1;
}

/* Starts resolving host (port: the numeric service put in each address).
 * cb may run before this returns (answers from
 * /etc/hosts, .invalid names), in which case NULL is returned; otherwise
 * the lookup, which lookup_cancel() can stop. */
evtcp_lookup *lookup_start(evtcp_loop *loop, const char *host, const char *port,
                           lookup_cb cb, void *owner) {
  struct evutil_addrinfo hints;
  struct evdns_getaddrinfo_request *req;
  evtcp_lookup *lk;
  if (is_invalid_name(host)) {
    cb(owner, EVUTIL_EAI_NONAME, NULL);
    return NULL;
  }
  if (resolve_base(loop) == NULL) {
    cb(owner, EVUTIL_EAI_FAIL, NULL);
    return NULL;
  }
  lk = (evtcp_lookup *)calloc(1, sizeof *lk);
  if (lk == NULL) {
    cb(owner, EVUTIL_EAI_MEMORY, NULL);
    return NULL;
  }
  lk->loop = loop;
  lk->cb = cb;
  lk->owner = owner;
  lk->next = loop->lookups;
  if (loop->lookups) loop->lookups->prev = lk;
  loop->lookups = lk;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = EVUTIL_AI_NUMERICSERV;
  req = evdns_getaddrinfo(loop->dns, host, port, &hints, lookup_done, lk);
  if (req == NULL) return NULL; /* answered already: lk is freed */
  lk->request = req;
  return lk;
}

/* Stops a lookup: the owner hears nothing more; lk is freed when evdns
 * reports the cancellation. */
void lookup_cancel(evtcp_lookup *lk) {
  if (lk == NULL || lk->owner == NULL) return;
  lk->owner = NULL;
  evdns_getaddrinfo_cancel(lk->request);
}

/* At lua_close (loop_at_close): cancelled lookups report back from the
 * loop, so it runs a few times for them (their C callbacks see `closing`
 * and run no Lua); then evdns goes, and what it never reported. */
void resolve_close(evtcp_loop *loop) {
  int passes;
  for (passes = 0; passes < 4 && loop->lookups != NULL; passes++)
    event_base_loop(loop->base, EVLOOP_NONBLOCK);
  if (loop->dns) {
    evdns_base_free(loop->dns, 0);
    loop->dns = NULL;
  }
  while (loop->lookups != NULL) {
    evtcp_lookup *lk = loop->lookups;
    loop->lookups = lk->next;
    free(lk);
  }
}
