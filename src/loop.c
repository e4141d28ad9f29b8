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
 * Anchoring: an object that must stay alive without Lua references (it still
 * has callbacks to run, output to flush, a coroutine waiting) holds a
 * registry reference; `active` counts them, and run() returns at zero.
 *
 * Entering Lua: every callback goes through loop_pcall(), which runs on the
 * main thread with a traceback handler. The first error is stored, the
 * dispatch is broken off, and run/step raise it in their caller; what was
 * left to do stays queued for the next run.
 *
 * Deferred work: methods never run callbacks themselves (a callback can call
 * any method, and so can top-level code with no loop running). They queue
 * the object, and loop_run_pending() advances it from inside the loop.
 */
#include "platform.h" /* first: feature macros */
#include <signal.h>
#include <string.h>
#include <time.h>
#include "evtcp.h"

static const char loop_key = 'L';

static void loop_cancel_deferred(evtcp_object *obj);

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

/* The userdata at index if its metatable is the one stored in the registry
 * under the light-userdata key mt_key, else NULL. The per-message type
 * checks use this: luaL_testudata looks the metatable up by its name, which
 * costs a string hash and a strcmp on every call. */
void *loop_test_udata(lua_State *L, int index, const void *mt_key) {
  void *p = lua_touserdata(L, index);
  int same = 0;
  if (p != NULL && lua_getmetatable(L, index)) {
    lua_rawgetp(L, LUA_REGISTRYINDEX, mt_key);
    same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  return same ? p : NULL;
}

/* Raises "bad argument #arg to 'name' (tname expected, got ...)" for a
 * method called on the wrong object. The name is the call's, or, when the
 * call has none (pcall(conn.send, 42)), the method's key in the type's
 * method table (in the registry under methods_key): never '?'. */
int loop_self_error(lua_State *L, int arg, const char *tname, const void *methods_key) {
  lua_Debug ar;
  const char *name = NULL;
  const char *got = luaL_typename(L, arg); /* before anything is pushed */
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "nf", &ar)) { /* pushes the function */
    name = ar.name;
    if (name == NULL && lua_rawgetp(L, LUA_REGISTRYINDEX, methods_key) == LUA_TTABLE) {
      lua_pushnil(L);
      while (name == NULL && lua_next(L, -2)) {
        if (lua_rawequal(L, -1, -4) && lua_type(L, -2) == LUA_TSTRING) name = lua_tostring(L, -2);
        lua_pop(L, 1);
      }
    }
  }
  return luaL_error(L, "bad argument #%d to '%s' (%s expected, got %s)", arg, name ? name : "?",
                    tname, got);
}

/* ---- object registry and anchoring ---- */

/* Records the userdata at ud_index as the Lua side of obj. */
void loop_register(lua_State *L, evtcp_object *obj, int ud_index) {
  ud_index = lua_absindex(L, ud_index);
  lua_rawgeti(L, LUA_REGISTRYINDEX, obj->loop->weak_ref);
  lua_pushvalue(L, ud_index);
  lua_rawsetp(L, -2, obj);
  lua_pop(L, 1);
}

/* Forgets obj; called from __gc, when the weak entry may already be gone. */
void loop_unregister(lua_State *L, evtcp_object *obj) {
  evtcp_loop *loop = obj->loop;
  loop_cancel_deferred(obj);
  if (obj->anchor_ref != LUA_NOREF) {
    luaL_unref(L, LUA_REGISTRYINDEX, obj->anchor_ref);
    obj->anchor_ref = LUA_NOREF;
    loop->active--;
  }
  obj->anchors = 0;
  obj->waiters = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, loop->weak_ref);
  if (lua_istable(L, -1)) {
    lua_pushnil(L);
    lua_rawsetp(L, -2, obj);
  }
  lua_pop(L, 1);
}

/* Pushes obj's userdata. [-0, +1] (nil if it has been collected). */
void loop_push_object(lua_State *L, evtcp_object *obj) {
  if (obj->anchor_ref != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, obj->anchor_ref);
    return;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, obj->loop->weak_ref);
  lua_rawgetp(L, -1, obj);
  lua_remove(L, -2);
}

/* Adds a reason to keep obj alive; the first one takes a registry ref.
 * Never raises: luaL_ref only fails on memory, and the weak table entry
 * exists, so this is called with the userdata reachable. */
void loop_anchor(evtcp_object *obj, unsigned why) {
  lua_State *L = obj->loop->L;
  if (obj->anchors == 0 && obj->anchor_ref == LUA_NOREF) {
    loop_push_object(L, obj);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
    obj->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    obj->loop->active++;
  }
  obj->anchors |= why;
}

void loop_unanchor(evtcp_object *obj, unsigned why) {
  obj->anchors &= ~why;
  if (obj->anchors == 0 && obj->anchor_ref != LUA_NOREF) {
    luaL_unref(obj->loop->L, LUA_REGISTRYINDEX, obj->anchor_ref);
    obj->anchor_ref = LUA_NOREF;
    obj->loop->active--;
  }
}

/* ---- the deferred-work queue ---- */

/* Queues obj so that its run_pending runs from inside the loop. Idempotent. */
void loop_defer(evtcp_object *obj) {
  evtcp_loop *loop = obj->loop;
  if (obj->pending_prev != NULL || loop->pending_head == obj) return;
  obj->pending_next = loop->pending_head;
  obj->pending_prev = NULL;
  if (loop->pending_head) loop->pending_head->pending_prev = obj;
  loop->pending_head = obj;
  loop_anchor(obj, ANCHOR_PENDING);
  event_active(loop->pending_ev, EV_TIMEOUT, 0);
}

static void loop_unlink_pending(evtcp_object *obj) {
  evtcp_loop *loop = obj->loop;
  if (obj->pending_prev) obj->pending_prev->pending_next = obj->pending_next;
  else loop->pending_head = obj->pending_next;
  if (obj->pending_next) obj->pending_next->pending_prev = obj->pending_prev;
  obj->pending_next = obj->pending_prev = NULL;
}

static void loop_cancel_deferred(evtcp_object *obj) {
  if (obj->pending_prev == NULL && obj->loop->pending_head != obj) return;
  loop_unlink_pending(obj);
  loop_unanchor(obj, ANCHOR_PENDING);
}

/* The libevent callback of pending_ev: advances queued objects until the
 * queue is empty or a callback failed (the rest waits for the next run). */
static void loop_run_pending(evutil_socket_t fd, short what, void *arg) {
  evtcp_loop *loop = (evtcp_loop *)arg;
  (void)fd; (void)what;
  while (loop->pending_head != NULL && !loop_has_error(loop) && !loop->closing) {
    evtcp_object *obj = loop->pending_head;
    loop_unlink_pending(obj);
    obj->run_pending(obj);
    /* unanchor last: run_pending may still use the Lua object */
    loop_unanchor(obj, ANCHOR_PENDING);
  }
  if (loop->pending_head != NULL) event_active(loop->pending_ev, EV_TIMEOUT, 0);
}

/* ---- the Lua layer's scheduler, as the core needs to know it ---- */

static const char scheduler_key = 'S';

/* core.setScheduler(spawned, receive): the weak set of coroutines started by
 * evtcp.spawn, and the Lua layer's receive (timeouts, other contexts). */
static int loop_set_scheduler(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_createtable(L, 2, 0);
  lua_insert(L, 1);
  lua_rawseti(L, 1, 2);
  lua_rawseti(L, 1, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &scheduler_key);
  return 0;
}

/* Pushes item i of the scheduler (1: the spawned set, 2: receive). */
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
static void loop_resume_thread(evtcp_loop *loop, lua_State *L) {
  lua_State *co = lua_tothread(L, -1);
  int nres, status;
  if (lua_status(co) != LUA_YIELD) { lua_pop(L, 1); return; }
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

/* ---- coroutines waiting on an object ----
 *
 * Any number of coroutines may wait on one object (full duplex: a reader
 * and a writer on one connection, many acceptors on one listener). The
 * waiters live in a table in the object's UV_WAITER slot, waiter -> tag:
 * a waiter is a thread (receive's fast path, resumed directly) or a
 * function (the Lua layer's waker, called with the object). The tag holds
 * what wakes it (WAKE_* bits), its role (one reader and one writer at a
 * time) and a sequence number: waking goes oldest first, so acceptors are
 * served first come, first served. A woken waiter is removed; one whose
 * condition does not hold yet waits again. obj->waiters counts them, and
 * the object is anchored while there is any.
 */
#define TAG_MASK_BITS 3
#define TAG_ROLE_BITS 2
#define TAG_SEQ_SHIFT (TAG_MASK_BITS + TAG_ROLE_BITS)

static unsigned tag_mask(lua_Integer tag) { return (unsigned)(tag & 7); }
static unsigned tag_role(lua_Integer tag) { return (unsigned)((tag >> TAG_MASK_BITS) & 3); }
static lua_Integer tag_seq(lua_Integer tag) { return tag >> TAG_SEQ_SHIFT; }

/* Pushes obj's waiter table, made on first use. [-0, +1] */
static void waiters_push(lua_State *L, int obj_index) {
  if (lua_getiuservalue(L, obj_index, UV_WAITER) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, obj_index, UV_WAITER);
}

static const char *const role_conflicts[] = {
  NULL,
  "evtcp: connection is already being read by another coroutine",
  "evtcp: connection is already being written by another coroutine (waiting in send)"
};

/* Adds the waiter at waiter_index to the object at obj_index, woken by the
 * WAKE_* bits in mask; role (WAIT_READER, WAIT_WRITER or 0) may be held by
 * one waiter at a time: a second one raises. */
void loop_add_waiter(lua_State *L, int obj_index, int waiter_index, unsigned mask, unsigned role) {
  evtcp_object *obj = (evtcp_object *)lua_touserdata(L, obj_index);
  obj_index = lua_absindex(L, obj_index);
  waiter_index = lua_absindex(L, waiter_index);
  waiters_push(L, obj_index);                                   /* t */
  if (role != 0 && obj->waiters > 0) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (tag_role(lua_tointeger(L, -1)) == role && !lua_rawequal(L, -2, waiter_index))
        luaL_error(L, "%s", role_conflicts[role]);
      lua_pop(L, 1);
    }
  }
  lua_pushvalue(L, waiter_index);
  if (lua_rawget(L, -2) == LUA_TNIL) obj->waiters++;
  lua_pop(L, 1);
  lua_pushvalue(L, waiter_index);
  lua_pushinteger(L, (lua_Integer)(((lua_Unsigned)++obj->loop->wait_seq << TAG_SEQ_SHIFT) |
                                   (role << TAG_MASK_BITS) | (mask & 7)));
  lua_rawset(L, -3);
  lua_pop(L, 1);
  loop_anchor(obj, ANCHOR_WAITER);
}

/* Removes the waiter at waiter_index, if it waits on the object. */
void loop_remove_waiter(lua_State *L, int obj_index, int waiter_index) {
  evtcp_object *obj = (evtcp_object *)lua_touserdata(L, obj_index);
  obj_index = lua_absindex(L, obj_index);
  waiter_index = lua_absindex(L, waiter_index);
  if (obj->waiters == 0 || lua_getiuservalue(L, obj_index, UV_WAITER) != LUA_TTABLE) {
    lua_pop(L, 1);
    return;
  }
  lua_pushvalue(L, waiter_index);
  if (lua_rawget(L, -2) != LUA_TNIL) {
    lua_pushvalue(L, waiter_index);
    lua_pushnil(L);
    lua_rawset(L, -4);
    obj->waiters--;
  }
  lua_pop(L, 2);
  if (obj->waiters == 0 && obj->loop != NULL) loop_unanchor(obj, ANCHOR_WAITER);
}

/* Pushes the oldest waiter in the table on top that `why` wakes and that
 * was waiting before `before`, and removes it from the table; 0 if none. */
static int waiters_take_oldest(lua_State *L, evtcp_object *obj, unsigned why, lua_Integer before) {
  int t = lua_gettop(L), found = 0;
  lua_Integer best = 0;
  lua_pushnil(L);                                           /* t ... best? key */
  while (lua_next(L, t)) {
    lua_Integer tag = lua_tointeger(L, -1);
    lua_pop(L, 1);
    if ((tag_mask(tag) & why) && tag_seq(tag) <= before && (!found || tag_seq(tag) < best)) {
      if (found) lua_remove(L, -2);
      lua_pushvalue(L, -1);                                 /* best key */
      lua_insert(L, -2);
      best = tag_seq(tag);
      found = 1;
    }
  }
  if (!found) return 0;
  lua_pushvalue(L, -1);
  lua_pushnil(L);
  lua_rawset(L, t);
  obj->waiters--;
  return 1;
}

/* Something changed for obj (the WAKE_* bits in why): wakes, oldest first,
 * every waiter that waits for it and was waiting already. Each looks
 * again and may wait again. Runs from libevent only. */
void loop_wake(evtcp_object *obj, unsigned why) {
  lua_State *L = obj->loop->L;
  int top = lua_gettop(L);
  lua_Integer before = obj->loop->wait_seq;
  if (obj->waiters == 0) return; /* the common case */
  loop_push_object(L, obj);                                 /* obj */
  if (lua_isnil(L, -1) || lua_getiuservalue(L, -1, UV_WAITER) != LUA_TTABLE) {
    lua_settop(L, top);
    return;
  }                                                         /* obj t */
  while (!loop_has_error(obj->loop) && waiters_take_oldest(L, obj, why, before)) {
    if (lua_type(L, -1) == LUA_TTHREAD) {                   /* obj t waiter */
      loop_resume_thread(obj->loop, L);
    } else {
      lua_pushvalue(L, top + 1);
      loop_pcall(obj->loop, 1, 0);
    }
  }
  if (obj->waiters == 0) loop_unanchor(obj, ANCHOR_WAITER);
  lua_settop(L, top);
}

static evtcp_object *check_waitable(lua_State *L) {
  /* a connection, the case on every message, is tested first and fast */
  if (test_conn(L, 1) == NULL && luaL_testudata(L, 1, EVTCP_LISTENER_MT) == NULL)
    luaL_typeerror(L, 1, "TCPConnection or TCPListener");
  return (evtcp_object *)lua_touserdata(L, 1);
}

/* obj:_addWaiter(fn, mask [, role]) and obj:_removeWaiter(fn), for the Lua
 * layer's waits on connections and listeners alike. */
int loop_add_waiter_lua(lua_State *L) {
  evtcp_object *obj = check_waitable(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (obj->loop == NULL) return 0; /* collected: nothing will change */
  loop_add_waiter(L, 1, 2, (unsigned)luaL_checkinteger(L, 3), (unsigned)luaL_optinteger(L, 4, 0));
  return 0;
}

int loop_remove_waiter_lua(lua_State *L) {
  check_waitable(L);
  luaL_checkany(L, 2);
  loop_remove_waiter(L, 1, 2);
  return 0;
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

/* Returns the handler to chain to (and takes SIGINT), or NULL. */
static void (*loop_take_sigint(evtcp_loop *loop))(int) {
  struct sigaction prev;
  if (loop->signal_ev[SIGINT] != NULL) return NULL; /* the program handles INT: evtcp.signal */
  if (sigaction(SIGINT, NULL, &prev) != 0 || (prev.sa_flags & SA_SIGINFO) ||
      prev.sa_handler == SIG_DFL || prev.sa_handler == SIG_IGN)
    return NULL;
  if (loop->sigint_ev == NULL &&
      (loop->sigint_ev = evsignal_new(loop->base, SIGINT, loop_on_sigint, loop)) == NULL)
    return NULL;
  if (evsignal_add(loop->sigint_ev, NULL) != 0) return NULL;
  return prev.sa_handler;
}

/* Gives SIGINT back; if it came, hands it to the handler it was meant for. */
static void loop_give_sigint(evtcp_loop *loop, void (*prev)(int)) {
  if (prev == NULL) return;
  evsignal_del(loop->sigint_ev); /* libevent restores prev */
  if (loop->interrupted) {
    loop->interrupted = 0;
    prev(SIGINT);
  }
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

static struct timeval seconds_to_tv(double s) {
  struct timeval tv;
  if (s > 1e9) s = 1e9;
  tv.tv_sec = (long)s;
  tv.tv_usec = (long)((s - (double)tv.tv_sec) * 1e6);
  return tv;
}

/* Runs the loop until out of work, the deadline, stop() or an error.
 * Returns 1 if it ran out of work (once: if no event at all was pending). */
static int loop_drive(lua_State *L, evtcp_loop *loop, double timeout, int once) {
  struct event *deadline = NULL;
  void (*sigint_prev)(int);
  int hit = 0, out_of_work = 0;
  loop_check_not_running(L, loop);
  loop_raise_pending(L, loop); /* one left from an earlier dispatch */
  if (timeout >= 0) {
    struct timeval tv = seconds_to_tv(timeout);
    deadline = evtimer_new(loop->base, loop_deadline_cb, &hit);
    if (deadline == NULL) return luaL_error(L, "evtcp: out of memory");
    evtimer_add(deadline, &tv);
  }
  sigint_prev = loop_take_sigint(loop);
  loop->running = 1;
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
  loop->running = 0;
  loop_give_sigint(loop, sigint_prev);
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

/* core.setSendHook(fn): fn(conn) is called, in a yieldable coroutine, by a
 * send() that left more than highWaterMark bytes queued. */
static int loop_set_send_hook(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  if (loop->send_hook_ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, loop->send_hook_ref);
  loop->send_hook_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

static int loop_active_count(lua_State *L) {
  lua_pushinteger(L, loop_get(L)->active);
  return 1;
}

/* Frees libevent's objects at lua_close (or if the state drops the loop).
 * Every connection and listener has been finalized already; no Lua runs. */
static int loop__gc(lua_State *L) {
  evtcp_loop *loop = (evtcp_loop *)luaL_checkudata(L, 1, EVTCP_LOOP_MT);
  if (loop->base == NULL) return 0;
  loop->closing = 1;
  /* Cancelled lookups report back from the loop: let them (their C
   * callbacks see `closing` and run no Lua), then free the resolver. */
  {
    int passes;
    for (passes = 0; passes < 4 && loop->lookups != NULL; passes++)
      event_base_loop(loop->base, EVLOOP_NONBLOCK);
  }
  if (loop->dns) {
    evdns_base_free(loop->dns, 0);
    loop->dns = NULL;
  }
  lookup_free_all(loop);
  tls_cache_free_all(loop);
  if (loop->pending_ev) event_free(loop->pending_ev);
  if (loop->sigint_ev) event_free(loop->sigint_ev);
  signal_free_all(loop);
  event_base_free(loop->base);
  loop->base = NULL;
  return 0;
}

static const luaL_Reg loop_functions[] = {
  {"run", loop_run},
  {"step", loop_step},
  {"stop", loop_stop},
  {"now", loop_now},
  {"setSendHook", loop_set_send_hook},
  {"setScheduler", loop_set_scheduler},
  {"activeCount", loop_active_count},
  {NULL, NULL}
};

/* Creates this state's loop (once) and adds run/step/stop to the table on top. */
void loop_open(lua_State *L) {
  evtcp_loop *loop;
  lua_rawgetp(L, LUA_REGISTRYINDEX, &loop_key);
  if (!lua_isnil(L, -1)) { /* required again in the same state */
    lua_pop(L, 1);
    luaL_setfuncs(L, loop_functions, 0);
    return;
  }
  lua_pop(L, 1);
  loop = (evtcp_loop *)lua_newuserdatauv(L, sizeof *loop, 0);
  loop->base = NULL; /* closed state first: __gc is safe whatever fails */
  loop->dns = NULL;
  loop->pending_ev = NULL;
  loop->sigint_ev = NULL;
  loop->interrupted = 0;
  memset(loop->signal_ev, 0, sizeof loop->signal_ev);
  loop->pending_head = NULL;
  loop->lookups = NULL;
  loop->tls_sessions = NULL;
  loop->running = loop->stop_requested = loop->active = loop->closing = 0;
  loop->wait_seq = 0;
  loop->errors_head = 1;
  loop->errors_tail = 0;
  loop->send_hook_ref = LUA_NOREF;
  luaL_newmetatable(L, EVTCP_LOOP_MT);
  lua_pushcfunction(L, loop__gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  loop->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  loop->base = event_base_new();
  if (loop->base == NULL) luaL_error(L, "evtcp: cannot create the libevent event_base");
  loop->pending_ev = event_new(loop->base, -1, 0, loop_run_pending, loop);
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
}
