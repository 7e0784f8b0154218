/* Guest file handles and directory operations: the C primitives under
 * _provium_c.fs (the File type and the VM methods are in lua/file.lua). */
#include <stdio.h>

#include "l_provium.h"
#include "vm.h"

void l_call(lua_State *L, struct vm *vm, const char *op, const char *what, uint16_t type,
                 struct buf *req, struct buf *reply)
{
    struct pv_err err = {0};
    int r = vm_call(vm, op, type, req, 60, reply, &err);
    buf_release(req);
    if (r == 0)
        return;
    buf_release(reply);
    l_raise_guest(L, vm, op, what, r, &err);
}

static int io_gc(lua_State *L)
{
    struct l_io *io = lua_touserdata(L, 1);
    buf_release(&io->req);
    buf_release(&io->reply);
    return 0;
}

struct l_io *l_newio(lua_State *L)
{
    struct l_io *io = lua_newuserdatauv(L, sizeof(*io), 0);
    memset(io, 0, sizeof(*io));
    if (luaL_newmetatable(L, "provium.io")) {
        lua_pushcfunction(L, io_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return io;
}

void l_bad_reply(lua_State *L, const struct vm *vm, const char *op)
{
    luaL_error(L, "%s: %s: malformed reply from the agent", l_who(L, vm), op);
}

/* fs.open(vm, path, bits, perm) -> handle */
static int l_open(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    const char *path = luaL_checkstring(L, 2);
    lua_Integer bits = luaL_checkinteger(L, 3), perm = luaL_checkinteger(L, 4);
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    pv_put_str(&w, path);
    pv_put_u32(&w, (uint32_t)bits);
    pv_put_u32(&w, (uint32_t)perm);
    l_call(L, vm, "open_file", path, PV_OPEN, &io->req, &io->reply);
    struct pv_rd r;
    pv_rd_init(&r, io->reply.data, io->reply.len);
    uint64_t h = pv_get_u64(&r);
    if (pv_rd_done(&r) < 0)
        l_bad_reply(L, vm, "open_file");
    lua_pushinteger(L, (lua_Integer)h);
    return 1;
}

/* fs.read(vm, handle, max) -> string ("" at end of file) */
static int l_read(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2), max = luaL_checkinteger(L, 3);
    if (max < 0)
        return luaL_argerror(L, 3, "must not be negative");
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    pv_put_u64(&w, (uint64_t)h);
    pv_put_u32(&w, (uint32_t)MIN(max, (lua_Integer)(4u << 20)));
    l_call(L, vm, "file:read", "read", PV_FREAD, &io->req, &io->reply);
    struct pv_rd r;
    pv_rd_init(&r, io->reply.data, io->reply.len);
    size_t n;
    const char *p = pv_get_bytes(&r, &n);
    if (pv_rd_done(&r) < 0 || n > (size_t)max)
        l_bad_reply(L, vm, "file:read");
    lua_pushlstring(L, p, n);
    return 1;
}

/* fs.write(vm, handle, data) -> bytes written */
static int l_write(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    pv_put_u64(&w, (uint64_t)h);
    pv_put_bytes(&w, data, MIN(len, (size_t)(8u << 20)));
    l_call(L, vm, "file:write", "write", PV_FWRITE, &io->req, &io->reply);
    struct pv_rd r;
    pv_rd_init(&r, io->reply.data, io->reply.len);
    uint32_t n = pv_get_u32(&r);
    if (pv_rd_done(&r) < 0 || n > len)
        l_bad_reply(L, vm, "file:write");
    lua_pushinteger(L, n);
    return 1;
}

/* fs.seek(vm, handle, offset, whence 0|1|2) -> position */
static int l_seek(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2), off = luaL_checkinteger(L, 3);
    lua_Integer whence = luaL_checkinteger(L, 4);
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    pv_put_u64(&w, (uint64_t)h);
    pv_put_i64(&w, off);
    pv_put_u32(&w, (uint32_t)whence);
    l_call(L, vm, "file:seek", "seek", PV_SEEK, &io->req, &io->reply);
    struct pv_rd r;
    pv_rd_init(&r, io->reply.data, io->reply.len);
    uint64_t pos = pv_get_u64(&r);
    if (pv_rd_done(&r) < 0)
        l_bad_reply(L, vm, "file:seek");
    lua_pushinteger(L, (lua_Integer)pos);
    return 1;
}

/* fs.close(vm, handle) */
static int l_close(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    pv_put_u64(&w, (uint64_t)h);
    l_call(L, vm, "file:close", "close", PV_CLOSE, &io->req, &io->reply);
    return 0;
}

static const char *ftype_name(uint32_t t)
{
    static const char *names[] = {"other", "file", "directory", "symlink", "fifo",
                                  "socket", "block_device", "char_device", "other"};
    return t <= PV_FT_OTHER ? names[t] : "other";
}

void l_push_listdir(lua_State *L, const struct vm *vm, const struct buf *reply)
{
    struct pv_rd r;
    pv_rd_init(&r, reply->data, reply->len);
    uint32_t n = pv_get_count(&r, 9);
    lua_createtable(L, (int)n, 0);
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        const char *name = pv_get_str(&r);
        uint32_t type = pv_get_u32(&r);
        lua_createtable(L, 0, 2);
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, ftype_name(type));
        lua_setfield(L, -2, "entry_type");
        lua_seti(L, -2, i + 1);
    }
    if (pv_rd_done(&r) < 0)
        l_bad_reply(L, vm, "listdir");
}

/* fs.listdir(vm, path) -> {{name=, entry_type=}, ...} sorted by name */
static int l_listdir(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    const char *path = luaL_checkstring(L, 2);
    struct l_io *io = l_newio(L);
    struct pv_wr w = {&io->req};
    pv_put_str(&w, path);
    l_call(L, vm, "listdir", path, PV_LISTDIR, &io->req, &io->reply);
    l_push_listdir(L, vm, &io->reply);
    return 1;
}

uint16_t l_encode_path_op(lua_State *L, const char *op, int i, struct buf *b)
{
    struct pv_wr w = {b};
    pv_put_str(&w, luaL_checkstring(L, i));
    if (!strcmp(op, "mkdir")) {
        pv_put_u32(&w, (uint32_t)luaL_checkinteger(L, i + 1));
        pv_put_u32(&w, lua_toboolean(L, i + 2) ? 1 : 0);
        return PV_MKDIR;
    }
    if (!strcmp(op, "unlink"))
        return PV_UNLINK;
    if (!strcmp(op, "rename")) {
        pv_put_str(&w, luaL_checkstring(L, i + 1));
        return PV_RENAME;
    }
    return 0;
}

/* fs.path_op(vm, op, path[, path2 | perm, parents]) for mkdir, unlink, rename */
static int l_path_op(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    const char *op = luaL_checkstring(L, 2);
    const char *path = luaL_checkstring(L, 3);
    struct l_io *io = l_newio(L);
    uint16_t type = l_encode_path_op(L, op, 3, &io->req);
    if (!type)
        return luaL_argerror(L, 2, "mkdir, unlink or rename");
    l_call(L, vm, op, path, type, &io->req, &io->reply);
    return 0;
}

/* fs.write_chunk(vm, path, data, append, mode|-1): write_file in pieces */
static int l_write_chunk(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    const char *path = luaL_checkstring(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    bool append = lua_toboolean(L, 4);
    lua_Integer mode = luaL_optinteger(L, 5, -1);
    struct pv_err err = {0};
    int r = vm_write_file(vm, path, data, len, mode < 0 ? VM_DEFAULT_MODE : (uint32_t)mode,
                          append, &err);
    if (r != 0)
        return l_raise_guest(L, vm, "push_file", path, r, &err);
    return 0;
}

int luaopen_provium_fs(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"open", l_open},         {"read", l_read},       {"write", l_write},
        {"seek", l_seek},         {"close", l_close},     {"listdir", l_listdir},
        {"path_op", l_path_op},   {"write_chunk", l_write_chunk}, {NULL, NULL},
    };
    luaL_newlib(L, fns);
    return 1;
}
