/*
 * loop.c - the per-state event loop.
 *
 * Design: one evtcp_loop per lua_State, a full userdata kept in the registry
 * under the address of a static (no mutable C globals, so two states in two
 * threads never share anything). The loop is created by luaopen, before any
 * connection, so lua_close finalizes it after every connection and listener
 * (Lua 5.4 runs finalizers in reverse order of marking); its __gc then frees
 * libevent's own objects without running Lua code.
 *
 * Objects (anchoring, the deferred-work queue, waiters) are object.c's;
 * `active` counts the anchored ones, and run() returns at zero.
 *
 * Entering Lua from libevent: a callback goes through loop_pcall(), which
 * runs it on the main thread with a traceback handler; a coroutine that
 * waits in C (receive, send) is resumed by loop_resume_thread(). Either
 * way an error is stored, the dispatch is broken off, and run/step raise
 * it in their caller; what was left to do stays queued for the next run.
 * The loop knows no other file: what they keep in it they free through
 * loop_at_close.
 */
#include "platform.h" /* first: feature macros */
#include <signal.h>
#include <string.h>
#include <time.h>
#include "evtcp.h"

static const char loop_key = 'L';
/* The loop is no evtcp_object: its __gc is its own (loop__gc). */
static object_type loop_type = {"evtcp.loop", NULL, NULL, 0, 0};


/* This state's loop, or NULL (no error): for finalizers and cancels that
 * may run after lua_close began. */
evtcp_loop *loop_get_unchecked(lua_State *L) {
  evtcp_loop *loop;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_key);
  loop = (evtcp_loop *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  return loop;
}

evtcp_loop *loop_get(lua_State *L) {
  evtcp_loop *loop;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_key);
  loop = (evtcp_loop *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (loop == NULL || loop->base == NULL)
    luaL_error(L, "evtcp: the loop of this Lua state is closed");
  return loop;
}

/* The message handler of loop_pcall: strings get the traceback appended. */
static int loop_traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg != NULL && lua_type(L, 1) == LUA_TSTRING)
    luaL_traceback(L, L, msg, 1);
  else
    lua_settop(L, 1);
  return 1;
}

/* Appends the error on top of the stack to the loop's queue of pending
 * errors (popping it) and breaks the dispatch. Nothing raised is dropped:
 * each run/step raises the oldest pending error, in turn. */
static void loop_store_error(evtcp_loop *loop, lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->errors_ref); /* err queue */
  lua_insert(L, -2);
  lua_rawseti(L, -2, ++loop->errors_tail);
  lua_pop(L, 1);
  event_base_loopbreak(loop->base);
}

/* Calls the function below its nargs arguments on the main thread, under a
 * traceback handler. [-(nargs+1), +nresults on success, +0 on error]
 * Returns LUA_OK or the error status (the error is stored, not raised). */
int loop_pcall(evtcp_loop *loop, int nargs, int nresults) {
  lua_State *L = loop->L;
  int base = lua_gettop(L) - nargs;
  int status;
  lua_pushcfunction(L, loop_traceback);
  lua_insert(L, base);
  loop->lua_runs++;
  status = lua_pcall(L, nargs, nresults, base);
  lua_remove(L, base);
  if (status != LUA_OK) loop_store_error(loop, L);
  return status;
}

int loop_has_error(evtcp_loop *loop) {
  return loop->errors_head <= loop->errors_tail;
}

/* Raises the oldest pending callback error, if any, in the caller of
 * run/step; the next one waits for the next call. */
static void loop_raise_pending(lua_State *L, evtcp_loop *loop) {
  if (!loop_has_error(loop)) return;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->errors_ref);
  lua_rawgeti(L, -1, loop->errors_head);
  lua_pushnil(L);
  lua_rawseti(L, -3, loop->errors_head++);
  if (!loop_has_error(loop)) loop->errors_head = 1, loop->errors_tail = 0;
  lua_error(L);
}

static void loop_check_not_running(lua_State *L, evtcp_loop *loop) {
  if (loop->running) luaL_error(L, EVTCP_REENTER_MSG);
}

/* ---- the Lua layer's scheduler, as the core needs to know it ---- */

static const char scheduler_key = 'S';

/* core.setScheduler(spawned, receive, upgrade): the weak set of coroutines
 * started by evtcp.spawn, the Lua layer's receive (timeouts, other
 * contexts) and its wait for startTLS's handshake. */
static int loop_set_scheduler(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  lua_settop(L, 3);
  lua_createtable(L, 3, 0);
  lua_insert(L, 1);
  lua_rawseti(L, 1, 3);
  lua_rawseti(L, 1, 2);
  lua_rawseti(L, 1, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &scheduler_key);
  return 0;
}

/* Pushes item i of the scheduler (1: the spawned set, 2: receive, 3: the
 * upgrade wait). */
void loop_push_scheduler(lua_State *L, int i) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &scheduler_key) != LUA_TTABLE)
    luaL_error(L, "evtcp: the Lua layer is not loaded");
  lua_rawgeti(L, -1, i);
  lua_remove(L, -2);
}

/* Is L a coroutine started by evtcp.spawn (and so may it yield to us)? */
int loop_is_spawned(lua_State *L) {
  int spawned;
  if (!lua_isyieldable(L)) return 0;
  loop_push_scheduler(L, 1);
  lua_pushthread(L);
  spawned = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return spawned;
}

/* Resumes a coroutine waiting in the core (receive's fast path). Its error,
 * with its own traceback, propagates out of run(). The thread is kept on
 * the main stack while it runs. [-1, +0]: pops the thread. */
void loop_resume_thread(evtcp_loop *loop, lua_State *L) {
  lua_State *co = lua_tothread(L, -1);
  int nres, status;
  if (lua_status(co) != LUA_YIELD) { lua_pop(L, 1); return; }
  loop->lua_runs++;
  status = lua_resume(co, L, 0, &nres);
  if (status == LUA_OK || status == LUA_YIELD) {
    lua_pop(co, nres);
  } else {
    if (lua_type(co, -1) == LUA_TSTRING) luaL_traceback(L, co, lua_tostring(co, -1), 0);
    else lua_xmove(co, L, 1);
    loop_store_error(loop, L);
  }
  lua_pop(L, 1);
}

/* ---- run, step, stop ---- */

/* ---- Ctrl-C ----
 *
 * The standalone lua5.4 answers SIGINT with a handler that sets a hook, and
 * the hook raises "interrupted!" when Lua code next runs. While the loop
 * waits in epoll no Lua runs, so Ctrl-C did nothing until an event came.
 * While the loop runs, evtcp takes SIGINT through libevent (which keeps the
 * previous handler and puts it back afterwards), breaks the loop, and then
 * calls that previous handler itself: its hook fires as soon as run returns
 * to Lua. Only a handler function is chained: with SIG_DFL the signal kills
 * the process as it always did, and SIG_IGN stays ignored.
 */
static void loop_on_sigint(evutil_socket_t sig, short what, void *arg) {
  evtcp_loop *loop = (evtcp_loop *)arg;
  (void)sig; (void)what;
  loop->interrupted = 1;
  event_base_loopbreak(loop->base);
}

/* Takes SIGINT, keeping in loop->sigint_prev the handler to chain to;
 * not when the program handles INT itself (evtcp.signal) or there is no
 * handler function to chain to. */
static void loop_take_sigint(evtcp_loop *loop) {
  struct sigaction prev;
  if (loop->sigint_prev != NULL || loop->signal_ev[SIGINT] != NULL) return;
  if (sigaction(SIGINT, NULL, &prev) != 0 || (prev.sa_flags & SA_SIGINFO) ||
      prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN)
    return;
  if (loop->sigint_ev == NULL &&
      (loop->sigint_ev = evsignal_new(loop->base, SIGINT, loop_on_sigint, loop)) == NULL)
    return;
  if (evsignal_add(loop->sigint_ev, NULL) != 0) return;
  loop->sigint_prev = prev.sa_handler;
}

/* Gives SIGINT back; at the end of a run, if it came, hands it to the
 * handler it was meant for. */
static void loop_give_sigint(evtcp_loop *loop, int chain) {
  void (*prev)(int) = loop->sigint_prev;
  if (prev == NULL) return;
  loop->sigint_prev = NULL;
  evsignal_del(loop->sigint_ev); /* the last SIGINT event: libevent restores prev */
  if (chain && loop->interrupted) {
    loop->interrupted = 0;
    prev(SIGINT);
  }
}

/* evtcp.signal installed or cancelled a handler: while the loop runs, an
 * INT handler of the program takes over from evtcp's Ctrl-C, and when the
 * last one is cancelled evtcp's comes back (without it the interpreter's
 * handler would only set a hook that no Lua runs to see while the loop
 * waits: Ctrl-C would stop nothing). */
void loop_signals_changed(evtcp_loop *loop) {
  if (!loop->running) return;
  if (loop->signal_ev[SIGINT] != NULL) loop_give_sigint(loop, 0);
  else loop_take_sigint(loop);
}

static void loop_deadline_cb(evutil_socket_t fd, short what, void *arg) {
  int *hit = (int *)arg;
  (void)fd; (void)what;
  *hit = 1;
}

static double check_timeout_arg(lua_State *L, int arg) {
  double t = luaL_optnumber(L, arg, -1);
  if (lua_isnoneornil(L, arg)) return -1;
  luaL_argcheck(L, t >= 0 && t == t, arg, "timeout must be a number >= 0");
  return t;
}

/* The one check of a duration (timeouts, timers, options): 1 with the
 * number at index in *s if it is 0 up to (not including)
 * EVTCP_MAX_SECONDS, 0 for another number (NaN is not a duration), -1 for
 * anything else. */
int seconds_get(lua_State *L, int index, double *s) {
  if (lua_type(L, index) != LUA_TNUMBER) return -1;
  *s = lua_tonumber(L, index);
  return *s >= 0 && *s < EVTCP_MAX_SECONDS;
}

/* A duration argument: -1 for nil or none, else the seconds; raises an
 * argument error "<what> must be >= 0" or a type error. */
double seconds_check(lua_State *L, int arg, const char *what) {
  double s = -1;
  int ok;
  if (lua_isnoneornil(L, arg)) return -1;
  if ((ok = seconds_get(L, arg, &s)) < 0) luaL_typeerror(L, arg, "number");
  if (ok == 0) luaL_argerror(L, arg, lua_pushfstring(L, "%s must be >= 0", what));
  return s;
}

/* ---- what other files keep in the loop, freed at lua_close ---- */

/* Adds fn to what the loop's __gc calls, in order, before it frees the
 * event_base: the files that keep state in the loop free it themselves. */
void loop_at_close(evtcp_loop *loop, void (*fn)(evtcp_loop *loop)) {
  if (loop->closer_count < LOOP_CLOSERS) loop->closers[loop->closer_count++] = fn;
}

/* Seconds as a struct timeval, capped at EVTCP_MAX_SECONDS (libevent's
 * timers take no more): every timeout and timer of evtcp goes through here. */
struct timeval seconds_tv(double s) {
  struct timeval tv;
  if (s > EVTCP_MAX_SECONDS) s = EVTCP_MAX_SECONDS;
  tv.tv_sec = (long)s;
  tv.tv_usec = (long)((s - (double)tv.tv_sec) * 1e6);
  return tv;
}

/* Runs the loop until out of work, the deadline, stop() or an error.
 * Returns 1 if it ran out of work (once: if no event at all was pending). */
static int loop_drive(lua_State *L, evtcp_loop *loop, double timeout, int once) {
  struct event *deadline = NULL;
  int hit = 0, out_of_work = 0;
  loop_check_not_running(L, loop);
  loop_raise_pending(L, loop); /* one left from an earlier dispatch */
  if (timeout >= 0) {
    struct timeval tv = seconds_tv(timeout);
    deadline = evtimer_new(loop->base, loop_deadline_cb, &hit);
    if (deadline == NULL) return luaL_error(L, "evtcp: out of memory");
    evtimer_add(deadline, &tv);
  }
  loop->running = 1;
  loop_take_sigint(loop);
  loop->stop_requested = 0;
  if (once) {
    /* the deadline counts as an event: ask libevent about the others */
    out_of_work = event_base_get_num_events(loop->base, EVENT_BASE_COUNT_ADDED |
                                            EVENT_BASE_COUNT_ACTIVE) <= (deadline ? 1 : 0);
    if (!out_of_work)
      event_base_loop(loop->base, timeout > 0 ? EVLOOP_ONCE : EVLOOP_NONBLOCK);
  } else {
    while (!hit && !loop->stop_requested && !loop_has_error(loop) && !loop->interrupted) {
      if (loop->active <= 0) { out_of_work = 1; break; }
      /* 1: no event is pending, so nothing can ever happen: out of work */
      if (event_base_loop(loop->base, EVLOOP_ONCE) == 1) { out_of_work = 1; break; }
    }
  }
  loop_give_sigint(loop, 1);
  loop->running = 0;
  if (deadline) event_free(deadline);
  loop_raise_pending(L, loop);
  return out_of_work;
}

static int loop_run(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  double timeout = check_timeout_arg(L, 1);
  lua_pushboolean(L, loop_drive(L, loop, timeout, 0));
  return 1;
}

/* step([timeout]) -> anything still active, nothing could happen at all */
static int loop_step(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  double timeout = check_timeout_arg(L, 1);
  int idle = loop_drive(L, loop, timeout < 0 ? 0 : timeout, 1);
  lua_pushboolean(L, loop->active > 0);
  lua_pushboolean(L, idle);
  return 2;
}

/* now() -> seconds on a monotonic clock, for deadlines in the Lua layer */
static int loop_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
  return 1;
}

static int loop_stop(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  loop->stop_requested = 1;
  event_base_loopbreak(loop->base);
  return 0;
}

static int loop_active_count(lua_State *L) {
  lua_pushinteger(L, loop_get(L)->active);
  return 1;
}

/* Frees libevent's objects at lua_close (or if the state drops the loop).
 * Every connection and listener has been finalized already; no Lua runs. */
static int loop__gc(lua_State *L) {
  evtcp_loop *loop = (evtcp_loop *)lua_touserdata(L, 1);
  int i;
  if (loop->base == NULL) return 0;
  loop->closing = 1;
  for (i = 0; i < loop->closer_count; i++) loop->closers[i](loop);
  if (loop->cork) evbuffer_free(loop->cork);
  if (loop->pending_ev) event_free(loop->pending_ev);
  if (loop->sigint_ev) event_free(loop->sigint_ev);
  event_base_free(loop->base);
  loop->base = NULL;
  return 0;
}

/* _counters() -> { scanned = bytes } : work counted for the specs, which
 * check complexity by what was done, not by how long it took. */
static int loop_counters(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  lua_createtable(L, 0, 1);
  lua_pushinteger(L, (lua_Integer)loop->bytes_scanned);
  lua_setfield(L, -2, "scanned");
  return 1;
}

static const luaL_Reg loop_functions[] = {
  {"run", loop_run},
  {"step", loop_step},
  {"stop", loop_stop},
  {"now", loop_now},
  {"setScheduler", loop_set_scheduler},
  {"activeCount", loop_active_count},
  {"_counters", loop_counters},
  {NULL, NULL}
};

/* Creates this state's loop (once) and adds run/step/stop to the table on
 * top. Returns the loop if it was made now, NULL if it was there. */
evtcp_loop *loop_open(lua_State *L) {
  static const luaL_Reg meta[] = {{"__gc", loop__gc}, {NULL, NULL}};
  evtcp_loop *loop;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_key);
  if (!lua_isnil(L, -1)) { /* required again in the same state */
    lua_pop(L, 1);
    luaL_setfuncs(L, loop_functions, 0);
    return NULL;
  }
  lua_pop(L, 1);
  /* all zero: every list and pointer empty, base NULL (the closed state:
   * __gc is safe whatever fails next) */
  loop = (evtcp_loop *)lua_newuserdatauv(L, sizeof *loop, 0);
  memset(loop, 0, sizeof *loop);
  loop->lua_runs = 1; /* a connection's sent_run starts at 0: no run yet */
  loop->errors_head = 1;
  loop->errors_tail = 0;
  object_type_open(L, &loop_type, NULL, meta);
  lua_pop(L, 2);
  object_set_type(L, -1, &loop_type);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  loop->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  loop->base = event_base_new();
  if (loop->base == NULL) luaL_error(L, "evtcp: cannot create the libevent event_base");
  loop->pending_ev = event_new(loop->base, -1, 0, object_run_pending, loop);
  if (loop->pending_ev == NULL) luaL_error(L, "evtcp: out of memory");
  /* weak-valued: lightuserdata -> the object's userdata */
  lua_newtable(L);
  lua_newtable(L);
  lua_pushliteral(L, "v");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  loop->weak_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  loop->errors_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &loop_key);
  /* SIGPIPE: a peer that vanishes mid-write must be an error event, not the
   * death of the process. libevent writes with writev(), which raises
   * SIGPIPE, so the signal is ignored - but only if nobody installed a
   * handler: a host program's own choice is left alone. */
  {
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
      sa.sa_handler = SIG_IGN;
      sigaction(SIGPIPE, &sa, NULL);
    }
  }
  luaL_setfuncs(L, loop_functions, 0);
  return loop;
}
