/* _provium_c.barrier, behind lab:barrier (lua/lab.lua, docs/labs.md): the
 * file's process waits for the runner's answer (src/host/barrier.c). */
#include "l_provium.h"
#include "barrier.h"

/* _provium_c.barrier(name, count, timeout_s): returns when count files have
 * arrived; raises with the reason otherwise */
static int l_barrier(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    lua_Integer count = luaL_checkinteger(L, 2);
    double timeout = luaL_checknumber(L, 3);
    struct pv_err err = {0};
    if (barrier_wait(name, (long)count, timeout, &err) < 0)
        return luaL_error(L, "%s", err.msg);
    return 0;
}

void l_open_barrier(lua_State *L)
{
    lua_pushcfunction(L, l_barrier);
    lua_setfield(L, -2, "barrier");
}
