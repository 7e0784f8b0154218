/* Raw system calls, ioctls and agent memory: the C primitives under
 * _provium_c (their call shapes are in lua/sys.lua), vm:read_mem and
 * vm:write_mem, and the name tables provium.sys and provium.errno. */
#include <stdio.h>

#include "l_provium.h"
#include "vm.h"

static const struct {
    const char *name;
    int nr;
} sysnames[] = {
#include "sysnames.h"
};

static uint32_t checkindex(lua_State *L, int tbl, const char *field, const char *what, uint32_t n)
{
    lua_getfield(L, tbl, field);
    lua_Integer v = lua_tointeger(L, -1);
    if (!lua_isinteger(L, -1) || v < 0 || (uint64_t)v >= n)
        luaL_error(L, "syscall: %s.%s must be an index below %d, got %s", what, field, (int)n,
                   luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    return (uint32_t)v;
}

struct sys_call {
    struct guest_syscall_req req;
    struct guest_syscall_res res;
    struct guest_sys_ptr ptrs[PV_SYS_MAX_BUFS];
    struct guest_sys_nested nested[PV_SYS_MAX_BUFS];
};

static int sys_call_gc(lua_State *L)
{
    struct sys_call *c = lua_touserdata(L, 1);
    guest_syscall_res_release(&c->res);
    return 0;
}

/* A sys_call owned by a userdata (pushed). */
static struct sys_call *new_call(lua_State *L)
{
    return l_newudata(L, sizeof(struct sys_call), "provium.syscall", sys_call_gc);
}

/* Decode the arguments of _provium_c.syscall (vm, nr, args, bufs, ptrs,
 * nested) into a sys_call userdata pushed at index 7. */
static struct sys_call *check_call(lua_State *L)
{
    lua_Integer nr = luaL_checkinteger(L, 2);
    size_t nargs = l_checkcount(L, 3, PV_SYS_MAX_ARGS, "syscall: arguments");
    size_t nbufs = l_checkcount(L, 4, PV_SYS_MAX_BUFS, "syscall: buffers");
    size_t nptrs = l_checkcount(L, 5, PV_SYS_MAX_BUFS, "syscall: ptrs");
    size_t nnested = l_checkcount(L, 6, PV_SYS_MAX_BUFS, "syscall: nested");
    lua_settop(L, 6);
    struct sys_call *c = new_call(L);
    struct guest_syscall_req *q = &c->req;
    q->nr = nr;
    for (size_t i = 1; i <= nargs; i++) {
        lua_rawgeti(L, 3, (lua_Integer)i);
        if (!lua_isinteger(L, -1))
            luaL_error(L, "syscall: argument %d must be an integer, got %s", (int)i,
                       luaL_typename(L, -1));
        q->args[i - 1] = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    q->nargs = (uint32_t)nargs;
    for (size_t i = 1; i <= nbufs; i++) {
        lua_rawgeti(L, 4, (lua_Integer)i); /* the table keeps the string alive */
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "syscall: bufs[%d] must be a string, got %s", (int)i,
                       luaL_typename(L, -1));
        q->bufs[i - 1] = lua_tolstring(L, -1, &q->lens[i - 1]);
        lua_pop(L, 1);
    }
    q->nbufs = (uint32_t)nbufs;
    for (size_t i = 1; i <= nptrs; i++) {
        lua_rawgeti(L, 5, (lua_Integer)i);
        luaL_checktype(L, -1, LUA_TTABLE);
        c->ptrs[i - 1].buf = checkindex(L, -1, "buf", "ptrs", q->nbufs);
        c->ptrs[i - 1].slot = checkindex(L, -1, "slot", "ptrs", PV_SYS_MAX_ARGS);
        lua_pop(L, 1);
    }
    q->ptrs = c->ptrs;
    q->nptrs = (uint32_t)nptrs;
    for (size_t i = 1; i <= nnested; i++) {
        lua_rawgeti(L, 6, (lua_Integer)i);
        luaL_checktype(L, -1, LUA_TTABLE);
        c->nested[i - 1].parent = checkindex(L, -1, "parent", "nested", q->nbufs);
        c->nested[i - 1].child = checkindex(L, -1, "child", "nested", q->nbufs);
        lua_getfield(L, -1, "offset");
        lua_Integer off = lua_tointeger(L, -1);
        uint32_t parent = c->nested[i - 1].parent;
        if (!lua_isinteger(L, -1) || off < 0 || (uint64_t)off + 8 > q->lens[parent])
            luaL_error(L,
                       "syscall: nested[%d].offset must leave 8 bytes inside buffer %d (%d "
                       "bytes), got %s",
                       (int)i, (int)parent + 1, (int)q->lens[parent], luaL_tolstring(L, -1, NULL));
        c->nested[i - 1].offset = (uint32_t)off;
        lua_pop(L, 2);
    }
    q->nested = c->nested;
    q->nnested = (uint32_t)nnested;
    return c;
}

struct guest_syscall_req *l_check_syscall(lua_State *L)
{
    return &check_call(L)->req;
}

void l_push_syscall_result(lua_State *L, const struct guest_syscall_res *res)
{
    lua_pushinteger(L, res->ret);
    lua_pushinteger(L, res->err);
    lua_createtable(L, (int)res->nout, 0);
    for (uint32_t i = 0; i < res->nout; i++) {
        lua_pushlstring(L, res->out[i].data ? res->out[i].data : "", res->out[i].len);
        lua_rawseti(L, -2, i + 1);
    }
}

/* Push a finished call's ret, errno, out_bufs, or raise its error. */
static int push_result(lua_State *L, const struct target *t, struct sys_call *c, int r,
                       const struct pv_err *err)
{
    if (r < 0)
        return l_raise_guest(L, t, "syscall", "the agent refused the call", err);
    l_push_syscall_result(L, &c->res);
    guest_syscall_res_release(&c->res);
    return 3;
}

/* _provium_c.syscall(vm, nr, args, bufs, ptrs, nested) -> ret, errno, out_bufs
 * args: integers (<= 6); bufs: strings; ptrs: {buf=, slot=} (0-based);
 * nested: {parent=, child=, offset=} (0-based buffer indices). */
static int l_vm_syscall(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    struct sys_call *c = check_call(L);
    struct pv_err err = {0};
    int r = guest_syscall(&t, &c->req, &c->res, &err);
    return push_result(L, &t, c, r, &err);
}

/* A call in flight: its request id, with the VM or Worker as user value. */
struct pending {
    uint32_t id;
};

static int pending_gc(lua_State *L)
{
    struct pending *p = lua_touserdata(L, 1);
    struct target t;
    /* no route is switched here: the target travels with the drop */
    if (p->id && l_usertarget(L, 1, &t))
        guest_drop(&t, p->id);
    p->id = 0;
    return 0;
}

/* _provium_c.syscall_start(same as syscall) -> pending */
static int l_vm_syscall_start(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    struct sys_call *c = check_call(L);
    struct pending *p = lua_newuserdatauv(L, sizeof(*p), 1);
    p->id = 0;
    if (luaL_newmetatable(L, "provium.pending")) {
        lua_pushcfunction(L, pending_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    struct pv_err err = {0};
    p->id = guest_syscall_start(&t, &c->req, &err);
    if (!p->id)
        return l_raise_guest(L, &t, "syscall_async", NULL, &err);
    return 1;
}

/* _provium_c.syscall_await(pending, timeout_s) -> ret, errno, out_bufs, or
 * nothing when the timeout passed first (the call stays in flight) */
static int l_vm_syscall_await(lua_State *L)
{
    struct pending *p = luaL_checkudata(L, 1, "provium.pending");
    double timeout = luaL_checknumber(L, 2);
    struct target t;
    if (!p->id || !l_usertarget(L, 1, &t) || !chan_find(&t.vm->chan, p->id))
        return luaL_error(L, "syscall_async: the call is gone (already awaited, or the VM "
                             "was reset or stopped)");
    struct sys_call *c = new_call(L);
    struct pv_err err = {0};
    int r = guest_syscall_finish(&t, p->id, timeout, &c->res, &err);
    if (r == -ETIMEDOUT && !err.guest)
        return 0;
    p->id = 0;
    return push_result(L, &t, c, r, &err);
}

/* vm:read_mem(addr, len) -> string */
static int l_vm_read_mem(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer addr = luaL_checkinteger(L, 2);
    lua_Integer len = luaL_checkinteger(L, 3);
    if (len < 0 || len > GUEST_MEM_MAX)
        return luaL_argerror(L, 3, "length must be 0..1048576");
    struct buf *b = l_newbuf(L);
    struct pv_err err = {0};
    if (guest_read_mem(&t, (uint64_t)addr, (uint32_t)len, b, &err) < 0) {
        char hex[32];
        snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)addr);
        return l_raise_guest(L, &t, "read_mem", hex, &err);
    }
    return l_push_buf(L, b);
}

/* vm:write_mem(addr, data) */
static int l_vm_write_mem(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer addr = luaL_checkinteger(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    struct pv_err err = {0};
    if (guest_write_mem(&t, (uint64_t)addr, data, len, &err) < 0) {
        char hex[32];
        snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)addr);
        return l_raise_guest(L, &t, "write_mem", hex, &err);
    }
    return 0;
}

/* _provium_c.clock(vm, op, ns) -> realtime ns after (op from clock_ops) */
static int l_vm_clock(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer op = luaL_checkinteger(L, 2), ns = luaL_checkinteger(L, 3);
    int64_t now;
    struct pv_err err = {0};
    if (guest_clock(&t, (uint32_t)op, ns, &now, &err) < 0)
        return l_raise_guest(L, &t, "clock",
                             op == PV_CLOCK_GET   ? "get"
                             : op == PV_CLOCK_SET ? "set"
                                                  : "advance",
                             &err);
    lua_pushinteger(L, now);
    return 1;
}

int luaopen_provium_sys(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"read_mem", l_vm_read_mem},
        {"write_mem", l_vm_write_mem},
        {NULL, NULL},
    };
    luaL_getmetatable(L, PV_VM_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);

    static const luaL_Reg prims[] = {
        {"syscall", l_vm_syscall},
        {"syscall_start", l_vm_syscall_start},
        {"syscall_await", l_vm_syscall_await},
        {"clock", l_vm_clock},
        {NULL, NULL},
    };
    luaL_newlib(L, prims);
    lua_createtable(L, 0, (int)ARRAY_SIZE(sysnames));
    for (size_t i = 0; i < ARRAY_SIZE(sysnames); i++) {
        lua_pushinteger(L, sysnames[i].nr);
        lua_setfield(L, -2, sysnames[i].name);
    }
    lua_setfield(L, -2, "sys");
    static const struct l_const clock_ops[] = {
        {"get", PV_CLOCK_GET}, {"set", PV_CLOCK_SET}, {"advance", PV_CLOCK_ADVANCE}};
    l_set_consts(L, "clock_ops", clock_ops, ARRAY_SIZE(clock_ops));
    lua_newtable(L);
    for (int e = 1; e < 4096; e++) {
        const char *name = strerrorname_np(e);
        if (name) {
            lua_pushinteger(L, e);
            lua_setfield(L, -2, name);
        }
    }
    lua_setfield(L, -2, "errno");
    return 1;
}
