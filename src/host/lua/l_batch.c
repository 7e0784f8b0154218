/* vm:batch: every request is written before any reply is read, so N
 * operations cost one round trip; the agent answers each as it would alone.
 * lua/batch.lua checks the call shapes; here, _provium_c.batch_encode turns
 * one operation into a request and _provium_c.batch sends them and decodes
 * the replies. */
#include "l_provium.h"
#include "vm.h"

/* batch_encode(op, ...) -> request type, payload */
static int l_encode(lua_State *L)
{
    const char *op = luaL_checkstring(L, 1);
    bool run = !strcmp(op, "run");
    struct vm_run_req req;
    if (run)
        l_check_run(L, &req); /* argv, opts at 2, 3 */
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    uint16_t type;
    if (run) {
        vm_encode_run(&io->req, &req);
        type = PV_RUN;
    } else if (!strcmp(op, "read_file") || !strcmp(op, "listdir")) {
        pv_put_str(&w, luaL_checkstring(L, 2));
        type = op[0] == 'r' ? PV_READ_FILE : PV_LISTDIR;
    } else if (!strcmp(op, "stat")) {
        pv_put_str(&w, luaL_checkstring(L, 2));
        pv_put_u32(&w, 0);
        type = PV_STAT;
    } else if (!strcmp(op, "write_file")) {
        size_t n;
        pv_put_str(&w, luaL_checkstring(L, 2));
        const char *data = luaL_checklstring(L, 3, &n);
        pv_put_u32(&w, VM_DEFAULT_MODE);
        pv_put_u32(&w, PV_WR_CREATE | PV_WR_TRUNC);
        pv_put_bytes(&w, data, n);
        type = PV_WRITE_FILE;
    } else if (!strcmp(op, "syscall")) {
        struct vm_syscall_req sq = {.nr = luaL_checkinteger(L, 2)};
        luaL_checktype(L, 3, LUA_TTABLE);
        sq.nargs = (uint32_t)MIN(luaL_len(L, 3), 6);
        for (uint32_t i = 0; i < sq.nargs; i++) {
            lua_geti(L, 3, i + 1);
            sq.args[i] = luaL_checkinteger(L, -1);
            lua_pop(L, 1);
        }
        vm_encode_syscall(&io->req, &sq);
        type = PV_SYSCALL;
    } else if (!(type = l_encode_path_op(L, op, 2, &io->req))) {
        return luaL_argerror(L, 1, "not an operation vm:batch knows");
    }
    lua_pushinteger(L, type);
    lua_pushlstring(L, io->req.data ? io->req.data : "", io->req.len);
    return 2;
}

/* One operation of a batch in flight: its request and what came back. */
struct op {
    uint32_t id;
    struct vm_run_result res; /* chunks: output or file data */
    int r;                    /* as vm_finish returned */
    struct buf reply;
    struct pv_err err;
};

struct ops {
    size_t n;
    struct op op[];
};

static int ops_gc(lua_State *L)
{
    struct ops *o = lua_touserdata(L, 1);
    for (size_t i = 0; i < o->n; i++) {
        vm_run_result_release(&o->op[i].res);
        buf_release(&o->op[i].reply);
    }
    return 0;
}

/* Push the value of a successful reply. */
static void decode(lua_State *L, struct vm *vm, const char *op, struct op *o,
                   const struct buf *reply)
{
    struct pv_err err = {0};
    int r = 0;
    if (!strcmp(op, "run")) {
        r = vm_decode_status(vm, reply, &o->res, &err);
        if (r == 0)
            l_push_run_result(L, vm, "run", 0, &o->res, &err);
    } else if (!strcmp(op, "read_file")) {
        lua_pushlstring(L, o->res.out.data ? o->res.out.data : "", o->res.out.len);
    } else if (!strcmp(op, "stat")) {
        struct vm_stat st;
        r = vm_decode_stat(vm, reply, &st, &err);
        if (r == 0)
            l_push_stat(L, &st);
    } else if (!strcmp(op, "listdir")) {
        l_push_listdir(L, vm, reply);
    } else if (!strcmp(op, "syscall")) {
        struct vm_syscall_res res = {0};
        r = vm_decode_syscall(vm, reply, &res, &err);
        if (r == 0) {
            lua_createtable(L, 0, 4);
            lua_pushinteger(L, res.ret);
            lua_setfield(L, -2, "ret");
            lua_pushinteger(L, res.ret);
            lua_setfield(L, -2, "result");
            lua_pushinteger(L, res.err);
            lua_setfield(L, -2, "errno");
            lua_newtable(L);
            lua_setfield(L, -2, "out_bufs");
        }
    } else {
        lua_pushnil(L);
    }
    if (r)
        luaL_error(L, "%s", err.msg);
}

/* batch(vm, {{op=, type=, payload=}, ...}) -> {{ok=value} | {err=message}, ...} */
static int l_batch(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    size_t n = (size_t)luaL_len(L, 2);
    struct ops *o = lua_newuserdatauv(L, sizeof(*o) + n * sizeof(o->op[0]), 0);
    memset(o, 0, sizeof(*o) + n * sizeof(o->op[0]));
    o->n = n;
    lua_newtable(L);
    lua_pushcfunction(L, ops_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);

    struct pv_err err = {0};
    for (size_t i = 0; i < n; i++) {
        lua_geti(L, 2, (lua_Integer)i + 1);
        lua_getfield(L, -1, "type");
        lua_getfield(L, -2, "payload");
        lua_getfield(L, -3, "op");
        size_t len;
        const char *p = lua_tolstring(L, -2, &len);
        struct buf req = {.data = (char *)p, .len = len};
        o->op[i].id =
            vm_start(vm, lua_tostring(L, -1), (uint16_t)lua_tointeger(L, -3), &req,
                     vm_run_chunk, &o->op[i].res, &err);
        lua_pop(L, 4);
        if (!o->op[i].id)
            break;
    }

    /* Collect every reply before decoding any: a decoder may raise. */
    for (size_t i = 0; i < n; i++) {
        struct op *q = &o->op[i];
        if (!q->id) {
            q->r = -EPIPE;
            q->err = err;
            continue;
        }
        q->r = vm_finish(vm, q->id, 0, &q->reply, &q->err);
        if (q->r == -ETIMEDOUT)
            chan_drop(&vm->chan, q->id);
    }
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        struct op *q = &o->op[i];
        lua_geti(L, 2, (lua_Integer)i + 1);
        lua_getfield(L, -1, "op");
        lua_createtable(L, 0, 1);
        if (q->r == 0) {
            decode(L, vm, lua_tostring(L, -2), q, &q->reply);
            lua_setfield(L, -2, "ok");
        } else {
            lua_pushstring(L, q->err.msg[0] ? q->err.msg : strerror(abs(q->r)));
            lua_setfield(L, -2, "err");
        }
        lua_seti(L, -4, (lua_Integer)i + 1);
        lua_pop(L, 2);
    }
    return 1;
}

int luaopen_provium_batch(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"batch_encode", l_encode},
        {"batch", l_batch},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
