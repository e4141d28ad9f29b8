/*
 * object.h - the object layer (object.c): what every Lua-visible object of
 * evtcp has in common. Included by evtcp.h.
 *
 * A new type is a checklist:
 *   1. its struct starts with an evtcp_object;
 *   2. its constructor makes the userdata first with object_new() (zeroed:
 *      the closed state, with its metatable and registered, so that its
 *      __gc frees whatever fails next), and sets at once what its closed
 *      state needs beyond zeros; its tables in uservalues are made on first use
 *      (object_uv_table), so an object that never needs one pays nothing;
 *   3. it has one object_type, static in its file, whose metatable
 *      object_type_open() makes (with the __gc skeleton, which calls the
 *      type's release); its methods check self with object_check() (no
 *      string hashing per call), other arguments with object_test();
 *   4. it anchors itself (object_anchor) for each reason it must outlive its
 *      Lua references, and lets go (object_unanchor) when the reason ends;
 *   5. methods never run Lua callbacks: they change state and object_defer()
 *      the object, whose run_pending the loop calls;
 *   6. a change a coroutine may wait for is announced with object_wake();
 *   7. its type's release frees what it owns without running Lua; the
 *      skeleton calls it once, then unregisters the object.
 * The layer knows no type above it: a type says what it is (waitable:
 * coroutines may wait on it) in its object_type.
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
  unsigned missed_wakes; /* WAKE_* bits a raised error kept from waking: the next run wakes them */
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

/* A type of object: its metatable is made by object_type_open and found
 * again through the descriptor's address. */
typedef struct object_type {
  const char *name;        /* "TCPConnection": type errors */
  const char *locked;      /* what getmetatable() answers instead, or NULL */
  /* __gc's own part: frees what the object owns, runs no Lua. NULL: the
   * userdata is not an evtcp_object, and has no __gc. */
  void (*release)(lua_State *L, evtcp_object *obj);
  unsigned waitable;       /* coroutines may wait on it: _addWaiter */
  char methods_key;        /* its address keys the method table (names for errors) */
} object_type;

/* ---- object.c ---- */
void object_type_open(lua_State *L, object_type *t, const luaL_Reg *methods, const luaL_Reg *meta);
void object_set_type(lua_State *L, int index, const object_type *t);
void *object_new(lua_State *L, evtcp_loop *loop, size_t size, int uv_count,
                 void (*run_pending)(evtcp_object *obj), const object_type *t);
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
void *object_test(lua_State *L, int index, const object_type *t);
void *object_check(lua_State *L, int index, const object_type *t);
void object_append_error(lua_State *L, int obj_index, int err_index);

#endif
