/* Processes started with vm:run_async and the agent's Tail streams: the C
 * primitives under _provium_c.proc (the Process and Tail types are in
 * lua/process.lua and lua/stream.lua). */
#include <poll.h>
#include <stdio.h>

#include "l_provium.h"
#include "vm.h"

#define PV_TAIL_MT "provium.tail"
/* A stream nobody reads keeps at most this much; the rest is counted. */
#define TAIL_CAP (64ull << 20)

/* proc.spawn(vm, argv, opts) -> handle, pid */
static int l_spawn(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    struct vm_run_req req;
    l_check_run(L, &req);
    uint64_t handle;
    uint32_t pid;
    struct pv_err err = {0};
    int r = vm_spawn(vm, &req, &handle, &pid, &err);
    if (r > 0)
        return luaL_error(L, "%s: run_async: %s: %s", l_who(L, vm), strerrorname_np(r),
                          err.msg);
    if (r < 0)
        return luaL_error(L, "%s", err.msg);
    lua_pushinteger(L, (lua_Integer)handle);
    lua_pushinteger(L, pid);
    return 2;
}

/* proc.wait(vm, handle, timeout_s) -> RunResult; timeout 0: none */
static int l_wait(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    double t = luaL_checknumber(L, 3);
    uint32_t ms = t > 0 ? (uint32_t)MIN(t * 1000.0 + 0.5, 4e9) : 0;
    struct vm_run_result *res = lua_newuserdatauv(L, sizeof(*res), 0);
    memset(res, 0, sizeof(*res));
    struct pv_err err = {0};
    int r = vm_wait(vm, (uint64_t)h, t > 0 && !ms ? 1 : ms, res, &err);
    return l_push_run_result(L, vm, "proc:wait", r, res, &err);
}

/* proc.signal(vm, handle, signo) */
static int l_signal(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2), sig = luaL_checkinteger(L, 3);
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    pv_put_u64(&w, (uint64_t)h);
    pv_put_u32(&w, (uint32_t)sig);
    l_call(L, vm, "proc:kill", "the process", PV_SIGNAL, &io->req, &io->reply);
    return 0;
}

/* proc.status(vm, handle) -> {running=, pid=, status=, exit_code=, signal=,
 * stdout_bytes=, stderr_bytes=} */
static int l_status(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    pv_put_u64(&w, (uint64_t)h);
    l_call(L, vm, "proc:status", "the process", PV_PROC_STATUS, &io->req, &io->reply);
    struct pv_rd r;
    pv_rd_init(&r, io->reply.data, io->reply.len);
    bool running = pv_get_u32(&r);
    uint32_t pid = pv_get_u32(&r), status = pv_get_u32(&r);
    int32_t code = (int32_t)pv_get_u32(&r);
    uint32_t sig = pv_get_u32(&r);
    uint64_t out = pv_get_u64(&r), errb = pv_get_u64(&r);
    if (pv_rd_done(&r) < 0 || status > PV_TIMED_OUT)
        l_bad_reply(L, vm, "proc:status");
    static const char *names[] = {"exited", "signalled", "timed_out"};
    lua_createtable(L, 0, 7);
    lua_pushboolean(L, running);
    lua_setfield(L, -2, "running");
    lua_pushinteger(L, pid);
    lua_setfield(L, -2, "pid");
    lua_pushstring(L, running ? "running" : names[status]);
    lua_setfield(L, -2, "status");
    if (!running) {
        lua_pushinteger(L, code);
        lua_setfield(L, -2, "exit_code");
    }
    if (!running && status == PV_SIGNALLED) {
        lua_pushinteger(L, sig);
        lua_setfield(L, -2, "signal");
    }
    lua_pushinteger(L, (lua_Integer)out);
    lua_setfield(L, -2, "stdout_bytes");
    lua_pushinteger(L, (lua_Integer)errb);
    lua_setfield(L, -2, "stderr_bytes");
    return 1;
}

/* proc.stdin(vm, handle, data, close) -> bytes accepted */
static int l_stdin(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    size_t n;
    const char *data = luaL_checklstring(L, 3, &n);
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    pv_put_u64(&w, (uint64_t)h);
    pv_put_bytes(&w, data, n);
    pv_put_u32(&w, lua_toboolean(L, 4));
    l_call(L, vm, "proc:stdin_write", "the process's stdin", PV_STDIN, &io->req, &io->reply);
    struct pv_rd r;
    pv_rd_init(&r, io->reply.data, io->reply.len);
    uint32_t got = pv_get_u32(&r);
    if (pv_rd_done(&r) < 0)
        l_bad_reply(L, vm, "proc:stdin_write");
    lua_pushinteger(L, got);
    return 1;
}

/* A Tail: one PV_TAIL request in flight; its chunks land in `data`. The VM
 * userdata is the tail's user value, so the VM outlives it. */
struct tail {
    uint32_t id;
    struct buf data;
    uint64_t dropped;
    bool ended;
};

static void tail_chunk(void *ctx, uint8_t stream, const void *p, size_t n)
{
    struct tail *t = ctx;
    if (t->data.len + n <= TAIL_CAP)
        buf_add(&t->data, p, n);
    else
        t->dropped += n;
}

static int tail_close(lua_State *L)
{
    struct tail *t = luaL_checkudata(L, 1, PV_TAIL_MT);
    struct vm *vm = l_uservm(L, 1);
    if (t->id && vm)
        chan_drop(&vm->chan, t->id);
    t->id = 0;
    t->ended = true;
    buf_release(&t->data);
    return 0;
}

/* proc.tail(vm, "path", path, offset, from_end) | (vm, "fd", fd) |
 * (vm, "proc", handle, 1|2) -> tail. Errors at once (ENOENT, EBADF...):
 * a Ping behind the request proves the agent has started it. */
static int l_tail(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    const char *kind = luaL_checkstring(L, 2);
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    const char *what, *op = "output stream";
    if (!strcmp(kind, "path")) {
        op = "tail_file";
        what = luaL_checkstring(L, 3);
        pv_put_u32(&w, PV_TAIL_PATH);
        pv_put_str(&w, what);
        pv_put_i64(&w, luaL_checkinteger(L, 4));
        pv_put_u32(&w, lua_toboolean(L, 5));
    } else if (!strcmp(kind, "fd")) {
        op = "fd_stream";
        what = lua_pushfstring(L, "fd %I", luaL_checkinteger(L, 3));
        pv_put_u32(&w, PV_TAIL_FD);
        pv_put_u64(&w, (uint64_t)luaL_checkinteger(L, 3));
    } else {
        what = "the process";
        pv_put_u32(&w, PV_TAIL_PROC);
        pv_put_u64(&w, (uint64_t)luaL_checkinteger(L, 3));
        pv_put_u32(&w, (uint32_t)luaL_checkinteger(L, 4));
    }
    struct tail *t = lua_newuserdatauv(L, sizeof(*t), 1);
    memset(t, 0, sizeof(*t));
    luaL_setmetatable(L, PV_TAIL_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    struct pv_err err = {0};
    t->id = vm_start(vm, op, PV_TAIL, &io->req, tail_chunk, t, &err);
    if (!t->id)
        return luaL_error(L, "%s", err.msg);
    int r = vm_call(vm, op, PV_PING, NULL, 30, NULL, &err);
    struct chan_req *q = chan_find(&vm->chan, t->id);
    if (r == 0 && q && q->done && q->ret > 0) {
        r = q->ret;
        err = q->err;
        chan_drop(&vm->chan, t->id);
        t->id = 0;
    }
    if (r)
        return l_raise_guest(L, vm, op, what, r, &err);
    return 1;
}

/* proc.recv(tail, timeout_s) -> data | nil (nothing within the timeout) |
 * false (the source ended, or the VM is gone) */
static int l_recv(lua_State *L)
{
    struct tail *t = luaL_checkudata(L, 1, PV_TAIL_MT);
    double timeout = luaL_checknumber(L, 2);
    int64_t deadline = now_ns() + (int64_t)(timeout * 1e9);
    for (;;) {
        if (t->data.len) {
            lua_pushlstring(L, t->data.data, t->data.len);
            buf_consume(&t->data, t->data.len);
            if (t->dropped) {
                lua_pushfstring(L, "\n[provium: %I bytes dropped: the stream was not read]\n",
                                (lua_Integer)t->dropped);
                lua_concat(L, 2);
                t->dropped = 0;
            }
            return 1;
        }
        struct vm *vm = l_uservm(L, 1);
        struct chan_req *q = t->id && vm ? chan_find(&vm->chan, t->id) : NULL;
        if (!q || q->done || t->ended || (vm->state != VM_BOOTED && vm->state != VM_PAUSED)) {
            if (q)
                chan_drop(&vm->chan, t->id);
            t->id = 0;
            t->ended = true;
            lua_pushboolean(L, 0);
            return 1;
        }
        int64_t left = deadline - now_ns();
        if (left <= 0) {
            lua_pushnil(L);
            return 1;
        }
        if (vm->state == VM_PAUSED) {
            poll(NULL, 0, (int)(left / 1000000));
            continue;
        }
        struct pv_err err = {0};
        if (vm_pump(vm, (double)left / 1e9, &err) < 0)
            t->ended = true;
    }
}

/* proc.inflight(vm) -> requests the VM's agent has not answered yet */
static int l_inflight(lua_State *L)
{
    lua_pushinteger(L, chan_inflight(&l_tovm(L, 1)->chan));
    return 1;
}

int luaopen_provium_proc(lua_State *L)
{
    if (luaL_newmetatable(L, PV_TAIL_MT)) {
        lua_pushcfunction(L, tail_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"spawn", l_spawn}, {"wait", l_wait}, {"signal", l_signal}, {"status", l_status},
        {"stdin", l_stdin}, {"tail", l_tail}, {"recv", l_recv},     {"close", tail_close},
        {"inflight", l_inflight}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
