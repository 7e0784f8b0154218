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
    struct vm_syscall_req req;
    struct vm_syscall_res res;
    struct vm_sys_ptr ptrs[64];
    struct vm_sys_nested nested[64];
};

static int sys_call_gc(lua_State *L)
{
    struct sys_call *c = lua_touserdata(L, 1);
    vm_syscall_res_release(&c->res);
    return 0;
}

/* Decode the arguments of _provium_c.syscall into a sys_call userdata
 * pushed at index 7. */
static struct sys_call *new_call(lua_State *L)
{
    struct sys_call *c = lua_newuserdatauv(L, sizeof(*c), 0);
    memset(c, 0, sizeof(*c));
    if (luaL_newmetatable(L, "provium.syscall")) {
        lua_pushcfunction(L, sys_call_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return c;
}

static struct sys_call *check_call(lua_State *L)
{
    lua_Integer nr = luaL_checkinteger(L, 2);
    for (int i = 3; i <= 6; i++)
        luaL_checktype(L, i, LUA_TTABLE);
    lua_settop(L, 6);
    struct sys_call *c = new_call(L);
    struct vm_syscall_req *q = &c->req;
    q->nr = nr;
    lua_Integer n = luaL_len(L, 3);
    if (n > 6)
        luaL_error(L, "syscall: at most 6 arguments, got %d", (int)n);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 3, i);
        if (!lua_isinteger(L, -1))
            luaL_error(L, "syscall: argument %d must be an integer, got %s", (int)i,
                              luaL_typename(L, -1));
        q->args[i - 1] = lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    q->nargs = (uint32_t)n;
    n = luaL_len(L, 4);
    if (n > 64)
        luaL_error(L, "syscall: at most 64 buffers, got %d", (int)n);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_geti(L, 4, i); /* the table keeps the string alive */
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "syscall: bufs[%d] must be a string, got %s", (int)i,
                              luaL_typename(L, -1));
        q->bufs[i - 1] = lua_tolstring(L, -1, &q->lens[i - 1]);
        lua_pop(L, 1);
    }
    q->nbufs = (uint32_t)n;
    n = luaL_len(L, 5);
    for (lua_Integer i = 1; i <= n && i <= 64; i++) {
        lua_geti(L, 5, i);
        c->ptrs[i - 1].buf = checkindex(L, -1, "buf", "ptrs", q->nbufs);
        c->ptrs[i - 1].slot = checkindex(L, -1, "slot", "ptrs", 6);
        lua_pop(L, 1);
    }
    q->ptrs = c->ptrs;
    q->nptrs = (uint32_t)MIN(n, 64);
    n = luaL_len(L, 6);
    for (lua_Integer i = 1; i <= n && i <= 64; i++) {
        lua_geti(L, 6, i);
        c->nested[i - 1].parent = checkindex(L, -1, "parent", "nested", q->nbufs);
        c->nested[i - 1].child = checkindex(L, -1, "child", "nested", q->nbufs);
        lua_getfield(L, -1, "offset");
        lua_Integer off = lua_tointeger(L, -1);
        uint32_t parent = c->nested[i - 1].parent;
        if (!lua_isinteger(L, -1) || off < 0 || (uint64_t)off + 8 > q->lens[parent])
            luaL_error(L, "syscall: nested[%d].offset must leave 8 bytes inside buffer "
                                 "%d (%d bytes), got %s",
                              (int)i, (int)parent + 1, (int)q->lens[parent],
                              luaL_tolstring(L, -1, NULL));
        c->nested[i - 1].offset = (uint32_t)off;
        lua_pop(L, 2);
    }
    q->nested = c->nested;
    q->nnested = (uint32_t)MIN(n, 64);
    return c;
}

/* Push a finished call's ret, errno, out_bufs, or raise its error. */
static int push_result(lua_State *L, struct vm *vm, struct sys_call *c, int r,
                       const struct pv_err *err)
{
    if (r > 0)
        return l_raise_guest(L, vm, "syscall", "the agent refused the call", r, err);
    if (r < 0)
        return luaL_error(L, "%s", err->msg);
    lua_pushinteger(L, c->res.ret);
    lua_pushinteger(L, c->res.err);
    lua_createtable(L, (int)c->res.nout, 0);
    for (uint32_t i = 0; i < c->res.nout; i++) {
        lua_pushlstring(L, c->res.out[i].data ? c->res.out[i].data : "", c->res.out[i].len);
        lua_seti(L, -2, i + 1);
    }
    vm_syscall_res_release(&c->res);
    return 3;
}

/* _provium_c.syscall(vm, nr, args, bufs, ptrs, nested) -> ret, errno, out_bufs
 * args: integers (<= 6); bufs: strings; ptrs: {buf=, slot=} (0-based);
 * nested: {parent=, child=, offset=} (0-based buffer indices). */
static int l_syscall(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    struct sys_call *c = check_call(L);
    struct pv_err err = {0};
    int r = vm_syscall(vm, &c->req, &c->res, &err);
    return push_result(L, vm, c, r, &err);
}

/* A call in flight: its request id, with the VM as user value. */
struct pending {
    uint32_t id;
};

static int pending_gc(lua_State *L)
{
    struct pending *p = lua_touserdata(L, 1);
    struct vm *vm = l_uservm(L, 1);
    if (p->id && vm)
        chan_drop(&vm->chan, p->id);
    p->id = 0;
    return 0;
}

/* _provium_c.syscall_start(same as syscall) -> pending */
static int l_syscall_start(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
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
    p->id = vm_syscall_start(vm, &c->req, &err);
    if (!p->id)
        return luaL_error(L, "%s", err.msg);
    return 1;
}

/* _provium_c.syscall_await(pending, timeout_s) -> ret, errno, out_bufs, or
 * nothing when the timeout passed first (the call stays in flight) */
static int l_syscall_await(lua_State *L)
{
    struct pending *p = luaL_checkudata(L, 1, "provium.pending");
    double t = luaL_checknumber(L, 2);
    struct vm *vm = l_uservm(L, 1);
    if (!p->id || !vm || !chan_find(&vm->chan, p->id))
        return luaL_error(L, "syscall_async: the call is gone (already awaited, or the VM "
                             "was reset or stopped)");
    struct sys_call *c = new_call(L);
    struct pv_err err = {0};
    int r = vm_syscall_finish(vm, p->id, t, &c->res, &err);
    if (r == -ETIMEDOUT)
        return 0;
    p->id = 0;
    return push_result(L, vm, c, r, &err);
}

/* vm:read_mem(addr, len) -> string */
static int l_vm_read_mem(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer addr = luaL_checkinteger(L, 2);
    lua_Integer len = luaL_checkinteger(L, 3);
    if (len < 0 || len > (1 << 20))
        return luaL_argerror(L, 3, "length must be 0..1048576");
    struct buf *b = lua_newuserdatauv(L, sizeof(*b), 0);
    memset(b, 0, sizeof(*b));
    struct pv_err err = {0};
    int r = vm_read_mem(vm, (uint64_t)addr, (uint32_t)len, b, &err);
    if (r != 0) {
        buf_release(b);
        char what[32];
        snprintf(what, sizeof(what), "0x%llx", (unsigned long long)addr);
        return l_raise_guest(L, vm, "read_mem", what, r, &err);
    }
    return l_push_buf(L, b);
}

/* vm:write_mem(addr, data) */
static int l_vm_write_mem(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer addr = luaL_checkinteger(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    struct pv_err err = {0};
    int r = vm_write_mem(vm, (uint64_t)addr, data, len, &err);
    if (r != 0) {
        char what[32];
        snprintf(what, sizeof(what), "0x%llx", (unsigned long long)addr);
        return l_raise_guest(L, vm, "write_mem", what, r, &err);
    }
    return 0;
}

/* _provium_c.clock(vm, op 0|1|2, ns) -> realtime ns after (get / set / advance) */
static int l_clock(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer op = luaL_checkinteger(L, 2), ns = luaL_checkinteger(L, 3);
    struct buf *req = lua_newuserdatauv(L, 2 * sizeof(struct buf), 0);
    memset(req, 0, 2 * sizeof(struct buf));
    struct pv_wr w = {req};
    pv_put_u32(&w, (uint32_t)op);
    pv_put_i64(&w, ns);
    struct pv_err err = {0};
    int r = vm_call(vm, "clock", PV_CLOCK, req, 30, &req[1], &err);
    buf_release(req);
    if (r != 0) {
        buf_release(&req[1]);
        return l_raise_guest(L, vm, "clock", op == 0 ? "get" : op == 1 ? "set" : "advance", r,
                             &err);
    }
    struct pv_rd rd;
    pv_rd_init(&rd, req[1].data, req[1].len);
    int64_t now = pv_get_i64(&rd);
    bool bad = pv_rd_done(&rd) < 0;
    buf_release(&req[1]);
    if (bad)
        return luaL_error(L, "vm `%s`: clock: malformed reply from the agent", vm->name);
    lua_pushinteger(L, now);
    return 1;
}

int luaopen_provium_sys(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"read_mem", l_vm_read_mem}, {"write_mem", l_vm_write_mem}, {NULL, NULL},
    };
    luaL_getmetatable(L, PV_VM_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);

    static const luaL_Reg prims[] = {
        {"syscall", l_syscall}, {"syscall_start", l_syscall_start},
        {"syscall_await", l_syscall_await}, {"clock", l_clock}, {NULL, NULL},
    };
    luaL_newlib(L, prims);
    lua_createtable(L, 0, (int)ARRAY_SIZE(sysnames));
    for (size_t i = 0; i < ARRAY_SIZE(sysnames); i++) {
        lua_pushinteger(L, sysnames[i].nr);
        lua_setfield(L, -2, sysnames[i].name);
    }
    lua_setfield(L, -2, "sys");
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
