/*
 * object.c - what every Lua-visible object of evtcp has in common (object.h):
 * the type check, the registry entry, anchors, the deferred-work queue, and
 * the coroutines waiting on it, its `errors`.
 *
 * Anchoring: an object that must stay alive without Lua references (it still
 * has callbacks to run, output to flush, a coroutine waiting) holds a
 * registry reference; the loop's `active` counts them, and run() returns at
 * zero.
 *
 * Deferred work: methods never run callbacks themselves (a callback can call
 * any method, and so can top-level code with no loop running). They queue
 * the object, and object_run_pending() advances it from inside the loop.
 */
#include "platform.h" /* first: feature macros */
#include <string.h>
#include "evtcp.h"

static void object_cancel_deferred(evtcp_object *obj);
static void object_register(lua_State *L, evtcp_object *obj, int ud_index);
static int object_add_waiter_lua(lua_State *L);
static int object_remove_waiter_lua(lua_State *L);

/* ---- types ---- */

static const char type_key = 'T'; /* in a metatable: its object_type */

/* The type of the value at index, if it is a userdata of ours. */
static const object_type *object_type_of(lua_State *L, int index) {
  const object_type *t = NULL;
  if (lua_type(L, index) == LUA_TUSERDATA && lua_getmetatable(L, index)) {
    if (lua_rawgetp(L, -1, &type_key) == LUA_TLIGHTUSERDATA) t = (const object_type *)lua_touserdata(L, -1);
    lua_pop(L, 2);
  }
  return t;
}

/* The userdata at index if it is of type t, else NULL. The type is a
 * light userdata in the metatable: luaL_testudata looks the metatable up by
 * its name, which costs a string hash and a strcmp on every message. */
void *object_test(lua_State *L, int index, const object_type *t) {
  return object_type_of(L, index) == t ? lua_touserdata(L, index) : NULL;
}

/* Raises "bad argument #arg to 'name' (tname expected, got ...)" for a
 * method called on the wrong object. The name is the call's, or, when the
 * call has none (pcall(conn.send, 42)), the method's key in the type's
 * method table: never '?'. */
static int object_self_error(lua_State *L, int arg, const object_type *t) {
  lua_Debug ar;
  const char *name = NULL;
  const char *got = luaL_typename(L, arg); /* before anything is pushed */
  if (lua_getstack(L, 0, &ar) && lua_getinfo(L, "nf", &ar)) { /* pushes the function */
    name = ar.name;
    if (name == NULL && lua_rawgetp(L, LUA_REGISTRYINDEX, &t->methods_key) == LUA_TTABLE) {
      lua_pushnil(L);
      while (name == NULL && lua_next(L, -2)) {
        if (lua_rawequal(L, -1, -4) && lua_type(L, -2) == LUA_TSTRING) name = lua_tostring(L, -2);
        lua_pop(L, 1);
      }
    }
  }
  return luaL_error(L, "bad argument #%d to '%s' (%s expected, got %s)", arg, name ? name : "?",
                    t->name, got);
}

/* The type check of every method: the object of type t at index, or an
 * argument error naming the method. */
void *object_check(lua_State *L, int index, const object_type *t) {
  void *p = object_test(L, index, t);
  if (p == NULL) object_self_error(L, index, t);
  return p;
}

/* The __gc of every evtcp_object (upvalue: its type): the type's release
 * once, then the object leaves the registry. Runs no Lua. */
static int object__gc(lua_State *L) {
  const object_type *t = (const object_type *)lua_touserdata(L, lua_upvalueindex(1));
  evtcp_object *obj = (evtcp_object *)lua_touserdata(L, 1);
  if (obj == NULL || obj->loop == NULL) return 0; /* finalized already */
  t->release(L, obj);
  object_unregister(L, obj);
  obj->loop = NULL;
  return 0;
}

/* Makes type t's metatable and method table, and pushes both: meta's
 * functions, __gc (the skeleton, when t has a release), __metatable (when
 * locked), __index (the methods, unless meta has its own). [-0, +2] */
void object_type_open(lua_State *L, object_type *t, const luaL_Reg *methods, const luaL_Reg *meta) {
  lua_newtable(L);                                  /* mt */
  lua_pushlightuserdata(L, t);
  lua_rawsetp(L, -2, &type_key);
  if (t->release != NULL) {
    lua_pushlightuserdata(L, t);
    lua_pushcclosure(L, object__gc, 1);
    lua_setfield(L, -2, "__gc");
  }
  if (meta != NULL) luaL_setfuncs(L, meta, 0);
  if (t->locked != NULL) {
    lua_pushstring(L, t->locked);
    lua_setfield(L, -2, "__metatable");
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, t);             /* for object_set_type */
  lua_newtable(L);                                  /* mt methods */
  if (methods != NULL) luaL_setfuncs(L, methods, 0);
  if (t->waitable) {
    static const luaL_Reg waiting[] = {
      {"_addWaiter", object_add_waiter_lua}, {"_removeWaiter", object_remove_waiter_lua}, {NULL, NULL}
    };
    luaL_setfuncs(L, waiting, 0);
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &t->methods_key);
  if (lua_getfield(L, -2, "__index") == LUA_TNIL) {
    lua_pushvalue(L, -2);
    lua_setfield(L, -4, "__index");
  }
  lua_pop(L, 1);
}

/* Gives the value at index type t's metatable. */
void object_set_type(lua_State *L, int index, const object_type *t) {
  index = lua_absindex(L, index);
  lua_rawgetp(L, LUA_REGISTRYINDEX, t);
  lua_setmetatable(L, index);
}

/* ---- object registry and anchoring ---- */

/* Pushes a new userdata of type t and size bytes, an evtcp_object first,
 * with uv_count uservalues: all zero (the caller's closed state), not
 * anchored, registered, with its metatable (so __gc is set before
 * anything else can fail). [-0, +1] */
void *object_new(lua_State *L, evtcp_loop *loop, size_t size, int uv_count,
                 void (*run_pending)(evtcp_object *obj), const object_type *t) {
  evtcp_object *obj = (evtcp_object *)lua_newuserdatauv(L, size, uv_count);
  memset(obj, 0, size);
  obj->anchor_ref = LUA_NOREF;
  obj->run_pending = run_pending;
  object_set_type(L, -1, t);
  obj->loop = loop;
  object_register(L, obj, -1);
  return obj;
}

/* Pushes the table in uservalue uv of the object at index, made on first
 * use (user fields, errors, waiters). [-0, +1] */
void object_uv_table(lua_State *L, int index, int uv) {
  index = lua_absindex(L, index);
  if (lua_getiuservalue(L, index, uv) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, index, uv);
}

/* Records the userdata at ud_index as the Lua side of obj. */
static void object_register(lua_State *L, evtcp_object *obj, int ud_index) {
  ud_index = lua_absindex(L, ud_index);
  lua_rawgeti(L, LUA_REGISTRYINDEX, obj->loop->weak_ref);
  lua_pushvalue(L, ud_index);
  lua_rawsetp(L, -2, obj);
  lua_pop(L, 1);
}

/* Forgets obj; called from __gc, when the weak entry may already be gone. */
void object_unregister(lua_State *L, evtcp_object *obj) {
  evtcp_loop *loop = obj->loop;
  object_cancel_deferred(obj);
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
void object_push(lua_State *L, evtcp_object *obj) {
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
void object_anchor(evtcp_object *obj, unsigned why) {
  lua_State *L = obj->loop->L;
  if (obj->anchors == 0 && obj->anchor_ref == LUA_NOREF) {
    object_push(L, obj);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
    obj->anchor_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    obj->loop->active++;
  }
  obj->anchors |= why;
}

void object_unanchor(evtcp_object *obj, unsigned why) {
  obj->anchors &= ~why;
  if (obj->anchors == 0 && obj->anchor_ref != LUA_NOREF) {
    luaL_unref(obj->loop->L, LUA_REGISTRYINDEX, obj->anchor_ref);
    obj->anchor_ref = LUA_NOREF;
    obj->loop->active--;
  }
}

/* ---- the deferred-work queue ---- */

static int object_is_deferred(const evtcp_object *obj) {
  return obj->pending_prev != NULL || obj->loop->pending_head == obj;
}

/* Queues obj so that its run_pending runs from inside the loop. Idempotent. */
void object_defer(evtcp_object *obj) {
  evtcp_loop *loop = obj->loop;
  if (object_is_deferred(obj)) return;
  obj->pending_next = loop->pending_head;
  obj->pending_prev = NULL;
  if (loop->pending_head) loop->pending_head->pending_prev = obj;
  loop->pending_head = obj;
  object_anchor(obj, ANCHOR_PENDING);
  event_active(loop->pending_ev, EV_TIMEOUT, 0);
}

static void object_unlink_pending(evtcp_object *obj) {
  evtcp_loop *loop = obj->loop;
  if (obj->pending_prev) obj->pending_prev->pending_next = obj->pending_next;
  else loop->pending_head = obj->pending_next;
  if (obj->pending_next) obj->pending_next->pending_prev = obj->pending_prev;
  obj->pending_next = obj->pending_prev = NULL;
}

static void object_cancel_deferred(evtcp_object *obj) {
  if (!object_is_deferred(obj)) return;
  object_unlink_pending(obj);
  object_unanchor(obj, ANCHOR_PENDING);
}

/* The libevent callback of pending_ev: advances queued objects until the
 * queue is empty or a callback failed (the rest waits for the next run). */
void object_run_pending(evutil_socket_t fd, short what, void *arg) {
  evtcp_loop *loop = (evtcp_loop *)arg;
  (void)fd; (void)what;
  while (loop->pending_head != NULL && !loop_has_error(loop) && !loop->closing) {
    evtcp_object *obj = loop->pending_head;
    unsigned missed = obj->missed_wakes;
    object_unlink_pending(obj);
    obj->missed_wakes = 0;
    if (missed) object_wake(obj, missed);
    obj->run_pending(obj);
    /* unanchor last: run_pending may still use the Lua object; one that
     * queued itself again stays anchored for that run */
    if (!object_is_deferred(obj)) object_unanchor(obj, ANCHOR_PENDING);
  }
  if (loop->pending_head != NULL) event_active(loop->pending_ev, EV_TIMEOUT, 0);
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


static const char *const role_conflicts[] = {
  NULL,
  "evtcp: connection is already being read by another coroutine",
  "evtcp: connection is already being written by another coroutine (waiting in send)"
};

/* Adds the waiter at waiter_index to the object at obj_index, woken by the
 * WAKE_* bits in mask; role (WAIT_READER, WAIT_WRITER or 0) may be held by
 * one waiter at a time: a second one raises. */
void object_add_waiter(lua_State *L, int obj_index, int waiter_index, unsigned mask, unsigned role) {
  evtcp_object *obj = (evtcp_object *)lua_touserdata(L, obj_index);
  obj_index = lua_absindex(L, obj_index);
  waiter_index = lua_absindex(L, waiter_index);
  object_uv_table(L, obj_index, UV_WAITER);                                   /* t */
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
  object_anchor(obj, ANCHOR_WAITER);
}

/* Removes the waiter at waiter_index, if it waits on the object. */
void object_remove_waiter(lua_State *L, int obj_index, int waiter_index) {
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
  if (obj->waiters == 0 && obj->loop != NULL) object_unanchor(obj, ANCHOR_WAITER);
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
void object_wake(evtcp_object *obj, unsigned why) {
  lua_State *L = obj->loop->L;
  int top = lua_gettop(L);
  lua_Integer before = obj->loop->wait_seq;
  if (obj->waiters == 0) return; /* the common case */
  object_push(L, obj);                                 /* obj */
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
  if (obj->waiters == 0) {
    object_unanchor(obj, ANCHOR_WAITER);
  } else if (loop_has_error(obj->loop)) {
    /* a callback raised (maybe before this wake): the error leaves run()
     * first, and the waiters not woken yet are woken by the next run; the
     * change may have been the last this object sees (its end) */
    obj->missed_wakes |= why;
    object_defer(obj);
  }
  lua_settop(L, top);
}

static evtcp_object *check_waitable(lua_State *L) {
  const object_type *t = object_type_of(L, 1);
  if (t == NULL || !t->waitable) luaL_typeerror(L, 1, "TCPConnection or TCPListener");
  return (evtcp_object *)lua_touserdata(L, 1);
}

/* obj:_addWaiter(fn, mask [, role]) and obj:_removeWaiter(fn), for the Lua
 * layer's waits on connections and listeners alike. */
static int object_add_waiter_lua(lua_State *L) {
  evtcp_object *obj = check_waitable(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (obj->loop == NULL) return 0; /* collected: nothing will change */
  object_add_waiter(L, 1, 2, (unsigned)luaL_checkinteger(L, 3), (unsigned)luaL_optinteger(L, 4, 0));
  return 0;
}

static int object_remove_waiter_lua(lua_State *L) {
  check_waitable(L);
  luaL_checkany(L, 2);
  object_remove_waiter(L, 1, 2);
  return 0;
}

/* Appends the error at err_index to the `errors` array of the object at
 * obj_index, made on first use. [-0, +0, m] */
void object_append_error(lua_State *L, int obj_index, int err_index) {
  obj_index = lua_absindex(L, obj_index);
  err_index = lua_absindex(L, err_index);
  object_uv_table(L, obj_index, UV_ERRORS);
  lua_pushvalue(L, err_index);
  lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
  lua_pop(L, 1);
}

