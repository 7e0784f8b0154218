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
    struct target t = l_checktarget(L, 1);
    struct guest_run_req req;
    l_check_run(L, &req);
    uint64_t handle;
    uint32_t pid;
    struct pv_err err = {0};
    if (guest_spawn(&t, &req, &handle, &pid, &err) < 0)
        return l_raise_guest(L, &t, "run_async", NULL, &err);
    lua_pushinteger(L, (lua_Integer)handle);
    lua_pushinteger(L, pid);
    return 2;
}

/* proc.wait(vm, handle, timeout_s) -> RunResult; timeout 0: none */
static int l_wait(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    double timeout = luaL_checknumber(L, 3);
    uint32_t ms = timeout > 0 ? (uint32_t)MIN(timeout * 1000.0 + 0.5, 4e9) : 0;
    struct guest_run_result *res = l_new_run_result(L);
    struct pv_err err = {0};
    int r = guest_wait(&t, (uint64_t)h, timeout > 0 && !ms ? 1 : ms, res, &err);
    return l_push_run_result(L, &t, "proc:wait", r, res, &err);
}

/* proc.signal(vm, handle, signo) */
static int l_signal(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2), sig = luaL_checkinteger(L, 3);
    struct pv_err err = {0};
    if (guest_signal(&t, (uint64_t)h, (uint32_t)sig, &err) < 0)
        return l_raise_guest(L, &t, "proc:kill", "the process", &err);
    return 0;
}

/* proc.status(vm, handle) -> {running=, pid=, status=, exit_code=, signal=,
 * stdout_bytes=, stderr_bytes=} */
static int l_status(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    struct guest_proc_status st;
    struct pv_err err = {0};
    if (guest_proc_status(&t, (uint64_t)h, &st, &err) < 0)
        return l_raise_guest(L, &t, "proc:status", "the process", &err);
    static const char *names[] = {"exited", "signalled", "timed_out"};
    lua_createtable(L, 0, 7);
    lua_pushboolean(L, st.running);
    lua_setfield(L, -2, "running");
    lua_pushinteger(L, st.pid);
    lua_setfield(L, -2, "pid");
    lua_pushstring(L, st.running ? "running" : names[st.status]);
    lua_setfield(L, -2, "status");
    if (!st.running) {
        lua_pushinteger(L, st.exit_code);
        lua_setfield(L, -2, "exit_code");
    }
    if (!st.running && st.status == PV_SIGNALLED) {
        lua_pushinteger(L, st.signal);
        lua_setfield(L, -2, "signal");
    }
    lua_pushinteger(L, (lua_Integer)st.out_total);
    lua_setfield(L, -2, "stdout_bytes");
    lua_pushinteger(L, (lua_Integer)st.err_total);
    lua_setfield(L, -2, "stderr_bytes");
    return 1;
}

/* proc.stdin(vm, handle, data, close) -> bytes accepted */
static int l_stdin(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    size_t n;
    const char *data = luaL_checklstring(L, 3, &n);
    uint32_t got;
    struct pv_err err = {0};
    if (guest_stdin(&t, (uint64_t)h, data, n, lua_toboolean(L, 4), &got, &err) < 0)
        return l_raise_guest(L, &t, "proc:stdin_write", "the process's stdin", &err);
    lua_pushinteger(L, got);
    return 1;
}

/* proc.resize(vm, handle, rows, cols): a pty process's window size */
static int l_resize(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    lua_Integer rows = lua_tointeger(L, 3), cols = lua_tointeger(L, 4);
    if (!lua_isinteger(L, 3) || !lua_isinteger(L, 4) || rows < 1 || rows > 65535 || cols < 1 ||
        cols > 65535)
        return luaL_error(L, "proc:resize: rows and cols must be integers from 1 to 65535");
    struct pv_err err = {0};
    if (guest_pty_resize(&t, (uint64_t)h, (uint16_t)rows, (uint16_t)cols, &err) < 0)
        return l_raise_guest(L, &t, "proc:resize", NULL, &err);
    return 0;
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
    struct target tg;
    if (t->id && l_usertarget(L, 1, &tg))
        guest_drop(&tg, t->id);
    t->id = 0;
    t->ended = true;
    buf_release(&t->data);
    return 0;
}

/* proc.tail(vm, "path", path, offset, from_end) | (vm, "fd", fd) |
 * (vm, "proc", handle, 1|2) -> tail. Errors at once (ENOENT, EBADF...). */
static int l_tail(lua_State *L)
{
    struct target tg = l_checktarget(L, 1);
    const char *kind = luaL_checkstring(L, 2);
    struct guest_tail_req req = {0};
    const char *what, *op;
    if (!strcmp(kind, "path")) {
        op = "tail_file";
        what = req.path = luaL_checkstring(L, 3);
        req.kind = PV_TAIL_PATH;
        req.offset = luaL_checkinteger(L, 4);
        req.from_end = lua_toboolean(L, 5);
    } else if (!strcmp(kind, "fd")) {
        op = "fd_stream";
        req.kind = PV_TAIL_FD;
        req.fd_or_handle = (uint64_t)luaL_checkinteger(L, 3);
        what = lua_pushfstring(L, "fd %I", (lua_Integer)req.fd_or_handle);
    } else if (!strcmp(kind, "proc")) {
        op = "output stream";
        what = "the process";
        req.kind = PV_TAIL_PROC;
        req.fd_or_handle = (uint64_t)luaL_checkinteger(L, 3);
        req.stream = (uint32_t)luaL_checkinteger(L, 4);
    } else {
        return luaL_argerror(L, 2, "path, fd or proc");
    }
    struct tail *t = lua_newuserdatauv(L, sizeof(*t), 1);
    memset(t, 0, sizeof(*t));
    luaL_setmetatable(L, PV_TAIL_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    struct pv_err err = {0};
    t->id = guest_tail(&tg, &req, tail_chunk, t, &err);
    if (!t->id)
        return l_raise_guest(L, &tg, op, what, &err);
    return 1;
}

/* proc.recv(tail, timeout_s) -> data | nil (nothing within the timeout) |
 * false (the source ended, or the VM is gone) */
static int l_recv(lua_State *L)
{
    struct tail *t = luaL_checkudata(L, 1, PV_TAIL_MT);
    double timeout = luaL_checknumber(L, 2);
    int64_t deadline = now_ns() + (int64_t)(MAX(MIN(timeout, 86400.0), 0) * 1e9);
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
        struct target tg;
        bool live = l_usertarget(L, 1, &tg);
        struct vm *vm = live ? tg.vm : NULL;
        struct chan_req *q = t->id && vm ? chan_find(&vm->chan, t->id) : NULL;
        if (!q || q->done || t->ended || (vm->state != VM_BOOTED && vm->state != VM_PAUSED)) {
            if (q)
                guest_drop(&tg, t->id);
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
        {"spawn", l_spawn},   {"wait", l_wait},         {"signal", l_signal}, {"status", l_status},
        {"stdin", l_stdin},   {"tail", l_tail},         {"recv", l_recv},     {"close", tail_close},
        {"resize", l_resize}, {"inflight", l_inflight}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
