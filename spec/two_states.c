/*
 * two_states.c - runs the same evtcp script in two Lua states, in two OS
 * threads at once (API section 1: one loop per state, no shared C state).
 * Each state serves and dials its own echo and counts what came back.
 * Exits 0 if both states got every byte. Built by `make` as
 * build/two_states; run by spec/loop_spec.lua.
 */
#include <pthread.h>
#include <stdio.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

static const char script[] =
  "local evtcp = require('evtcp')\n"
  "local n, got = 2000, 0\n"
  "local l = assert(evtcp.listen(0, { address = '127.0.0.1', onConnection = function()\n"
  "  return { onData = function(_, c, ev) c:send(ev.data) end } end }))\n"
  "local c = evtcp.connect('127.0.0.1', l.port, {\n"
  "  onConnection = function(_, c) for i = 1, n do c:send(string.format('%08d', i)) end end,\n"
  "  onData = function(_, c, ev) got = got + #ev.data if got == 8 * n then c:close() end end,\n"
  "  onTerminate = function() l:terminate() end })\n"
  "assert(evtcp.run(30), 'run did not finish')\n"
  "return got\n";

static void *run_state(void *arg) {
  long *result = (long *)arg;
  lua_State *L = luaL_newstate();
  luaL_openlibs(L);
  if (luaL_dostring(L, script) != LUA_OK) {
    fprintf(stderr, "two_states: %s\n", lua_tostring(L, -1));
    *result = -1;
  } else {
    *result = (long)lua_tointeger(L, -1);
  }
  lua_close(L);
  return NULL;
}

int main(void) {
  pthread_t t[2];
  long result[2] = {0, 0};
  int i;
  for (i = 0; i < 2; i++) pthread_create(&t[i], NULL, run_state, &result[i]);
  for (i = 0; i < 2; i++) pthread_join(t[i], NULL);
  printf("%ld %ld\n", result[0], result[1]);
  return result[0] == 16000 && result[1] == 16000 ? 0 : 1;
}
