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
  luaL_newlib(L, core_functions);
  loop_open(L);     /* first: lua_close finalizes the loop last */
  event_open(L);
  error_open(L);
  conn_open(L);
  listener_open(L);
  timer_open(L);
  signal_open(L);
  resolver_open(L);
  return 1;
}
