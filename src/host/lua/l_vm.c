/* The VM userdata. Lifecycle and guest operations are C; scoping, lookup
 * and the RunResult methods are in lua/lab.lua and lua/result.lua. */
#include <arpa/inet.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <sys/random.h>

#include "boot.h"
#include "bootcache.h"
#include "fixture.h"
#include "hash.h"
#include "kmod.h"
#include "l_provium.h"
#include "net/nic.h"
#include "vm.h"

struct l_vm {
    struct vm *vm;
    int opts_ref; /* creation-time boot opts table, or LUA_NOREF */
};

/* A VM userdata, for the operations only a VM has. */
static struct l_vm *l_checkvm(lua_State *L, int i)
{
    struct l_vm *u = luaL_checkudata(L, i, PV_VM_MT);
    if (!u->vm)
        luaL_error(L, "vm is closed");
    return u;
}

struct target l_checktarget(lua_State *L, int i)
{
    struct target t;
    if (luaL_testudata(L, i, PV_WORKER_MT))
        l_worker_target(L, i, true, &t);
    else
        t = (struct target){l_checkvm(L, i)->vm, 0};
    return t;
}

bool l_testtarget(lua_State *L, int i, struct target *ret)
{
    if (luaL_testudata(L, i, PV_WORKER_MT))
        return l_worker_target(L, i, false, ret);
    struct l_vm *u = luaL_testudata(L, i, PV_VM_MT);
    if (!u || !u->vm)
        return false;
    *ret = (struct target){u->vm, 0};
    return true;
}

struct vm *l_tovm(lua_State *L, int i)
{
    return l_checktarget(L, i).vm;
}

bool l_usertarget(lua_State *L, int i, struct target *ret)
{
    lua_getiuservalue(L, i, 1);
    bool ok = l_testtarget(L, -1, ret);
    lua_pop(L, 1);
    return ok;
}

int l_raise(lua_State *L, const struct pv_err *err)
{
    return luaL_error(L, "%s%s", err->msg, pv_err_story(err));
}

int l_raise_err(lua_State *L, const char *what, const struct pv_err *err)
{
    return luaL_error(L, "%s: %s%s", what, err->msg, pv_err_story(err));
}

int l_raise_guest(lua_State *L, const struct target *t, const char *op, const char *what,
                  const struct pv_err *err)
{
    if (!err->guest)
        return l_raise(L, err);
    char who[128];
    guest_who(t, who, sizeof(who));
    const char *name = strerrorname_np(err->code);
    /* no subject (or a worker gone): the agent's message says what failed */
    if (!what || (err->code == ECHILD && t->worker))
        return luaL_error(L, "%s: %s: %s: %s", who, op, name ? name : "E?", err->msg);
    return luaL_error(L, "%s: %s: %s: %s (%s)", who, op, name ? name : "E?", what,
                      strerror(err->code));
}

static int buf_gc(lua_State *L)
{
    buf_release(lua_touserdata(L, 1));
    return 0;
}

void *l_newudata(lua_State *L, size_t size, const char *mt, lua_CFunction gc)
{
    void *p = lua_newuserdatauv(L, size, 0);
    memset(p, 0, size);
    if (luaL_newmetatable(L, mt)) {
        lua_pushcfunction(L, gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return p;
}

struct buf *l_newbuf(lua_State *L)
{
    return l_newudata(L, sizeof(struct buf), "provium.buf", buf_gc);
}

size_t l_checkcount(lua_State *L, int i, size_t max, const char *what)
{
    luaL_checktype(L, i, LUA_TTABLE);
    size_t n = lua_rawlen(L, i);
    if (n > max)
        luaL_error(L, "%s: at most %d items, got %I", what, (int)max, (lua_Integer)n);
    return n;
}

void l_set_consts(lua_State *L, const char *name, const struct l_const *c, size_t n)
{
    lua_createtable(L, 0, (int)n);
    for (size_t i = 0; i < n; i++) {
        lua_pushinteger(L, c[i].value);
        lua_setfield(L, -2, c[i].name);
    }
    lua_setfield(L, -2, name);
}

/* _provium_c.vm_new(name, profile, opts?) -> VM */
static int l_vm_new(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *profile = luaL_optstring(L, 2, DEFAULT_PROFILE);
    if (!lua_isnoneornil(L, 3))
        luaL_checktype(L, 3, LUA_TTABLE);
    struct l_vm *u = lua_newuserdatauv(L, sizeof(*u), 0);
    u->vm = NULL;
    u->opts_ref = LUA_NOREF;
    luaL_setmetatable(L, PV_VM_MT);
    if (lua_istable(L, 3)) {
        lua_pushvalue(L, 3);
        u->opts_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    u->vm = vm_new(name, profile);
    return 1;
}

/* Whether this boot may come from the boot cache (docs/boot-cache.md). */
static bool from_cache(const struct boot_opts *o, const struct vm_boot *b)
{
    size_t files = 0;
    for (size_t i = 0; i < o->nfiles; i++)
        files += o->files[i].len + strlen(o->files[i].path) + 64;
    return l_ctx.config && l_ctx.config->boot_cache && !o->cold && bootcache_eligible(b) &&
           files < PV_MAX_PAYLOAD / 2;
}

/* What a cold boot has and a resumed one has not, made so by the agent:
 * the clock (now, or initial_time), a reseeded RNG (from rng_seed, else
 * the host's entropy) and the boot's files. resumed: the boot went by the
 * boot cache (else only initial_time is left to do). */
static int freshen(struct vm *vm, const struct boot_opts *o, bool resumed, struct pv_err *err)
{
    if (!resumed && !o->has_initial_time)
        return 0;
    struct guest_freshen f = {
        .realtime_ns = o->has_initial_time ? (int64_t)llround(o->initial_time * 1e9) : wall_ns()};
    unsigned char seed[32];
    if (resumed && o->has_rng_seed) {
        struct sha256 *h = sha256_new();
        sha256_update_str(h, "provium rng_seed");
        sha256_update(h, &o->rng_seed, sizeof(o->rng_seed));
        sha256_final(h, seed);
        f.seed_len = sizeof(seed);
    } else if (resumed && getrandom(seed, sizeof(seed), 0) == sizeof(seed)) {
        f.seed_len = sizeof(seed);
    }
    f.seed = seed;
    _cleanup_free_ struct guest_file *files = xcalloc(o->nfiles + 1, sizeof(*files));
    _cleanup_free_ char **paths = xcalloc(o->nfiles + 1, sizeof(*paths));
    for (size_t i = 0; resumed && i < o->nfiles; i++) {
        const struct boot_file *bf = &o->files[i];
        paths[i] = xasprintf("%s%s", bf->path[0] == '/' ? "" : "/", bf->path);
        files[i] = (struct guest_file){paths[i], bf->mode ? bf->mode : 0644, bf->content, bf->len};
        f.nfiles = i + 1;
    }
    f.files = files;
    int r = guest_freshen(&(struct target){vm, 0}, &f, err);
    for (size_t i = 0; i < f.nfiles; i++)
        free(paths[i]);
    return r;
}

/* vm:boot(opts?) -> vm */
static int l_vm_boot(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    if (!lua_isnoneornil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    struct boot_opts *o = l_boot_opts(L, u->opts_ref, 2);
    if (u->vm->state == VM_BOOTED || u->vm->state == VM_PAUSED)
        return luaL_error(L, "vm `%s`: boot() on a VM that is already %s", u->vm->name,
                          vm_state_name(u->vm->state));
    struct pv_err err = {0};
    struct vm_boot b, plan;
    if (boot_plan(l_ctx.config, u->vm->profile, o, &b, &err) < 0)
        return luaL_error(L, "vm `%s`: %s", u->vm->name, err.msg);
    nic_sort(u->vm);
    memcpy(b.nics, u->vm->nics, sizeof(b.nics));
    b.nnics = u->vm->nnics;
    memcpy(b.attached, u->vm->disks, sizeof(b.attached));
    b.nattached = u->vm->ndisks;
    bool cached = from_cache(o, &b);
    /* QEMU gets the files in its initrd either way: a reset boots with them */
    vm_boot_copy(&plan, &b);
    int r = boot_add_files(&plan, o, &err);
    for (int attempt = 1; r == 0; attempt++) {
        r = cached ? bootcache_boot(u->vm, &b, &plan, l_ctx.config->cache_dir, &err)
                   : vm_boot(u->vm, &plan, &err);
        if (r == 0 || !vm_boot_failed(u->vm, attempt, &err))
            break;
        /* the machine's failure, not the guest's: once more */
        fprintf(stderr,
                "provium: %.*s; booting it again (docs/debugging.md#infrastructure-errors)\n",
                (int)strcspn(err.msg, "\n"), err.msg);
        r = 0;
    }
    vm_boot_release(&b);
    vm_boot_release(&plan);
    if (r < 0)
        return l_raise(L, &err);
    fixture_note_boot(u->vm->profile);
    r = freshen(u->vm, o, cached, &err);
    if (r < 0 && err.guest && cached)
        return luaL_error(L,
                          "vm `%s`: boot: %s: %s, after the resume from the boot cache (a file "
                          "the boot itself reads needs boot{cold = true}: docs/boot-cache.md)",
                          u->vm->name, strerrorname_np(err.code) ?: "E?", err.msg);
    if (r < 0)
        return l_raise_guest(L, &(struct target){u->vm, 0}, "boot", "setting initial_time", &err);
    lua_settop(L, 1);
    return 1;
}

/* vm:boot_cached() -> whether the last boot resumed a cached one */
static int l_vm_boot_cached(lua_State *L)
{
    lua_pushboolean(L, l_checkvm(L, 1)->vm->from_boot_cache);
    return 1;
}

#define SIMPLE(fname, call)                                                                        \
    static int fname(lua_State *L)                                                                 \
    {                                                                                              \
        struct l_vm *u = l_checkvm(L, 1);                                                          \
        struct pv_err err = {0};                                                                   \
        if (call(u->vm, &err) < 0)                                                                 \
            return l_raise(L, &err);                                                               \
        return 0;                                                                                  \
    }
/* vm:shutdown() */
SIMPLE(l_vm_shutdown, vm_shutdown)
/* vm:reset() */
SIMPLE(l_vm_reset, vm_reset)
/* vm:pause() */
SIMPLE(l_vm_pause, vm_pause)
/* vm:resume() */
SIMPLE(l_vm_resume, vm_resume)
/* vm:power_button() */
SIMPLE(l_vm_power_button, vm_power_button)

/* vm:ping() */
static int l_vm_ping(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    struct pv_err err = {0};
    if (guest_ping(&t, &err) < 0)
        return l_raise_guest(L, &t, "ping", NULL, &err);
    return 0;
}

/* vm:kill() */
static int l_vm_kill(lua_State *L)
{
    vm_kill(l_checkvm(L, 1)->vm);
    return 0;
}

/* vm:close(): idempotent; shuts down unless already shut down */
static int l_vm_close(lua_State *L)
{
    struct l_vm *u = luaL_checkudata(L, 1, PV_VM_MT);
    if (u->vm && u->vm->state != VM_SHUTDOWN && u->vm->state != VM_CREATED)
        vm_shutdown(u->vm, NULL);
    return 0;
}

static int l_vm_gc(lua_State *L)
{
    struct l_vm *u = luaL_checkudata(L, 1, PV_VM_MT);
    vm_free(u->vm);
    u->vm = NULL;
    if (u->opts_ref != LUA_NOREF)
        luaL_unref(L, LUA_REGISTRYINDEX, u->opts_ref);
    u->opts_ref = LUA_NOREF;
    return 0;
}

/* vm:state() -> "created"|"booted"|"paused"|"shutdown"|"dead" */
static int l_vm_state(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    /* notice a QEMU that died behind our back */
    if (u->vm->state == VM_BOOTED || u->vm->state == VM_PAUSED) {
        struct pollfd p = {u->vm->pidfd, POLLIN, 0};
        if (u->vm->pidfd >= 0 && poll(&p, 1, 0) == 1) {
            vm_kill(u->vm);
            u->vm->state = VM_DEAD;
        }
    }
    lua_pushstring(L, vm_state_name(u->vm->state));
    return 1;
}

/* vm:name() */
static int l_vm_name(lua_State *L)
{
    lua_pushstring(L, l_checkvm(L, 1)->vm->name);
    return 1;
}

/* vm:profile() */
static int l_vm_profile(lua_State *L)
{
    lua_pushstring(L, l_checkvm(L, 1)->vm->profile);
    return 1;
}

/* vm:cid() -> integer or nil */
static int l_vm_cid(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    if (u->vm->state == VM_BOOTED && vm_globals.transport == TRANSPORT_VSOCK)
        lua_pushinteger(L, u->vm->cid);
    else
        lua_pushnil(L);
    return 1;
}

/* vm:gdb_port() -> QEMU's gdbstub's port while QEMU runs under --gdb, or nil */
static int l_vm_gdb_port(lua_State *L)
{
    int port = l_tovm(L, 1)->gdb_port;
    if (port)
        lua_pushinteger(L, port);
    return port ? 1 : 0;
}

/* vm:kernel_release() -> string (from the handshake) */
static int l_vm_kernel_release(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    lua_pushstring(L, u->vm->chan.kernel_release ? u->vm->chan.kernel_release : "");
    return 1;
}

/* vm:console_socket_path() -> the primary console's socket (what
 * console:read() connects to), or nil before boot */
static int l_vm_console_socket_path(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    if (!vm->dir || vm->state == VM_CREATED)
        return 0;
    char path[PATH_MAX];
    vm_console_socket(vm, path, sizeof(path));
    lua_pushstring(L, path);
    return 1;
}

/* _provium_c.snapshot(vm, path?) -> path: the default is a new snapshot in the
 * run directory (gone at the end of the run) */
static int l_vm_snapshot(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    static unsigned seq;
    const char *path =
        lua_isnoneornil(L, 2)
            ? lua_pushfstring(L, "%s/%s-%d-%d.snap",
                              vm_globals.snapshot_dir ? vm_globals.snapshot_dir : vm_globals.rundir,
                              u->vm->name, (int)getpid(), (int)seq++)
            : luaL_checkstring(L, 2);
    struct pv_err err = {0};
    if (vm_snapshot(u->vm, path, &err) < 0)
        return l_raise(L, &err);
    lua_pushstring(L, path);
    return 1;
}

/* _provium_c.restore(vm, path) */
static int l_vm_restore(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    struct pv_err err = {0};
    if (vm_restore(u->vm, luaL_checkstring(L, 2), &err) < 0)
        return l_raise(L, &err);
    return 0;
}

/* vm:boot_seconds() -> seconds from QEMU start to the agent's answer */
static int l_vm_boot_seconds(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    lua_pushnumber(L, (double)(u->vm->ready_ns - u->vm->boot_ns) / 1e9);
    return 1;
}

int l_push_buf(lua_State *L, struct buf *b)
{
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    buf_release(b);
    return 1;
}

/* Output beyond the cap was counted, not kept: say so at the end. */
static void push_output(lua_State *L, const struct buf *b, uint64_t total)
{
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    if (total > b->len) {
        lua_pushfstring(L, "\n[provium: output truncated at %d MiB of %I bytes]",
                        (int)(GUEST_OUTPUT_CAP >> 20), (lua_Integer)total);
        lua_concat(L, 2);
    }
}

/* The number of keys of the table at i (env), bounded. */
static size_t count_keys(lua_State *L, int i, size_t max, const char *what)
{
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, i)) {
        lua_pop(L, 1);
        if (++n > max)
            luaL_error(L, "%s: more than %d entries", what, (int)max);
    }
    return n;
}

#define RUN_MAX_ARGS 65536

void l_check_run(lua_State *L, struct guest_run_req *out)
{
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    /* Keep every string alive in a table at index 4 while C points at it. */
    lua_newtable(L);
    size_t argc = l_checkcount(L, 2, RUN_MAX_ARGS, "vm:run: the command");
    if (argc < 1)
        luaL_error(L, "vm:run: empty command");
    const char **argv = lua_newuserdatauv(L, sizeof(char *) * (argc + 1), 0);
    lua_setfield(L, 4, "argv");
    for (size_t i = 1; i <= argc; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "vm:run: argument %d must be a string, got %s", (int)i,
                       luaL_typename(L, -1));
        argv[i - 1] = lua_tostring(L, -1);
        lua_rawseti(L, 4, (lua_Integer)i);
    }
    argv[argc] = NULL;

    struct guest_run_req req = {.argv = argv, .cwd = ""};
    lua_getfield(L, 3, "env");
    if (!lua_isnil(L, -1)) {
        luaL_checktype(L, -1, LUA_TTABLE);
        int envt = lua_gettop(L);
        size_t n = count_keys(L, envt, RUN_MAX_ARGS, "vm:run: env");
        const char **env = lua_newuserdatauv(L, sizeof(char *) * (n + 1), 0);
        lua_setfield(L, 4, "env");
        size_t k = 0;
        lua_pushnil(L);
        while (lua_next(L, envt) && k < n) {
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "vm:run: env keys must be strings");
            const char *key = lua_tostring(L, -2);
            const char *val = luaL_tolstring(L, -1, NULL);
            env[k++] = lua_pushfstring(L, "%s=%s", key, val);
            lua_rawseti(L, 4, (lua_Integer)(argc + k));
            lua_pop(L, 2);
        }
        env[k] = NULL;
        req.env = env;
    }
    lua_pop(L, 1);
    lua_getfield(L, 3, "env_clear");
    req.env_clear = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 3, "cwd");
    if (!lua_isnil(L, -1))
        req.cwd = luaL_checkstring(L, -1);
    lua_setfield(L, 4, "cwd");
    lua_getfield(L, 3, "stdin");
    if (!lua_isnil(L, -1))
        req.stdin_data = luaL_checklstring(L, -1, &req.stdin_len);
    lua_setfield(L, 4, "stdin");
    lua_getfield(L, 3, "timeout");
    if (!lua_isnil(L, -1)) {
        double t = l_duration(L, -1, "vm:run: timeout");
        req.timeout_ms = t > 0 ? (uint32_t)MIN(t * 1000.0 + 0.5, 4e9) : 0;
        if (t > 0 && req.timeout_ms == 0)
            req.timeout_ms = 1;
    }
    lua_pop(L, 1);
    /* checked by the prelude (P.pty_size): {rows, cols} */
    lua_getfield(L, 3, "pty");
    if (lua_istable(L, -1)) {
        req.pty = true;
        lua_getfield(L, -1, "rows");
        lua_getfield(L, -2, "cols");
        req.rows = (uint16_t)MIN(MAX(lua_tointeger(L, -2), 1), 65535);
        req.cols = (uint16_t)MIN(MAX(lua_tointeger(L, -1), 1), 65535);
        lua_pop(L, 2);
    }
    lua_pop(L, 1);
    *out = req;
}

int l_push_run_result(lua_State *L, const struct target *t, const char *op, int r,
                      struct guest_run_result *res, const struct pv_err *err)
{
    if (r < 0) {
        guest_run_result_release(res);
        /* the agent's message names the program or the cwd that failed */
        return l_raise_guest(L, t, op, NULL, err);
    }
    lua_createtable(L, 0, 8);
    static const char *status[] = {"exited", "signalled", "timed_out"};
    lua_pushinteger(L, res->exit_code);
    lua_setfield(L, -2, "exit_code");
    push_output(L, &res->out, res->out_total);
    lua_setfield(L, -2, "stdout");
    push_output(L, &res->err, res->err_total);
    lua_setfield(L, -2, "stderr");
    lua_pushstring(L, status[res->status >= 0 && res->status <= 2 ? res->status : 0]);
    lua_setfield(L, -2, "status");
    lua_pushboolean(L, res->status == PV_TIMED_OUT);
    lua_setfield(L, -2, "timed_out");
    if (res->status == PV_SIGNALLED) {
        lua_pushinteger(L, res->signal);
        lua_setfield(L, -2, "signal");
    }
    guest_run_result_release(res);
    luaL_setmetatable(L, PV_RUNRESULT_MT);
    return 1;
}

static int run_result_gc(lua_State *L)
{
    guest_run_result_release(lua_touserdata(L, 1));
    return 0;
}

struct guest_run_result *l_new_run_result(lua_State *L)
{
    return l_newudata(L, sizeof(struct guest_run_result), "provium.run_result_buf", run_result_gc);
}

/* _provium_c.run(vm, argv_table, opts_table) -> RunResult. The Lua wrapper
 * in lua/result.lua normalises vm:run's call shapes into these two tables. */
static int l_vm_run_raw(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    struct guest_run_req req;
    l_check_run(L, &req);
    struct guest_run_result *res = l_new_run_result(L);
    struct pv_err err = {0};
    int r = guest_run(&t, &req, res, &err);
    return l_push_run_result(L, &t, "run", r, res, &err);
}

/* The max_size of an options table at i (nil: the default). */
static uint64_t opt_max_size(lua_State *L, int i, const char *what)
{
    if (lua_isnoneornil(L, i))
        return GUEST_READ_MAX_DEFAULT;
    luaL_checktype(L, i, LUA_TTABLE);
    lua_getfield(L, i, "max_size");
    uint64_t v = GUEST_READ_MAX_DEFAULT;
    if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 0)
        v = (uint64_t)lua_tointeger(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "%s: max_size must be a non-negative integer number of bytes, got %s", what,
                   luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    return v;
}

/* vm:read_file(path, {max_size=}?) -> string */
static int l_vm_read_file(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    const char *path = luaL_checkstring(L, 2);
    uint64_t max = opt_max_size(L, 3, "read_file");
    struct buf *out = l_newbuf(L);
    struct pv_err err = {0};
    if (guest_read_file(&t, path, max, out, &err) < 0)
        return l_raise_guest(L, &t, "read_file", path, &err);
    return l_push_buf(L, out);
}

/* vm:write_file(path, data, mode?) */
static int l_vm_write_file(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    const char *path = luaL_checkstring(L, 2);
    size_t len;
    const char *data = luaL_checklstring(L, 3, &len);
    lua_Integer mode = luaL_optinteger(L, 4, -1);
    if (mode < -1 || mode > 07777)
        return luaL_argerror(L, 4, "mode must be permission bits (0..0xfff)");
    struct pv_err err = {0};
    if (guest_write_file(&t, path, data, len, mode < 0 ? GUEST_DEFAULT_MODE : (uint32_t)mode, false,
                         &err) < 0)
        return l_raise_guest(L, &t, "write_file", path, &err);
    return 0;
}

/* vm:stat(path) -> {size, mtime, mtime_ns, perm, entry_type, uid, gid} */
static int l_vm_stat(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    const char *path = luaL_checkstring(L, 2);
    struct guest_stat st;
    struct pv_err err = {0};
    if (guest_stat(&t, path, false, &st, &err) < 0)
        return l_raise_guest(L, &t, "stat", path, &err);
    l_push_stat(L, &st);
    return 1;
}

void l_push_stat(lua_State *L, const struct guest_stat *st)
{
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, (lua_Integer)st->size);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, (double)st->mtime_ns / 1e9);
    lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, st->mtime_ns);
    lua_setfield(L, -2, "mtime_ns");
    lua_pushinteger(L, st->perm);
    lua_setfield(L, -2, "perm");
    lua_pushstring(L, l_ftype_name(st->type));
    lua_setfield(L, -2, "entry_type");
    lua_pushinteger(L, st->uid);
    lua_setfield(L, -2, "uid");
    lua_pushinteger(L, st->gid);
    lua_setfield(L, -2, "gid");
}

/* vm:exists(path) -> boolean */
static int l_vm_exists(lua_State *L)
{
    struct target t = l_checktarget(L, 1);
    const char *path = luaL_checkstring(L, 2);
    struct guest_stat st;
    struct pv_err err = {0};
    int r = guest_stat(&t, path, true, &st, &err);
    if (r < 0 && err.guest && (err.code == ENOENT || err.code == ENOTDIR)) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (r < 0)
        return l_raise_guest(L, &t, "exists", path, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* vm:modules_dir() -> the host's lib/modules/<version> tree for this VM's kernel, or nil */
static int l_vm_modules_dir(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    if (u->vm->modules_dir)
        lua_pushstring(L, u->vm->modules_dir);
    else
        lua_pushnil(L);
    return 1;
}

/* _provium_c.kmod_order(modules_dir, name) -> {relative .ko paths, dependencies first} */
static int l_kmod_order(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    const char *name = luaL_checkstring(L, 2);
    char **paths = NULL;
    struct pv_err err = {0};
    if (kmod_order(dir, &name, 1, &paths, &err) < 0)
        return l_raise(L, &err);
    lua_newtable(L);
    for (size_t i = 0; paths[i]; i++) {
        lua_pushstring(L, paths[i]);
        lua_seti(L, -2, (lua_Integer)i + 1);
    }
    kmod_free_paths(paths);
    return 1;
}

/* vm:kernel_log() -> the guest's kernel log as the agent streamed it (dmesg format) */
static int l_vm_kernel_log(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    struct buf *b = l_newbuf(L);
    vm_kernel_log(u->vm, b);
    return l_push_buf(L, b);
}

/* _provium_c.standby(vm, path) -> its QEMU's pid, or nil and why: a QEMU
 * started now for the next vm:restore(path) (reset_between_tests; best effort) */
static int l_standby(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    struct pv_err err = {0};
    int pid = vm_standby(u->vm, luaL_checkstring(L, 2), &err);
    if (pid < 0) {
        lua_pushnil(L);
        lua_pushstring(L, err.msg);
        return 2;
    }
    lua_pushinteger(L, pid);
    return 1;
}

/* _provium_c.qemu_pid(vm) -> the pid of the VM's QEMU, or nil (tests) */
static int l_qemu_pid(lua_State *L)
{
    struct vm *vm = l_checkvm(L, 1)->vm;
    if (vm->pid <= 0)
        return 0;
    lua_pushinteger(L, vm->pid);
    return 1;
}

/* _provium_c.log_read(vm, "kmsg"|"console", offset, max) -> text, next
 * offset: a piece of a log from a logical offset (docs/vms.md#logs) */
static int l_log_read(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    static const char *const names[] = {"kmsg", "console", NULL};
    int which = luaL_checkoption(L, 2, NULL, names);
    lua_Integer off = luaL_checkinteger(L, 3), max = luaL_checkinteger(L, 4);
    luaL_argcheck(L, off >= 0, 3, "must not be negative");
    luaL_argcheck(L, max >= 0 && max <= (64 << 20), 4, "must be 0..64 MiB");
    struct buf *b = l_newbuf(L);
    uint64_t next;
    vm_log_read(u->vm, which == 0 ? VM_LOG_KMSG : VM_LOG_CONSOLE, (uint64_t)off, (size_t)max, b,
                &next);
    l_push_buf(L, b);
    lua_pushinteger(L, (lua_Integer)next);
    return 2;
}

/* _provium_c.log_generation(vm) -> changes when a fresh boot starts new logs */
static int l_log_generation(lua_State *L)
{
    lua_pushinteger(L, l_checkvm(L, 1)->vm->log_gen);
    return 1;
}

/* _provium_c.death_reported(vm) -> why this boot of vm ended, when an operation raised for
 * it (its error told the death with the console tail), else nil (docs/splats.md) */
static int l_death_reported(lua_State *L)
{
    struct vm *vm = l_checkvm(L, 1)->vm;
    if (vm->state == VM_DEAD && vm->exit_reason)
        lua_pushstring(L, vm->exit_reason);
    else
        lua_pushnil(L);
    return 1;
}

/* _provium_c.infra_error(vm) -> the message of the VM's last boot when it
 * failed as an infrastructure error (twice, the machine's fault), else nil
 * (docs/debugging.md#infrastructure-errors) */
static int l_infra_error(lua_State *L)
{
    struct vm *vm = l_checkvm(L, 1)->vm;
    if (!vm->infra_error)
        return 0;
    lua_pushstring(L, vm->infra_error);
    return 1;
}

/* _provium_c.set_hang_timeout(seconds | nil): the hang watchdog's timeout
 * from now on (docs/debugging.md#hangs); 0 turns it off, nil goes back to
 * the run's (--hang-timeout, else the default). */
static int l_set_hang_timeout(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        vm_globals.hang_timeout = vm_globals.hang_timeout_run;
        return 0;
    }
    double secs = luaL_checknumber(L, 1);
    luaL_argcheck(L, secs >= 0, 1, "must not be negative");
    vm_globals.hang_timeout = secs > 0 ? secs : -1;
    return 0;
}

/* _provium_c.qemu_faults(vm) -> the page faults QEMU has taken, minor and
 * major (from /proc/<pid>/stat; make bench), or nil when no QEMU runs */
static int l_qemu_faults(lua_State *L)
{
    struct vm *vm = l_checkvm(L, 1)->vm;
    _cleanup_free_ char *path = xasprintf("/proc/%d/stat", (int)vm->pid);
    struct buf b = BUF_INIT;
    unsigned long long minflt, majflt;
    /* the fields after the command's closing parenthesis: state is the 3rd */
    const char *p = vm->pid > 0 && read_file(path, 4096, &b) == 0 ? strrchr(b.data, ')') : NULL;
    bool ok =
        p && sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %llu %*u %llu", &minflt, &majflt) == 2;
    buf_release(&b);
    if (!ok)
        return 0;
    lua_pushinteger(L, (lua_Integer)minflt);
    lua_pushinteger(L, (lua_Integer)majflt);
    return 2;
}

/* vm:console_log() -> everything the guest's console printed since power-on */
static int l_vm_console_log(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    struct buf *b = l_newbuf(L);
    vm_console_log(u->vm, b);
    return l_push_buf(L, b);
}

/* vm:console_tail(lines?) -> the last lines, indented, for failure messages */
static int l_vm_console_tail(lua_State *L)
{
    struct l_vm *u = l_checkvm(L, 1);
    int lines = (int)luaL_optinteger(L, 2, 40);
    struct buf *b = l_newbuf(L);
    vm_console_tail(u->vm, lines, b);
    return l_push_buf(L, b);
}

static const luaL_Reg vm_methods[] = {
    {"boot", l_vm_boot},
    {"shutdown", l_vm_shutdown},
    {"kill", l_vm_kill},
    {"reset", l_vm_reset},
    {"pause", l_vm_pause},
    {"resume", l_vm_resume},
    {"power_button", l_vm_power_button},
    {"close", l_vm_close},
    {"ping", l_vm_ping},
    {"state", l_vm_state},
    {"name", l_vm_name},
    {"profile", l_vm_profile},
    {"cid", l_vm_cid},
    {"gdb_port", l_vm_gdb_port},
    {"kernel_release", l_vm_kernel_release},
    {"boot_seconds", l_vm_boot_seconds},
    {"boot_cached", l_vm_boot_cached},
    {"read_file", l_vm_read_file},
    {"write_file", l_vm_write_file},
    {"stat", l_vm_stat},
    {"exists", l_vm_exists},
    {"console_log", l_vm_console_log},
    {"kernel_log", l_vm_kernel_log},
    {"modules_dir", l_vm_modules_dir},
    {"console_tail", l_vm_console_tail},
    {"console_socket_path", l_vm_console_socket_path},
    {NULL, NULL},
};

static int l_vm_tostring(lua_State *L)
{
    struct l_vm *u = luaL_checkudata(L, 1, PV_VM_MT);
    lua_pushfstring(L, "VM(%s)", u->vm ? u->vm->name : "closed");
    return 1;
}

int luaopen_provium_vm(lua_State *L)
{
    luaL_newmetatable(L, PV_VM_MT);
    luaL_newlib(L, vm_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_vm_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_vm_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_vm_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    luaL_newmetatable(L, PV_RUNRESULT_MT);
    lua_pop(L, 1);
    static const luaL_Reg prims[] = {
        {"vm_new", l_vm_new},
        {"run", l_vm_run_raw},
        {"kmod_order", l_kmod_order},
        {"snapshot", l_vm_snapshot},
        {"restore", l_vm_restore},
        {"standby", l_standby},
        {"qemu_pid", l_qemu_pid},
        {"log_read", l_log_read},
        {"log_generation", l_log_generation},
        {"death_reported", l_death_reported},
        {"set_hang_timeout", l_set_hang_timeout},
        {"infra_error", l_infra_error},
        {"qemu_faults", l_qemu_faults},
        {NULL, NULL},
    };
    luaL_newlib(L, prims);
    return 1;
}
