/*
 * timer.c - evtcp.after(seconds, fn): a one-shot timer.
 *
 * A pending timer is anchored (run() waits for it); it lets go when it
 * fires or is cancelled. The function lives in the userdata's uservalue.
 */
#include "platform.h" /* first: feature macros */
#include <string.h>
#include "evtcp.h"

typedef struct evtcp_timer {
  evtcp_object obj;
  struct event *ev;
  int pending;
} evtcp_timer;

static void timer_release(lua_State *L, evtcp_object *obj);
static object_type timer_type = {"Timer", NULL, timer_release, 0, 0};

static void timer_on_fire(evutil_socket_t fd, short what, void *arg) {
  evtcp_timer *t = (evtcp_timer *)arg;
  lua_State *L = t->obj.loop->L;
  (void)fd; (void)what;
  t->pending = 0;
  object_push(L, &t->obj);
  object_unanchor(&t->obj, ANCHOR_CALLBACKS);
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
  lua_getiuservalue(L, -1, 1);  /* handle fn */
  lua_insert(L, -2);            /* fn handle */
  loop_pcall(t->obj.loop, 1, 0);
}

/* evtcp.after(seconds, fn) -> handle; fn(handle) runs once from the loop. */
int timer_after(lua_State *L) {
  evtcp_loop *loop = loop_get(L);
  double s;
  struct timeval tv;
  evtcp_timer *t;
  luaL_checknumber(L, 1); /* required: seconds_check takes nil as "none" */
  s = seconds_check(L, 1, "seconds");
  luaL_checktype(L, 2, LUA_TFUNCTION);
  t = (evtcp_timer *)object_new(L, loop, sizeof *t, 1, NULL, &timer_type);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  t->ev = evtimer_new(loop->base, timer_on_fire, t);
  if (t->ev == NULL) return luaL_error(L, "evtcp: out of memory");
  tv = seconds_tv(s);
  evtimer_add(t->ev, &tv);
  t->pending = 1;
  object_anchor(&t->obj, ANCHOR_CALLBACKS);
  return 1;
}

/* handle:cancel() -> true if it stopped the timer */
static int timer_cancel(lua_State *L) {
  evtcp_timer *t = (evtcp_timer *)object_check(L, 1, &timer_type);
  int was = t->pending;
  if (was) {
    event_del(t->ev);
    t->pending = 0;
    object_unanchor(&t->obj, ANCHOR_CALLBACKS);
  }
  lua_pushboolean(L, was);
  return 1;
}

static void timer_release(lua_State *L, evtcp_object *obj) {
  evtcp_timer *t = (evtcp_timer *)obj;
  (void)L;
  if (t->ev) event_free(t->ev);
  t->ev = NULL;
  t->pending = 0; /* a later cancel() from another finalizer is a no-op */
}

void timer_open(lua_State *L) {
  static const luaL_Reg methods[] = {{"cancel", timer_cancel}, {NULL, NULL}};
  object_type_open(L, &timer_type, methods, NULL);
  lua_pop(L, 2);
}
