/* The Worker userdata (docs/workers.md): a handle on a worker
 * agent in the guest, with the VM userdata as user value 1. Every guest
 * operation takes a Worker where it takes a VM (l_checktarget): its requests
 * go to the worker (struct target's worker). Its methods and option checks are in
 * lua/worker.lua. */
#include <stdio.h>
#include <sys/wait.h>

#include "l_provium.h"
#include "spawn.h"
#include "vm.h"

struct l_worker {
    uint64_t handle;
    uint32_t pid;
    uint32_t gen; /* the VM's agent_gen when it started */
    bool closed;
};

static const struct {
    const char *name;
    int nr;
} capnames[] = {
#include "capnames.h"
};

static struct l_worker *checkworker(lua_State *L, int i)
{
    return luaL_checkudata(L, i, PV_WORKER_MT);
}

/* The VM the worker at i runs in, or NULL when it is closed. */
static struct vm *worker_vm(lua_State *L, int i)
{
    lua_getiuservalue(L, i, 1);
    struct target t;
    struct vm *vm = l_testtarget(L, -1, &t) ? t.vm : NULL;
    lua_pop(L, 1);
    return vm;
}

bool l_worker_target(lua_State *L, int i, bool raise, struct target *ret)
{
    struct l_worker *w = checkworker(L, i);
    struct vm *vm = worker_vm(L, i);
    const char *why = !vm                       ? "its VM is closed"
                      : w->closed               ? "it is closed"
                      : vm->state != VM_BOOTED  ? vm_state_name(vm->state)
                      : w->gen != vm->agent_gen ? "its VM rebooted since it started"
                                                : NULL;
    if (why) {
        if (raise)
            luaL_error(L, "worker %d%s%s: gone: %s", (int)w->handle, vm ? " of vm " : "",
                       vm ? vm->name : "", why);
        return false;
    }
    *ret = (struct target){vm, w->handle};
    return true;
}

/* The strings of the array at i, anchored in it (at most max). */
static const char **check_strings(lua_State *L, int i, size_t max, size_t *ret_n, const char *what)
{
    size_t n = l_checkcount(L, i, max, what);
    const char **v = lua_newuserdatauv(L, (n + 1) * sizeof(*v), 0);
    for (size_t k = 1; k <= n; k++) {
        lua_rawgeti(L, i, (lua_Integer)k);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: item %d must be a string", what, (int)k);
        v[k - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    v[n] = NULL;
    *ret_n = n;
    return v;
}

/* _provium_c.worker.spawn(vm, flags, uid, gid, groups, caps, cwd, env) -> Worker;
 * groups an array of integers, env an array of "KEY=VALUE" (lua/worker.lua
 * checked them) */
static int l_spawn(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    struct guest_worker_req req = {
        .flags = (uint32_t)luaL_checkinteger(L, 2),
        .uid = (uint32_t)luaL_checkinteger(L, 3),
        .gid = (uint32_t)luaL_checkinteger(L, 4),
        .caps = (uint64_t)luaL_checkinteger(L, 6),
        .cwd = luaL_checkstring(L, 7),
    };
    req.ngroups = l_checkcount(L, 5, 65536, "spawn_worker: groups");
    uint32_t *groups = lua_newuserdatauv(L, (req.ngroups + 1) * sizeof(*groups), 0);
    for (size_t k = 1; k <= req.ngroups; k++) {
        lua_rawgeti(L, 5, (lua_Integer)k);
        groups[k - 1] = (uint32_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    req.groups = groups;
    req.env = check_strings(L, 8, 65536, &req.nenv, "spawn_worker: env");
    uint64_t handle;
    uint32_t pid;
    struct pv_err err = {0};
    if (guest_worker(&t, &req, &handle, &pid, &err) < 0)
        return l_raise_guest(L, &t, "spawn_worker", NULL, &err);
    struct l_worker *u = lua_newuserdatauv(L, sizeof(*u), 1);
    *u = (struct l_worker){.handle = handle, .pid = pid, .gen = t.vm->agent_gen};
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, PV_WORKER_MT);
    return 1;
}

/* _provium_c.worker.close(w) -> how it ended ("exited with status 0"), or
 * nil when there was nothing to end (closed before, or its VM is gone).
 * The worker kills its processes when its channel closes. */
static int l_close(lua_State *L)
{
    struct l_worker *w = checkworker(L, 1);
    struct target wt;
    bool live = l_worker_target(L, 1, false, &wt);
    w->closed = true;
    if (!live)
        return 0;
    struct target agent = {wt.vm, 0}; /* the agent ends it, not the worker itself */
    int status;
    struct pv_err err = {0};
    if (guest_worker_end(&agent, w->handle, &status, &err) < 0)
        return l_raise_guest(L, &agent, "worker:close", NULL, &err);
    char desc[64];
    spawn_describe_status(status, desc, sizeof(desc));
    lua_pushstring(L, desc);
    return 1;
}

/* _provium_c.worker.state(w) -> "running" | "exited" | "closed" | the VM's
 * state when it is not booted. Asks the worker (a Ping) when it may run. */
static int l_state(lua_State *L)
{
    struct l_worker *w = checkworker(L, 1);
    struct vm *vm = worker_vm(L, 1);
    if (w->closed || !vm)
        lua_pushstring(L, "closed");
    else if (vm->state != VM_BOOTED)
        lua_pushstring(L, vm_state_name(vm->state));
    else if (w->gen != vm->agent_gen)
        lua_pushstring(L, "exited");
    else
        lua_pushstring(L, guest_ping(&(struct target){vm, w->handle}, NULL) == 0 ? "running"
                                                                                 : "exited");
    return 1;
}

/* _provium_c.worker.info(w) -> handle, pid, VM userdata */
static int l_info(lua_State *L)
{
    struct l_worker *w = checkworker(L, 1);
    lua_pushinteger(L, (lua_Integer)w->handle);
    lua_pushinteger(L, w->pid);
    lua_getiuservalue(L, 1, 1);
    return 3;
}

static int l_tostring(lua_State *L)
{
    struct l_worker *w = checkworker(L, 1);
    struct vm *vm = worker_vm(L, 1);
    lua_pushfstring(L, "Worker(%s#%d)", vm ? vm->name : "closed", (int)w->handle);
    return 1;
}

int luaopen_provium_worker(lua_State *L)
{
    luaL_newmetatable(L, PV_WORKER_MT);
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"spawn", l_spawn}, {"close", l_close}, {"state", l_state}, {"info", l_info}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
    luaL_getmetatable(L, PV_WORKER_MT);
    lua_setfield(L, -2, "mt");
    lua_createtable(L, 0, (int)ARRAY_SIZE(capnames));
    for (size_t i = 0; i < ARRAY_SIZE(capnames); i++) {
        lua_pushinteger(L, capnames[i].nr);
        lua_setfield(L, -2, capnames[i].name);
    }
    lua_setfield(L, -2, "caps");
    static const struct l_const flags[] = {
        {"uid", PV_WK_UID},
        {"gid", PV_WK_GID},
        {"groups", PV_WK_GROUPS},
        {"caps", PV_WK_CAPS},
        {"no_new_privs", PV_WK_NO_NEW_PRIVS},
        {"env_clear", PV_WK_ENV_CLEAR},
    };
    l_set_consts(L, "flags", flags, ARRAY_SIZE(flags));
    return 1;
}
