/*
 * module.c - luaopen_evtcp_core: the C core's table.
 *
 * The Lua layer (lua/evtcp/init.lua) builds the public API on it.
 */
#include "platform.h" /* first: feature macros */
#include "evtcp.h"

static const luaL_Reg core_functions[] = {
  {"connect", conn_connect},
  {"listen", listener_listen},
  {"after", timer_after},
  {"signal", signal_install},
  {NULL, NULL}
};

LUALIB_API int luaopen_evtcp_core(lua_State *L);

LUALIB_API int luaopen_evtcp_core(lua_State *L) {
  evtcp_loop *loop;
  luaL_newlib(L, core_functions);
  loop = loop_open(L); /* first: lua_close finalizes the loop last */
  if (loop != NULL) { /* made now: what the files keep in it goes at lua_close */
    loop_at_close(loop, resolve_close);
    loop_at_close(loop, tls_cache_free_all);
    loop_at_close(loop, signal_close_all);
    loop_at_close(loop, linger_close_all);
    loop_at_close(loop, pool_close_all);
  }
  event_open(L);
  error_open(L);
  conn_open(L);
  listener_open(L);
  timer_open(L);
  signal_open(L);
  resolver_open(L);
  return 1;
}
