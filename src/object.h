/*
 * object.h - the object layer (object.c): what every Lua-visible object of
 * evtcp has in common. Included by evtcp.h.
 *
 * A new type is a checklist:
 *   1. its struct starts with an evtcp_object;
 *   2. its constructor makes the userdata first with object_new() (zeroed:
 *      the closed state, that its __gc can free whatever fails next), sets
 *      what its closed state needs beyond zeros and the metatable, then
 *      object_register(); its tables in uservalues are made on first use
 *      (object_uv_table), so an object that never needs one pays nothing;
 *   3. its type check is object_test() against a light-userdata key under
 *      which the metatable is kept (no string hashing per call); methods
 *      report misuse with object_self_error();
 *   4. it anchors itself (object_anchor) for each reason it must outlive its
 *      Lua references, and lets go (object_unanchor) when the reason ends;
 *   5. methods never run Lua callbacks: they change state and object_defer()
 *      the object, whose run_pending the loop calls;
 *   6. a change a coroutine may wait for is announced with object_wake();
 *   7. its __gc frees what it owns without running Lua, then
 *      object_unregister().
 */
#ifndef EVTCP_OBJECT_H
#define EVTCP_OBJECT_H

/* Why an object is anchored (kept alive from the registry): a bit each. */
enum {
  ANCHOR_CALLBACKS = 1, /* its handler has callbacks and it is not terminated */
  ANCHOR_OUTPUT = 2,    /* it still has queued output to flush */
  ANCHOR_WAITER = 4,    /* a coroutine waits on it */
  ANCHOR_PENDING = 8,   /* it sits in the deferred-work queue */
  ANCHOR_CONNECTING = 16 /* resolving, connecting or in its TLS handshake */
};

/* What every anchorable object starts with, so loop.c can treat them alike. */
typedef struct evtcp_object {
  evtcp_loop *loop;
  int anchor_ref;     /* registry reference while anchored, else LUA_NOREF */
  unsigned anchors;   /* ANCHOR_* bits */
  /* the deferred-work queue: doubly linked so __gc can unlink in O(1) */
  struct evtcp_object *pending_next, *pending_prev;
  void (*run_pending)(struct evtcp_object *obj);
  unsigned waiters;   /* coroutines waiting on it (object_add_waiter) */
} evtcp_object;

/* What changed, for object_wake; what a waiter waits for. */
enum {
  WAKE_INPUT = 1,  /* input came, or the end of it (a reader, accept) */
  WAKE_OUTPUT = 2, /* the send queue drained (a writer waiting for room) */
  WAKE_STATE = 4,  /* connected, closed, terminated (wait, dial) */
  WAKE_ALL = 7
};

/* Roles held by one waiter at a time per connection. */
enum { WAIT_READER = 1, WAIT_WRITER = 2 };

/* ---- object.c ---- */
void *object_new(lua_State *L, evtcp_loop *loop, size_t size, int uv_count,
                 void (*run_pending)(evtcp_object *obj));
void object_register(lua_State *L, evtcp_object *obj, int ud_index);
void object_uv_table(lua_State *L, int index, int uv);
void object_unregister(lua_State *L, evtcp_object *obj);
void object_push(lua_State *L, evtcp_object *obj);
void object_anchor(evtcp_object *obj, unsigned why);
void object_unanchor(evtcp_object *obj, unsigned why);
void object_defer(evtcp_object *obj);
void object_run_pending(evutil_socket_t fd, short what, void *arg);
void object_wake(evtcp_object *obj, unsigned why);
void object_add_waiter(lua_State *L, int obj_index, int waiter_index, unsigned mask, unsigned role);
void object_remove_waiter(lua_State *L, int obj_index, int waiter_index);
int object_add_waiter_lua(lua_State *L);
int object_remove_waiter_lua(lua_State *L);
void *object_test(lua_State *L, int index, const void *mt_key);
int object_self_error(lua_State *L, int arg, const char *tname, const void *methods_key);

#endif
