/* Guest file handles and directory operations: the C primitives under
 * _provium_c.fs (the File type and the VM methods are in lua/file.lua).
 * Each is one guest_<op> of src/host/guest.c. */
#include "l_provium.h"

/* fs.open(vm, path, bits, perm) -> handle */
static int l_open(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    const char *path = luaL_checkstring(L, 2);
    lua_Integer bits = luaL_checkinteger(L, 3), perm = luaL_checkinteger(L, 4);
    uint64_t h;
    struct pv_err err = {0};
    if (guest_open(&t, path, (uint32_t)bits, (uint32_t)perm & 07777, &h, &err) < 0)
        return l_raise_guest(L, &t, "open_file", path, &err);
    lua_pushinteger(L, (lua_Integer)h);
    return 1;
}

/* fs.read(vm, handle, max) -> string ("" at end of file) */
static int l_read(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2), max = luaL_checkinteger(L, 3);
    if (max < 0)
        return luaL_argerror(L, 3, "must not be negative");
    struct buf *out = l_newbuf(L);
    struct pv_err err = {0};
    if (guest_fread(&t, (uint64_t)h, (uint32_t)MIN(max, (lua_Integer)GUEST_FREAD_MAX), out, &err) <
        0)
        return l_raise_guest(L, &t, "file:read", "read", &err);
    return l_push_buf(L, out);
}

/* fs.write(vm, handle, data) -> bytes written */
static int l_write(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    uint32_t n;
    struct pv_err err = {0};
    if (guest_fwrite(&t, (uint64_t)h, data, len, &n, &err) < 0)
        return l_raise_guest(L, &t, "file:write", "write", &err);
    lua_pushinteger(L, n);
    return 1;
}

/* fs.seek(vm, handle, offset, whence) -> position (whence from fs.whence) */
static int l_seek(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2), off = luaL_checkinteger(L, 3);
    lua_Integer whence = luaL_checkinteger(L, 4);
    uint64_t pos;
    struct pv_err err = {0};
    if (guest_seek(&t, (uint64_t)h, off, (uint32_t)whence, &pos, &err) < 0)
        return l_raise_guest(L, &t, "file:seek", "seek", &err);
    lua_pushinteger(L, (lua_Integer)pos);
    return 1;
}

/* fs.close(vm, handle) */
static int l_close(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    lua_Integer h = luaL_checkinteger(L, 2);
    struct pv_err err = {0};
    if (guest_close(&t, (uint64_t)h, &err) < 0)
        return l_raise_guest(L, &t, "file:close", "close", &err);
    return 0;
}

const char *l_ftype_name(int t)
{
    static const char *names[] = {"other",  "file",         "directory",   "symlink", "fifo",
                                  "socket", "block_device", "char_device", "other"};
    return t >= 0 && t <= PV_FT_OTHER ? names[t] : "other";
}

static void push_dirent(void *ctx, const struct guest_dirent *e)
{
    lua_State *L = ctx;
    lua_createtable(L, 0, 2);
    lua_pushstring(L, e->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, l_ftype_name(e->type));
    lua_setfield(L, -2, "entry_type");
    lua_seti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
}

bool l_push_listdir(lua_State *L, const struct buf *reply, struct pv_err *err)
{
    lua_newtable(L);
    if (guest_decode_listdir(reply, push_dirent, L, err) == 0)
        return true;
    lua_pop(L, 1);
    return false;
}

/* fs.listdir(vm, path) -> {{name=, entry_type=}, ...} sorted by name */
static int l_listdir(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    const char *path = luaL_checkstring(L, 2);
    struct buf *reply = l_newbuf(L);
    struct pv_err err = {0};
    if (guest_listdir(&t, path, reply, &err) < 0)
        return l_raise_guest(L, &t, "listdir", path, &err);
    if (!l_push_listdir(L, reply, &err))
        return l_raise_guest(L, &t, "listdir", path, &err);
    return 1;
}

/* fs.mkdir(vm, path, perm, parents) */
static int l_mkdir(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    const char *path = luaL_checkstring(L, 2);
    lua_Integer perm = luaL_checkinteger(L, 3);
    struct pv_err err = {0};
    if (guest_mkdir(&t, path, (uint32_t)perm & 07777, lua_toboolean(L, 4), &err) < 0)
        return l_raise_guest(L, &t, "mkdir", path, &err);
    return 0;
}

/* fs.unlink(vm, path) */
static int l_unlink(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    const char *path = luaL_checkstring(L, 2);
    struct pv_err err = {0};
    if (guest_unlink(&t, path, &err) < 0)
        return l_raise_guest(L, &t, "unlink", path, &err);
    return 0;
}

/* fs.rename(vm, from, to) */
static int l_rename(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    const char *from = luaL_checkstring(L, 2), *to = luaL_checkstring(L, 3);
    struct pv_err err = {0};
    if (guest_rename(&t, from, to, &err) < 0)
        return l_raise_guest(L, &t, "rename", from, &err);
    return 0;
}

/* fs.write_chunk(vm, path, data, append, mode|nil): push_file in pieces */
static int l_write_chunk(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    const char *path = luaL_checkstring(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    bool append = lua_toboolean(L, 4);
    lua_Integer mode = luaL_optinteger(L, 5, -1);
    struct pv_err err = {0};
    if (guest_write_file(&t, path, data, len,
                         mode < 0 ? GUEST_DEFAULT_MODE : (uint32_t)mode & 07777, append, &err) < 0)
        return l_raise_guest(L, &t, "push_file", path, &err);
    return 0;
}

int luaopen_provium_fs(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"open", l_open},     {"read", l_read},
        {"write", l_write},   {"seek", l_seek},
        {"close", l_close},   {"listdir", l_listdir},
        {"mkdir", l_mkdir},   {"unlink", l_unlink},
        {"rename", l_rename}, {"write_chunk", l_write_chunk},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    /* The wire's constants, so that lua/file.lua never retypes them. */
    static const struct l_const open_bits[] = {
        {"read", PV_OPEN_READ},     {"write", PV_OPEN_WRITE},
        {"create", PV_OPEN_CREATE}, {"truncate", PV_OPEN_TRUNCATE},
        {"append", PV_OPEN_APPEND}, {"exclusive", PV_OPEN_EXCLUSIVE},
    };
    l_set_consts(L, "open_bits", open_bits, ARRAY_SIZE(open_bits));
    static const struct l_const whence[] = {
        {"set", PV_SEEK_SET}, {"cur", PV_SEEK_CUR}, {"end", PV_SEEK_END}};
    l_set_consts(L, "whence", whence, ARRAY_SIZE(whence));
    lua_pushinteger(L, GUEST_READ_MAX_DEFAULT);
    lua_setfield(L, -2, "read_max_default");
    lua_pushinteger(L, GUEST_FREAD_MAX);
    lua_setfield(L, -2, "read_piece_max");
    return 1;
}
