/* vm:batch: every request is written before any reply is read, so N
 * operations cost one round trip; the agent answers each as it would alone.
 * lua/batch.lua checks the call shapes; here, a table of rows turns each
 * operation into requests with the encoders of guest.c, and its reply back
 * into a Lua value with the same decoders the single operations use. */
#include "l_provium.h"
#include "vm.h"

#define PV_BATCH_REQ_MT "provium.batch_req"
/* write_file pieces: lua/batch.lua takes at most 8 MiB, in GUEST_WRITE_PIECE pieces */
#define MAX_PIECES 4

struct op;
struct row {
    const char *name;
    uint16_t type;
    /* lua_to_request: the arguments from stack index 2 into o's pieces */
    void (*encode)(lua_State *L, struct op *o);
    /* reply_to_lua: push the value of a successful reply; false with err set
     * when the reply is malformed */
    bool (*push)(lua_State *L, struct op *o, struct pv_err *err);
};

/* One operation: its requests (one per piece), and what came back. */
struct op {
    const struct row *row;
    struct buf req[MAX_PIECES];
    uint32_t npieces;
    uint32_t id[MAX_PIECES];
    struct guest_run_result res; /* chunks: output, or file data */
    struct buf reply;            /* the last piece's */
    int r;                       /* 0, or -errno as guest_finish returned */
    char *msg;
};

static void op_release(struct op *o)
{
    for (uint32_t k = 0; k < o->npieces; k++)
        buf_release(&o->req[k]);
    guest_run_result_release(&o->res);
    buf_release(&o->reply);
    free(o->msg);
    o->msg = NULL;
}

static void encode_run(lua_State *L, struct op *o)
{
    struct guest_run_req req;
    l_check_run(L, &req); /* argv, opts at 2, 3 */
    guest_encode_run(&o->req[0], &req);
}

static bool push_run(lua_State *L, struct op *o, struct pv_err *err)
{
    if (guest_decode_status(&o->reply, &o->res, err) < 0)
        return false;
    l_push_run_result(L, NULL, "run", 0, &o->res, err);
    return true;
}

static void encode_path(lua_State *L, struct op *o)
{
    guest_encode_path(&o->req[0], luaL_checkstring(L, 2));
}

static bool push_data(lua_State *L, struct op *o, struct pv_err *err)
{
    lua_pushlstring(L, o->res.out.data ? o->res.out.data : "", o->res.out.len);
    return true;
}

static void encode_stat(lua_State *L, struct op *o)
{
    guest_encode_stat(&o->req[0], luaL_checkstring(L, 2), false);
}

static bool push_stat(lua_State *L, struct op *o, struct pv_err *err)
{
    struct guest_stat st;
    if (guest_decode_stat(&o->reply, &st, err) < 0)
        return false;
    l_push_stat(L, &st);
    return true;
}

static bool push_listdir(lua_State *L, struct op *o, struct pv_err *err)
{
    return l_push_listdir(L, &o->reply, err);
}

static bool push_nothing(lua_State *L, struct op *o, struct pv_err *err)
{
    lua_pushnil(L);
    return true;
}

/* The same pieces vm:write_file sends. */
static void encode_write(lua_State *L, struct op *o)
{
    const char *path = luaL_checkstring(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    if (len > MAX_PIECES * GUEST_WRITE_PIECE)
        luaL_error(L, "b:write_file: more than %d MiB; use vm:write_file",
                   (int)(MAX_PIECES * GUEST_WRITE_PIECE >> 20));
    size_t off = 0;
    o->npieces = 0;
    do {
        size_t n = MIN(len - off, GUEST_WRITE_PIECE);
        guest_encode_write_piece(&o->req[o->npieces++], path, data + off, n, GUEST_DEFAULT_MODE,
                                 false, off);
        off += n;
    } while (off < len);
}

static void encode_mkdir(lua_State *L, struct op *o)
{
    lua_Integer perm = luaL_checkinteger(L, 3);
    guest_encode_mkdir(&o->req[0], luaL_checkstring(L, 2), (uint32_t)perm & 07777,
                       lua_toboolean(L, 4));
}

static void encode_rename(lua_State *L, struct op *o)
{
    guest_encode_rename(&o->req[0], luaL_checkstring(L, 2), luaL_checkstring(L, 3));
}

/* b:syscall: the shapes of vm:syscall (nr, args, bufs, ptrs, nested at 2..6),
 * through the converter _provium_c.syscall uses */
static void encode_syscall(lua_State *L, struct op *o)
{
    guest_encode_syscall(&o->req[0], l_check_syscall(L));
    lua_pop(L, 1);
}

static bool push_syscall(lua_State *L, struct op *o, struct pv_err *err)
{
    struct guest_syscall_res res = {0};
    if (guest_decode_syscall(&o->reply, &res, err) < 0)
        return false;
    lua_createtable(L, 0, 4);
    l_push_syscall_result(L, &res); /* ret, errno, out_bufs */
    guest_syscall_res_release(&res);
    lua_setfield(L, -4, "out_bufs");
    lua_setfield(L, -3, "errno");
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "ret");
    lua_setfield(L, -2, "result");
    return true;
}

static const struct row rows[] = {
    {"run", PV_RUN, encode_run, push_run},
    {"read_file", PV_READ_FILE, encode_path, push_data},
    {"stat", PV_STAT, encode_stat, push_stat},
    {"listdir", PV_LISTDIR, encode_path, push_listdir},
    {"write_file", PV_WRITE_FILE, encode_write, push_nothing},
    {"mkdir", PV_MKDIR, encode_mkdir, push_nothing},
    {"unlink", PV_UNLINK, encode_path, push_nothing},
    {"rename", PV_RENAME, encode_rename, push_nothing},
    {"syscall", PV_SYSCALL, encode_syscall, push_syscall},
};

static int req_gc(lua_State *L)
{
    op_release(lua_touserdata(L, 1));
    return 0;
}

/* batch_encode(op, ...) -> a request, ready to go */
static int l_encode(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const struct row *row = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(rows) && !row; i++)
        if (!strcmp(rows[i].name, name))
            row = &rows[i];
    if (!row)
        return luaL_argerror(L, 1, "not an operation vm:batch knows");
    struct op *o = lua_newuserdatauv(L, sizeof(*o), 0);
    memset(o, 0, sizeof(*o));
    luaL_setmetatable(L, PV_BATCH_REQ_MT);
    o->row = row;
    o->npieces = 1;
    lua_replace(L, 1); /* the name's place: the encoders read from index 2 */
    row->encode(L, o);
    lua_pushvalue(L, 1);
    return 1;
}

/* Send every piece of every operation; collect every reply before
 * decoding any (a decoder may raise). */
static void send_all(const struct target *t, struct op **ops, size_t n)
{
    struct pv_err err = {0};
    for (size_t i = 0; i < n; i++) {
        struct op *o = ops[i];
        for (uint32_t k = 0; k < o->npieces; k++) {
            o->id[k] = guest_start(t, o->row->name, o->row->type, &o->req[k], guest_run_chunk,
                                   &o->res, &err);
            if (!o->id[k]) {
                o->r = -err.code;
                o->msg = xasprintf("%s%s", err.msg, pv_err_story(&err));
                break;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        struct op *o = ops[i];
        for (uint32_t k = 0; k < o->npieces && o->id[k]; k++) {
            buf_release(&o->reply);
            int r = guest_finish(t, o->id[k], 0, &o->reply, &err);
            if (r == -ETIMEDOUT && !err.guest)
                guest_drop(t, o->id[k]);
            if (r < 0 && o->r == 0) {
                o->r = r;
                o->msg = xasprintf("%s%s", err.msg, pv_err_story(&err));
            }
        }
    }
}

/* batch(vm, {request, ...}) -> {{ok=value} | {err=message}, ...} */
static int l_batch(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    size_t n = l_checkcount(L, 2, 65536, "vm:batch");
    struct op **ops = lua_newuserdatauv(L, (n + 1) * sizeof(*ops), 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1); /* the table keeps it alive */
        ops[i] = luaL_checkudata(L, -1, PV_BATCH_REQ_MT);
        lua_pop(L, 1);
        if (ops[i]->id[0] || ops[i]->r)
            return luaL_error(L, "vm:batch: operation %d was already sent", (int)i + 1);
    }
    send_all(&t, ops, n);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        struct op *o = ops[i];
        struct pv_err err = {0};
        lua_createtable(L, 0, 1);
        if (o->r == 0 && o->row->push(L, o, &err)) {
            lua_setfield(L, -2, "ok");
        } else {
            /* the guest's errno: the agent's message, as docs/processes.md shows */
            lua_pushstring(L, o->r ? (o->msg ? o->msg : strerror(-o->r)) : err.msg);
            lua_setfield(L, -2, "err");
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
        op_release(o);
    }
    return 1;
}

int luaopen_provium_batch(lua_State *L)
{
    if (luaL_newmetatable(L, PV_BATCH_REQ_MT)) {
        lua_pushcfunction(L, req_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"batch_encode", l_encode},
        {"batch", l_batch},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
