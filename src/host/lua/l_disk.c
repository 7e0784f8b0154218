/* Disks: the primitives under _provium_c.disk, over the disk server
 * (disk/disk.h) and a VM's attached disks (disk/vdisk.h). The Disk type,
 * its argument checks and the guest's /dev/disk/by-id links are
 * lua/disk.lua's. */
#include <stdio.h>

#include "l_provium.h"
#include "disk/disk.h"
#include "disk/vdisk.h"
#include "vm.h"

#define PV_DISK_MT "provium.disk_image"

/* The most read_sectors returns at once. */
#define L_DISK_READ_MAX (256u << 20)

struct l_disk {
    int handle; /* -1 once closed */
};

static struct l_disk *checkdisk(lua_State *L, int i, const char *what)
{
    struct l_disk *d = luaL_checkudata(L, i, PV_DISK_MT);
    if (d->handle < 0)
        luaL_error(L, "%s: disk is detached", what);
    return d;
}

static int disk_gc(lua_State *L)
{
    struct l_disk *d = luaL_checkudata(L, 1, PV_DISK_MT);
    if (d->handle >= 0)
        disk_close(d->handle);
    d->handle = -1;
    return 0;
}

/* disk.open(image|nil, size, readonly, what, plain_format|nil) -> the
 * server's disk: the image (created sparse at size bytes when absent), or a
 * scratch one in the run directory; with plain_format ("raw", "qcow2"), a
 * plain disk that QEMU opens itself. size: bytes or a string like "64M". */
static int l_open(lua_State *L)
{
    const char *image = luaL_optstring(L, 1, NULL);
    bool readonly = lua_toboolean(L, 3);
    const char *what = luaL_checkstring(L, 4);
    const char *plain = luaL_optstring(L, 5, NULL);
    uint64_t size;
    if (lua_isinteger(L, 2) && lua_tointeger(L, 2) > 0)
        size = (uint64_t)lua_tointeger(L, 2);
    else if (lua_type(L, 2) != LUA_TSTRING || parse_size(lua_tostring(L, 2), &size) < 0 || !size)
        return luaL_error(L, "%s: size must be bytes or a size like \"64M\", got %s", what,
                          luaL_tolstring(L, 2, NULL));
    if (size % DISK_SECTOR)
        return luaL_error(L, "%s: size %I is not a multiple of %d bytes", what, (lua_Integer)size,
                          (int)DISK_SECTOR);
    struct l_disk *d = l_newudata(L, sizeof(*d), PV_DISK_MT, disk_gc);
    d->handle = -1;
    struct pv_err err = {0};
    const char *dir = vm_globals.rundir ? vm_globals.rundir : "/tmp";
    int h = plain   ? disk_open_plain(image, dir, plain, size, readonly, &err)
            : image ? disk_open(image, size, readonly, &err)
                    : disk_open_scratch(dir, size, &err);
    if (h < 0)
        return l_raise_err(L, what, &err);
    d->handle = h;
    return 1;
}

/* disk.open_layered(base, readonly, what, format) -> the frozen file base
 * of a snapshot under a new overlay in the run directory: the server's
 * disk (format "raw"), or a plain disk of a qcow2 overlay (format "qcow2") */
static int l_open_layered(lua_State *L)
{
    const char *base = luaL_checkstring(L, 1);
    bool readonly = lua_toboolean(L, 2);
    const char *what = luaL_checkstring(L, 3);
    bool qcow2 = !strcmp(luaL_optstring(L, 4, "raw"), "qcow2");
    struct l_disk *d = l_newudata(L, sizeof(*d), PV_DISK_MT, disk_gc);
    d->handle = -1;
    struct pv_err err = {0};
    const char *dir = vm_globals.rundir ? vm_globals.rundir : "/tmp";
    int h = qcow2 ? disk_open_overlay(base, dir, readonly, &err)
                  : disk_open_layered(base, dir, readonly, &err);
    if (h < 0)
        return l_raise_err(L, what, &err);
    d->handle = h;
    return 1;
}

/* disk.snap_disks(dir, what) -> {{id=, file=, readonly=, mediated=, size=}, ...}:
 * the disks the snapshot dir froze, in the guest's order, its files checked */
static int l_snap_disks(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    const char *what = luaL_checkstring(L, 2);
    struct pv_err err = {0};
    json_t *h = NULL;
    struct vm_snap_disk sd[VM_MAX_DISKS];
    size_t n = 0;
    if (vm_snapshot_check(dir, false, &h, &err) < 0)
        return l_raise_err(L, what, &err);
    vm_snapshot_disks(h, sd, &n); /* checked above */
    json_decref(h);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 6);
        lua_pushstring(L, sd[i].id);
        lua_setfield(L, -2, "id");
        lua_pushfstring(L, "%s/%s", dir, sd[i].file);
        lua_setfield(L, -2, "file");
        lua_pushboolean(L, sd[i].readonly);
        lua_setfield(L, -2, "readonly");
        lua_pushboolean(L, sd[i].mediated);
        lua_setfield(L, -2, "mediated");
        lua_pushinteger(L, (lua_Integer)sd[i].size);
        lua_setfield(L, -2, "size");
        lua_pushstring(L, sd[i].qcow2 ? "qcow2" : "raw");
        lua_setfield(L, -2, "format");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* disk.close(d): idempotent */
static int l_close(lua_State *L)
{
    return disk_gc(L);
}

/* disk.attach(vm, d, id, readonly): d becomes vm's disk `id` (plugged in at
 * once if vm runs) */
static int l_attach(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    struct l_disk *d = checkdisk(L, 2, "vm:attach_disk");
    const char *id = luaL_checkstring(L, 3);
    struct pv_err err = {0};
    if (vdisk_attach(vm, d->handle, id, lua_toboolean(L, 4), &err) < 0)
        return l_raise_err(L, "vm:attach_disk", &err);
    return 0;
}

/* disk.detach(vm, id): out of vm (unplugged at once if it runs) */
static int l_detach(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    struct pv_err err = {0};
    if (vdisk_detach(vm, luaL_checkstring(L, 2), &err) < 0)
        return l_raise_err(L, "disk:detach", &err);
    return 0;
}

/* disk.has(vm, id) -> whether vm has the disk `id` */
static int l_has(lua_State *L)
{
    lua_pushboolean(L, vdisk_find(l_tovm(L, 1), luaL_checkstring(L, 2)) >= 0);
    return 1;
}

/* disk.size(d) -> the image's size in bytes */
static int l_size(lua_State *L)
{
    struct l_disk *d = checkdisk(L, 1, "disk:size");
    uint64_t size;
    int r = disk_size(d->handle, &size);
    if (r < 0)
        return luaL_error(L, "disk:size: %s", strerror(-r));
    lua_pushinteger(L, (lua_Integer)size);
    return 1;
}

/* An offset or a count in sectors at i: a non-negative integer whose bytes
 * fit in 63 bits. */
static uint64_t checksectors(lua_State *L, int i, const char *what, const char *name)
{
    if (!lua_isinteger(L, i) || lua_tointeger(L, i) < 0 ||
        lua_tointeger(L, i) > INT64_MAX / DISK_SECTOR)
        luaL_error(L, "%s: %s must be a non-negative integer (sectors), got %s", what, name,
                   luaL_tolstring(L, i, NULL));
    return (uint64_t)lua_tointeger(L, i);
}

/* disk.read_sectors(d, offset, n) -> n sectors from sector offset, read from
 * the image (the host's own access, faults honoured) */
static int l_read_sectors(lua_State *L)
{
    const char *what = "disk:read_sectors";
    struct l_disk *d = checkdisk(L, 1, what);
    uint64_t off = checksectors(L, 2, what, "offset");
    uint64_t n = checksectors(L, 3, what, "count");
    if (n > L_DISK_READ_MAX / DISK_SECTOR)
        return luaL_error(L, "%s: at most %d sectors at once, asked for %I", what,
                          (int)(L_DISK_READ_MAX / DISK_SECTOR), (lua_Integer)n);
    struct buf *b = l_newbuf(L);
    buf_reserve(b, n * DISK_SECTOR);
    struct pv_err err = {0};
    if (disk_read(d->handle, off * DISK_SECTOR, b->data, n * DISK_SECTOR, &err) < 0)
        return l_raise_err(L, what, &err);
    b->len = n * DISK_SECTOR;
    lua_pushlstring(L, b->data, b->len);
    return 1;
}

/* disk.write_sectors(d, offset, data): data written verbatim at sector
 * offset (any length) */
static int l_write_sectors(lua_State *L)
{
    const char *what = "disk:write_sectors";
    struct l_disk *d = checkdisk(L, 1, what);
    uint64_t off = checksectors(L, 2, what, "offset");
    if (lua_type(L, 3) != LUA_TSTRING)
        return luaL_error(L, "%s: data must be a string, got %s", what, luaL_typename(L, 3));
    size_t len;
    const char *data = lua_tolstring(L, 3, &len);
    struct pv_err err = {0};
    if (disk_write(d->handle, off * DISK_SECTOR, data, len, &err) < 0)
        return l_raise_err(L, what, &err);
    return 0;
}

static int mode_of(lua_State *L, int i)
{
    const char *name = luaL_checkstring(L, i);
    for (int m = 0; m < DISK_NMODES; m++)
        if (!strcmp(name, disk_mode_names[m]))
            return m;
    return luaL_error(L, "disk:fault_inject: unknown mode `%s`", name);
}

/* disk.fault(d, mode, first, count, ms): set the mode's fault (lua/disk.lua
 * checked the values) */
static int l_fault(lua_State *L)
{
    struct l_disk *d = checkdisk(L, 1, "disk:fault_inject");
    int m = mode_of(L, 2);
    struct disk_fault f = {
        .first = (uint64_t)luaL_checkinteger(L, 3),
        .count = (uint64_t)luaL_checkinteger(L, 4),
        .ms = (uint32_t)luaL_checkinteger(L, 5),
    };
    int r = disk_fault_set(d->handle, (enum disk_mode)m, &f);
    if (r == -EOPNOTSUPP)
        return luaL_error(L, "disk:fault_inject: the disk is plain (QEMU opens it itself): faults "
                             "need a disk Provium serves (docs/disks.md#plain-disks)");
    if (r < 0)
        return luaL_error(L, "disk:fault_inject: %s", strerror(-r));
    return 0;
}

/* disk.clear(d) */
static int l_clear(lua_State *L)
{
    struct l_disk *d = checkdisk(L, 1, "disk:clear_faults");
    disk_faults_clear(d->handle);
    return 0;
}

/* disk.faults(d) -> {"eio_read", ...}: the active modes, in the order of disk.modes */
static int l_faults(lua_State *L)
{
    struct l_disk *d = checkdisk(L, 1, "disk:active_faults");
    unsigned modes = 0;
    disk_faults(d->handle, &modes);
    lua_newtable(L);
    lua_Integer n = 0;
    for (int m = 0; m < DISK_NMODES; m++) {
        if (modes & (1u << m)) {
            lua_pushstring(L, disk_mode_names[m]);
            lua_rawseti(L, -2, ++n);
        }
    }
    return 1;
}

/* disk.mediate(d, on): hold the guest's writes until it flushes (on), or
 * commit them and stop (off) */
static int l_mediate(lua_State *L)
{
    struct l_disk *d = checkdisk(L, 1, "vm:attach_disk");
    int r = disk_mediate(d->handle, lua_toboolean(L, 2) ? DISK_HOLD_MAX_DEFAULT : 0);
    if (r < 0)
        return luaL_error(L, "vm:attach_disk: mediated: %s", strerror(-r));
    return 0;
}

/* disk.pending(d) -> {count =, bytes =, overflows =}: the held writes */
static int l_pending(lua_State *L)
{
    struct l_disk *d = checkdisk(L, 1, "disk:pending_writes");
    struct disk_pending p;
    int r = disk_pending(d->handle, &p);
    if (r < 0)
        return luaL_error(L, "disk:pending_writes: %s", strerror(-r));
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)p.count);
    lua_setfield(L, -2, "count");
    lua_pushinteger(L, (lua_Integer)p.bytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)p.overflows);
    lua_setfield(L, -2, "overflows");
    return 1;
}

/* disk.power_cut(d, seed|nil) -> {applied =, dropped =}: the held writes
 * dropped, or a subset chosen by seed applied (lua/disk.lua kills the VM) */
static int l_power_cut(lua_State *L)
{
    struct l_disk *d = checkdisk(L, 1, "disk:power_cut");
    bool reorder = !lua_isnoneornil(L, 2);
    uint64_t seed = reorder ? (uint64_t)luaL_checkinteger(L, 2) : 0;
    struct disk_cut cut;
    int r = disk_power_cut(d->handle, reorder, seed, &cut);
    if (r < 0)
        return luaL_error(L, "disk:power_cut: applying the kept writes: %s", strerror(-r));
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)cut.applied);
    lua_setfield(L, -2, "applied");
    lua_pushinteger(L, (lua_Integer)cut.dropped);
    lua_setfield(L, -2, "dropped");
    return 1;
}

int luaopen_provium_disk(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"open", l_open},
        {"open_layered", l_open_layered},
        {"snap_disks", l_snap_disks},
        {"close", l_close},
        {"attach", l_attach},
        {"detach", l_detach},
        {"has", l_has},
        {"size", l_size},
        {"read_sectors", l_read_sectors},
        {"write_sectors", l_write_sectors},
        {"fault", l_fault},
        {"clear", l_clear},
        {"faults", l_faults},
        {"mediate", l_mediate},
        {"pending", l_pending},
        {"power_cut", l_power_cut},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    lua_newtable(L);
    for (int m = 0; m < DISK_NMODES; m++) {
        lua_pushstring(L, disk_mode_names[m]);
        lua_rawseti(L, -2, m + 1);
    }
    lua_setfield(L, -2, "modes");
    static const struct l_const c[] = {
        {"SECTOR", DISK_SECTOR},           {"MAX", VM_MAX_DISKS},
        {"ID_MAX", VM_DISK_ID_MAX},        {"SLOW_MS_DEFAULT", DISK_SLOW_MS_DEFAULT},
        {"SLOW_MS_MAX", DISK_SLOW_MS_MAX}, {"HOLD_MAX", DISK_HOLD_MAX_DEFAULT},
    };
    l_set_consts(L, "const", c, ARRAY_SIZE(c));
    return 1;
}
