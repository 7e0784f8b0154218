/* _provium_c.keep: --keep-on-failure's binding (src/host/attach.c,
 * docs/debugging.md#keeping-the-vms-of-a-failing-file). */
#include "attach.h"
#include "l_provium.h"
#include "vm.h"

/* Stack slots of l_keep that the evaluator reads. */
enum { KEEP_VMS = 1, KEEP_EVAL = 3 };

struct keep_ctx {
    lua_State *L;
    int *objs; /* the stack index of VM i's userdata */
};

/* attach --lua: eval(vm, chunk) -> text, is_error, more (lua/framework.lua). */
static void keep_eval(void *p, size_t i, const char *chunk, size_t len, struct buf *out,
                      bool *error, bool *more)
{
    struct keep_ctx *c = p;
    lua_State *L = c->L;
    int top = lua_gettop(L);
    lua_pushvalue(L, KEEP_EVAL);
    lua_pushvalue(L, c->objs[i]);
    lua_pushlstring(L, chunk, len);
    if (lua_pcall(L, 2, 3, 0) != LUA_OK) {
        *error = true;
    } else {
        *error = lua_toboolean(L, -2);
        *more = lua_toboolean(L, -1);
        lua_pop(L, 2);
    }
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (s)
        buf_add(out, s, n);
    lua_settop(L, top);
}

/* _provium_c.keep(vms, why, eval) -> true once the running VMs of the list
 * were kept and Ctrl-C ended it, false when none was running; raises when
 * they cannot be kept. */
static int l_keep(lua_State *L)
{
    luaL_checktype(L, KEEP_VMS, LUA_TTABLE);
    const char *why = luaL_checkstring(L, 2);
    luaL_checktype(L, KEEP_EVAL, LUA_TFUNCTION);
    lua_settop(L, KEEP_EVAL);
    size_t n = l_checkcount(L, KEEP_VMS, 64, "vms");
    luaL_checkstack(L, (int)n + 4, "too many VMs");
    struct vm **vms = lua_newuserdatauv(L, (n + 1) * sizeof(*vms), 0);
    int *objs = lua_newuserdatauv(L, (n + 1) * sizeof(*objs), 0);
    size_t k = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_geti(L, KEEP_VMS, (lua_Integer)i);
        struct target t;
        bool dup = false;
        for (size_t d = 0; d < k; d++)
            dup = dup || (l_testtarget(L, -1, &t) && vms[d] == t.vm);
        /* the running ones: the keeper's index i is this list's */
        if (!dup && l_testtarget(L, -1, &t) && !t.worker && t.vm->state == VM_BOOTED) {
            vms[k] = t.vm;
            objs[k++] = lua_gettop(L); /* stays on the stack */
        } else {
            lua_pop(L, 1);
        }
    }
    struct keep_ctx ctx = {L, objs};
    struct pv_err err = {0};
    int r = attach_keep(vms, k, why, keep_eval, &ctx, &err);
    if (r < 0)
        return l_raise(L, &err);
    lua_pushboolean(L, r > 0);
    return 1;
}

/* _provium_c.keep, and _provium_c.keep_on_failure: the option was given */
void l_open_attach(lua_State *L)
{
    lua_pushcfunction(L, l_keep);
    lua_setfield(L, -2, "keep");
    lua_pushboolean(L, attach_keep_on_failure);
    lua_setfield(L, -2, "keep_on_failure");
}
