/* _provium_c.sym: the primitives behind lua/symbols.lua (symbolized
 * stacks, docs/splats.md#symbolized-stacks). */
#include "l_provium.h"
#include "symbolize.h"
#include "vm.h"

/* Frees the queries a raise would otherwise leak. */
struct l_sym_queries {
    struct sym_query q[SYM_MAX_FRAMES];
    size_t n;
};
static int l_sym_queries_gc(lua_State *L)
{
    struct l_sym_queries *u = lua_touserdata(L, 1);
    sym_query_release(u->q, u->n);
    u->n = 0;
    return 0;
}

static uint64_t field_u64(lua_State *L, int t, const char *k, int i)
{
    lua_getfield(L, t, k);
    lua_Integer v = lua_tointeger(L, -1);
    bool ok = lua_isinteger(L, -1) && v >= 0;
    lua_pop(L, 1);
    if (!ok)
        luaL_error(L, "sym.resolve: frame %d: %s must be a non-negative integer", i, k);
    return (uint64_t)v;
}

/* sym.resolve(elf, {{func=, off=, len=, ret=}, ...}, timeout_s) ->
 * {where or false, ...} (n = the frames given), or nil, message when a tool
 * is missing, failed or timed out, or elf is no ELF file. At most
 * SYM_MAX_FRAMES frames. */
static int l_resolve(lua_State *L)
{
    const char *elf = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    double secs = l_duration(L, 3, "sym.resolve: timeout");
    lua_Integer n = luaL_len(L, 2);
    if (n > SYM_MAX_FRAMES)
        return luaL_error(L, "sym.resolve: at most %d frames", SYM_MAX_FRAMES);
    struct l_sym_queries *u =
        l_newudata(L, sizeof(*u), "provium.sym_queries", l_sym_queries_gc); /* at 4 */
    for (int i = 1; i <= (int)n; i++) {
        lua_rawgeti(L, 2, i);
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_getfield(L, -1, "func");
        const char *func = lua_tostring(L, -1);
        if (!func)
            return luaL_error(L, "sym.resolve: frame %d: func must be a string", i);
        lua_pop(L, 1); /* the string stays anchored in the frame's table */
        lua_getfield(L, -1, "ret");
        bool ret = lua_toboolean(L, -1);
        lua_pop(L, 1);
        struct sym_query *q = &u->q[i - 1];
        *q = (struct sym_query){.func = func, .ret = ret};
        q->off = field_u64(L, -1, "off", i);
        q->len = field_u64(L, -1, "len", i);
        u->n = (size_t)i;
        lua_pop(L, 1);
    }
    struct pv_err err = {0};
    int r = sym_resolve(elf, u->q, u->n, (int)(secs * 1000), &err);
    if (r < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.msg);
        return 2;
    }
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < u->n; i++) {
        if (u->q[i].where)
            lua_pushstring(L, u->q[i].where);
        else
            lua_pushboolean(L, 0);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* sym.vmlinux(vm) -> the path of the vmlinux of vm's kernel, or nil */
static int l_vmlinux(lua_State *L)
{
    struct target t;
    if (!l_testtarget(L, 1, &t) || !t.vm)
        return luaL_argerror(L, 1, "a VM");
    _cleanup_free_ char *p =
        sym_vmlinux(t.vm->plan.vmlinux, t.vm->plan.kernel, t.vm->chan.kernel_release);
    if (!p)
        return 0;
    lua_pushstring(L, p);
    return 1;
}

int luaopen_provium_sym(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"resolve", l_resolve},
        {"vmlinux", l_vmlinux},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
