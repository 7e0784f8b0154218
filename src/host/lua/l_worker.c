/* The Worker userdata (reference §9, decisions §4): a handle on a worker
 * agent in the guest, with the VM userdata as user value 1. Every guest
 * operation takes a Worker where it takes a VM (l_tovm): its requests go to
 * the worker (chan.route). Its methods and option checks are in
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
    struct vm *vm = l_testvm(L, -1);
    lua_pop(L, 1);
    return vm;
}

struct vm *l_worker_route(lua_State *L, int i, bool raise)
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
        return NULL;
    }
    vm->chan.route = w->handle;
    return vm;
}

/* _provium_c.worker.spawn(vm, flags, uid, gid, groups, caps, cwd, env) -> Worker;
 * groups an array of integers, env an array of "KEY=VALUE" (lua/worker.lua
 * checked them) */
static int l_spawn(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    pv_put_u32(&w, (uint32_t)luaL_checkinteger(L, 2));
    pv_put_u32(&w, (uint32_t)luaL_checkinteger(L, 3));
    pv_put_u32(&w, (uint32_t)luaL_checkinteger(L, 4));
    luaL_checktype(L, 5, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 5);
    pv_put_u32(&w, (uint32_t)n);
    for (lua_Integer k = 1; k <= n; k++) {
        lua_geti(L, 5, k);
        pv_put_u32(&w, (uint32_t)lua_tointeger(L, -1));
        lua_pop(L, 1);
    }
    pv_put_u64(&w, (uint64_t)luaL_checkinteger(L, 6));
    pv_put_str(&w, luaL_checkstring(L, 7));
    luaL_checktype(L, 8, LUA_TTABLE);
    n = luaL_len(L, 8);
    pv_put_u32(&w, (uint32_t)n);
    for (lua_Integer k = 1; k <= n; k++) {
        lua_geti(L, 8, k);
        pv_put_str(&w, luaL_checkstring(L, -1));
        lua_pop(L, 1);
    }
    l_call(L, vm, "spawn_worker", NULL, PV_WORKER, &io->req, &io->reply);
    struct pv_rd rd;
    pv_rd_init(&rd, io->reply.data, io->reply.len);
    uint64_t handle = pv_get_u64(&rd);
    uint32_t pid = pv_get_u32(&rd);
    if (pv_rd_done(&rd) < 0 || handle == 0)
        l_bad_reply(L, vm, "spawn_worker");
    struct l_worker *u = lua_newuserdatauv(L, sizeof(*u), 1);
    *u = (struct l_worker){.handle = handle, .pid = pid, .gen = vm->agent_gen};
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
    struct vm *vm = l_worker_route(L, 1, false);
    w->closed = true;
    if (!vm)
        return 0;
    vm->chan.route = 0;
    struct l_io *io = l_newio(L);
    struct pv_wr wr = {&io->req};
    pv_put_u64(&wr, w->handle);
    l_call(L, vm, "worker:close", NULL, PV_WORKER_END, &io->req, &io->reply);
    struct pv_rd rd;
    pv_rd_init(&rd, io->reply.data, io->reply.len);
    int status = (int)pv_get_u32(&rd);
    if (pv_rd_done(&rd) < 0)
        l_bad_reply(L, vm, "worker:close");
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
    else {
        vm->chan.route = w->handle;
        int r = vm_ping(vm, NULL);
        lua_pushstring(L, r == 0 ? "running" : "exited");
    }
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
    return 1;
}
