/*
 * signal.c - evtcp.signal(name, fn): process signals as loop callbacks.
 *
 * One libevent signal event per signal number, made when the first handler
 * of that signal is installed and freed when the last one is cancelled;
 * libevent keeps the disposition it replaced and puts it back then. The
 * handlers of a signal live in the registry, in the order installed; a
 * handler does not anchor anything, so it does not keep run() going.
 */
#include "platform.h" /* first: feature macros */
#include <signal.h>
#include <string.h>
#include "evtcp.h"

typedef struct evtcp_signal {
  evtcp_object obj;
  int signo;
  int installed;    /* not cancelled */
} evtcp_signal;

static void signal_release(lua_State *L, evtcp_object *obj);
static object_type signal_type = {"Signal", NULL, signal_release, 0, 0};

static const char handlers_key = 'H'; /* registry: signo -> array of handles */

static const struct { const char *name; int signo; } signal_names[] = {
  {"INT", SIGINT}, {"TERM", SIGTERM}, {"HUP", SIGHUP}, {"QUIT", SIGQUIT},
  {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {NULL, 0}
};

static const char *signal_name(int signo) {
  int i;
  for (i = 0; signal_names[i].name != NULL; i++)
    if (signal_names[i].signo == signo) return signal_names[i].name;
  return "?";
}

/* Pushes the array of handles of signo, made on first use. */
static void handlers_push(lua_State *L, int signo) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &handlers_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &handlers_key);
  }
  if (lua_rawgeti(L, -1, signo) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, signo);
  }
  lua_remove(L, -2);
}

/* The signal came: every handler of it, in the order installed. */
static void signal_on_signal(evutil_socket_t signo, short what, void *arg) {
  evtcp_loop *loop = (evtcp_loop *)arg;
  lua_State *L = loop->L;
  int top = lua_gettop(L), i, n;
  (void)what;
  handlers_push(L, (int)signo);
  n = (int)lua_rawlen(L, -1);
  /* a snapshot: a handler that cancels compacts the array, and walking it
   * by index would then skip the handler after it */
  lua_createtable(L, n, 0);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, top + 1, i);
    lua_rawseti(L, top + 2, i);
  }
  for (i = 1; i <= n && !loop_has_error(loop); i++) {
    evtcp_signal *s;
    lua_rawgeti(L, top + 2, i);
    s = (evtcp_signal *)object_test(L, -1, &signal_type);
    if (s == NULL || !s->installed) { lua_pop(L, 1); continue; }
    lua_getiuservalue(L, -1, 1);   /* handle fn */
    lua_insert(L, -2);             /* fn handle */
    lua_pushstring(L, signal_name((int)signo));
    loop_pcall(loop, 2, 0);
  }
  lua_settop(L, top);
}

/* evtcp.signal(name, fn) -> handle */
int signal_install(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  const char *name = luaL_checkstring(L, 1);
  int i, signo = 0;
  evtcp_signal *s;
  if (strncmp(name, "SIG", 3) == 0) name += 3;
  for (i = 0; signal_names[i].name != NULL; i++)
    if (strcmp(name, signal_names[i].name) == 0) signo = signal_names[i].signo;
  if (signo == 0)
    return luaL_argerror(L, 1, "signal must be INT, TERM, HUP, QUIT, USR1 or USR2");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (loop->signal_ev[signo] == NULL) {
    struct event *ev = evsignal_new(loop->base, signo, signal_on_signal, loop);
    if (ev == NULL || evsignal_add(ev, NULL) != 0) {
      if (ev) event_free(ev);
      return luaL_error(L, "evtcp: cannot catch SIG%s", name);
    }
    loop->signal_ev[signo] = ev;
    loop_signals_changed(loop);
  }
  s = (evtcp_signal *)object_new(L, loop, sizeof *s, 1, NULL, &signal_type);
  s->signo = signo;
  s->installed = 1;
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  handlers_push(L, signo);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
  return 1;
}

/* handle:cancel() -> true if it removed the handler. The last handler of a
 * signal gone, the signal's previous disposition comes back. */
static int signal_cancel(lua_State *L) {
  evtcp_signal *s = (evtcp_signal *)object_check(L, 1, &signal_type);
  evtcp_loop *loop;
  int i, n, j = 0;
  if (!s->installed) { lua_pushboolean(L, 0); return 1; }
  s->installed = 0;
  handlers_push(L, s->signo);                 /* the array, compacted */
  n = (int)lua_rawlen(L, -1);
  for (i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    if (lua_rawequal(L, -1, 1)) { lua_pop(L, 1); continue; }
    lua_rawseti(L, -2, ++j);
  }
  for (i = j + 1; i <= n; i++) { lua_pushnil(L); lua_rawseti(L, -2, i); }
  lua_pop(L, 1);
  if (j == 0) {
    loop = loop_get_unchecked(L);
    if (loop != NULL && loop->base != NULL && loop->signal_ev[s->signo] != NULL) {
      event_free(loop->signal_ev[s->signo]); /* libevent restores the disposition */
      loop->signal_ev[s->signo] = NULL;
      loop_signals_changed(loop);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* An installed handle is held by the handlers' array: one collected was
 * cancelled, or lua_close is finalizing everything. */
static void signal_release(lua_State *L, evtcp_object *obj) {
  (void)L;
  ((evtcp_signal *)obj)->installed = 0;
}

/* Frees the signal events at lua_close, before the event_base. */
void signal_close_all(evtcp_loop *loop) {
  int i;
  for (i = 0; i < EVTCP_NSIG; i++)
    if (loop->signal_ev[i]) { event_free(loop->signal_ev[i]); loop->signal_ev[i] = NULL; }
}

void signal_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"cancel", signal_cancel}, {NULL, NULL}};
  object_type_open(L, &signal_type, methods, NULL);
  lua_pop(L, 2);
}
