/* A test file's Lua state: the standard library, `json`, the C primitives
 * under `_provium_c`, and the embedded prelude (the files under lua/) loaded in a fixed
 * order. */
#include <dirent.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <time.h>

#include <lualib.h>

#include "events.h"
#include "cache.h"
#include "fixture.h"
#include "l_json.h"
#include "l_provium.h"
#include "pool.h"
#include "vm.h"

struct l_ctx l_ctx;

/* The prelude index written by the Makefile: {name, start, end} triples. */
extern const char *const pv_prelude_index[];

static const char *const prelude_order[] = {
    "util",    "result", "sys",     "file",     "clock",    "module",    "console",
    "process", "batch",  "worker",  "lab",      "snapshot", "net",       "disk",
    "fixture", "splat",  "symbols", "kmemleak", "legacy",   "vmm_local", "framework",
};

static int64_t deadline_ns;
static char deadline_msg[128];

static void deadline_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (deadline_ns && now_ns() >= deadline_ns) {
        lua_sethook(L, NULL, 0, 0);
        luaL_error(L, "%s", deadline_msg);
    }
}

/* _provium_c.set_deadline(seconds_from_now | nil, message): bounds both
 * guest operations and pure-Lua loops of the running test. */
static int l_set_deadline(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        deadline_ns = 0;
        vm_globals.op_deadline_ns = 0;
        lua_sethook(L, NULL, 0, 0);
        return 0;
    }
    double s = luaL_checknumber(L, 1);
    if (!(s >= 0)) /* NaN too */
        return luaL_argerror(L, 1, "must be a non-negative number of seconds");
    snprintf(deadline_msg, sizeof(deadline_msg), "%s", luaL_optstring(L, 2, "timed out"));
    /* a bound, so that a huge limit cannot wrap into a deadline in the past */
    deadline_ns = now_ns() + (int64_t)(MIN(s, PV_DURATION_MAX) * 1e9);
    vm_globals.op_deadline_ns = deadline_ns;
    lua_sethook(L, deadline_hook, LUA_MASKCOUNT, 10000);
    return 0;
}

/* _provium_c.sleep(seconds) */
static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    if (!isfinite(s) || s < 0)
        return luaL_argerror(L, 1, "sleep needs a finite, non-negative number");
    int64_t until = now_ns() + (int64_t)(MIN(s, PV_DURATION_MAX) * 1e9);
    for (;;) {
        int64_t left = until - now_ns();
        if (deadline_ns && now_ns() >= deadline_ns)
            return luaL_error(L, "%s", deadline_msg);
        if (left <= 0)
            break;
        struct timespec ts = {left / 1000000000LL, left % 1000000000LL};
        if (ts.tv_sec > 0) {
            ts.tv_sec = 0;
            ts.tv_nsec = 999999999 / 10;
        }
        nanosleep(&ts, NULL);
        vm_logs_bound_all(); /* a guest may flood its console while the test sleeps */
    }
    return 0;
}

/* _provium_c.now() -> monotonic seconds */
static int l_now(lua_State *L)
{
    lua_pushnumber(L, (double)now_ns() / 1e9);
    return 1;
}

/* _provium_c.boot_cache() -> whether this run's boots may come from the
 * boot cache (docs/boot-cache.md) */
static int l_boot_cache(lua_State *L)
{
    lua_pushboolean(L, l_ctx.config && l_ctx.config->boot_cache);
    return 1;
}

/* _provium_c.claim(memory, cpus): provium:claim at run time. The runner
 * reserved what it read in the source; a claim it could not read, or one
 * that differs, is an error. */
static int l_claim(lua_State *L)
{
    const char *mem =
        lua_type(L, 1) == LUA_TNUMBER || lua_type(L, 1) == LUA_TSTRING ? lua_tostring(L, 1) : NULL;
    lua_Integer cpus = luaL_optinteger(L, 2, 1);
    struct amount want;
    struct pv_err err = {0};
    if (pool_parse_claim(mem, cpus, &want, &err) < 0)
        return luaL_error(L, "provium:claim: %s", err.msg);
    if (!vm_globals.claim_memory)
        return 0; /* not under the runner's pool */
    if (!vm_globals.claim_declared || want.memory != vm_globals.claim_memory ||
        want.cpus != vm_globals.claim_cpus)
        return luaL_error(L, "provium:claim: the runner reserves what it reads in the file "
                             "before it starts; write the claim at the file's top level as "
                             "provium:claim{memory = \"2G\", cpus = 2}, with literal values");
    return 0;
}

/* _provium_c.event(kind, payload): onto the run's event stream (a no-op
 * when nobody listens). Strings that are not UTF-8 get U+FFFD. */
static int l_event(lua_State *L)
{
    const char *kind = luaL_checkstring(L, 1);
    if (!events_enabled())
        return 0;
    luaL_checktype(L, 2, LUA_TTABLE);
    l_push_json_encode_lossy(L);
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        return lua_error(L);
    json_error_t je;
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    json_t *payload = json_loadb(text, len, JSON_ALLOW_NUL, &je); /* "\u0000" is a byte */
    if (payload)
        events_emit(kind, payload);
    return 0;
}

/* _provium_c.disk_usage(path) -> the disk space of a file or a directory's
 * files (a snapshot's), each file once; 0 when it is gone */
static int l_disk_usage(lua_State *L)
{
    struct inode_set seen = {0};
    lua_pushinteger(L, (lua_Integer)disk_usage(luaL_checkstring(L, 1), &seen));
    inode_set_release(&seen);
    return 1;
}

/* _provium_c.remove_tree(path): a file or a directory with all in it, if
 * there (a snapshot's delete: best effort) */
static int l_remove_tree(lua_State *L)
{
    rm_rf(luaL_checkstring(L, 1));
    return 0;
}

/* _provium_c.tempdir() -> a new private directory in the run directory
 * (gone at the end of the run) */
static int l_tempdir(lua_State *L)
{
    const char *base = vm_globals.snapshot_dir ? vm_globals.snapshot_dir
                       : vm_globals.rundir     ? vm_globals.rundir
                                               : "/tmp";
    char *p = xasprintf("%s/snap-XXXXXX", base);
    if (!mkdtemp(p)) {
        int e = errno;
        free(p);
        return luaL_error(L, "cannot make a directory in %s: %s", base, strerror(e));
    }
    lua_pushstring(L, p);
    free(p);
    return 1;
}

/* _provium_c.host_dir(path, create?) -> the names in a host directory
 * (made first, with its parents, when create), or nil and the error */
static int l_host_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    if (lua_toboolean(L, 2) && mkdir_p(path, 0755) < 0 && errno != EEXIST) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    lua_newtable(L);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            lua_pushstring(L, e->d_name);
            lua_rawseti(L, -2, ++n);
        }
    closedir(d);
    return 1;
}

/* _provium_c.fixture(name, from_dir, lab?) -> snapshot path (a directory
 * for a lab), built (bool) */
static int l_fixture(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *from = luaL_optstring(L, 2, NULL);
    bool lab = lua_toboolean(L, 3);
    struct fixture_result res;
    struct pv_err err = {0};
    if (fixture_get(l_ctx.config, name, from, lab, l_ctx.display ? l_ctx.display : "?", &res,
                    &err) < 0)
        return l_raise(L, &err);
    lua_pushstring(L, res.snap);
    lua_pushboolean(L, res.built);
    free(res.snap);
    return 2;
}

/* _provium_c.cache_touch(snap) */
static int l_cache_touch(lua_State *L)
{
    cache_touch(luaL_checkstring(L, 1));
    return 0;
}

/* _provium_c.cache_discard_damaged(snap) -> why it was dropped, or nil when
 * its bytes are sound: a restore that failed for another reason (the claim,
 * the host's memory) keeps a good entry */
static int l_cache_discard_damaged(lua_State *L)
{
    const char *entry = luaL_checkstring(L, 1);
    struct pv_err why = {0};
    if (cache_check(entry, &why) != -EBADMSG)
        return 0;
    cache_discard(entry);
    lua_pushstring(L, why.msg);
    return 1;
}

/* _provium_c.parse_duration(s) -> seconds or nil */
static int l_parse_duration(lua_State *L)
{
    double v;
    if (parse_duration(luaL_checkstring(L, 1), &v) < 0)
        return 0;
    lua_pushnumber(L, v);
    return 1;
}

/* _provium_c.kill_all(reason): kill every VM of this file; they read dead */
static int l_kill_all(lua_State *L)
{
    vm_kill_everything(luaL_optstring(L, 1, "killed"));
    return 0;
}

/* _provium_c.timeout_scale() -> how much longer than under KVM guest
 * operations may take (docs/vms.md) */
static int l_timeout_scale(lua_State *L)
{
    lua_pushnumber(L, vm_globals.timeout_scale > 0 ? vm_globals.timeout_scale : 1);
    return 1;
}

/* _provium_c.deadline_passed() -> true once the running test's deadline is past */
static int l_deadline_passed(lua_State *L)
{
    lua_pushboolean(L, vm_globals.op_deadline_ns && now_ns() >= vm_globals.op_deadline_ns);
    return 1;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : luaL_tolstring(L, 1, NULL), 1);
    return 1;
}

const char *l_prelude_text(const char *name, size_t *len)
{
    for (const char *const *e = pv_prelude_index; e[0]; e += 3) {
        if (!strcmp(e[0], name)) {
            *len = (size_t)(e[2] - e[1]);
            return e[1];
        }
    }
    return NULL;
}

static int load_prelude(lua_State *L, const char *name)
{
    for (const char *const *e = pv_prelude_index; e[0]; e += 3) {
        if (strcmp(e[0], name))
            continue;
        char chunk[64];
        snprintf(chunk, sizeof(chunk), "=[provium]/%s.lua", name);
        lua_pushcfunction(L, traceback);
        if (luaL_loadbuffer(L, e[1], (size_t)(e[2] - e[1]), chunk) != LUA_OK ||
            lua_pcall(L, 0, 0, -2) != LUA_OK) {
            fprintf(stderr, "provium: prelude %s: %s\n", name, lua_tostring(L, -1));
            return -1;
        }
        lua_pop(L, 1);
        return 0;
    }
    fprintf(stderr, "provium: prelude %s is not embedded\n", name);
    return -1;
}

lua_State *l_newstate(void)
{
    lua_State *L = luaL_newstate();
    if (!L)
        return NULL;
    luaL_openlibs(L);
    luaopen_provium_json(L);
    lua_setglobal(L, "json");

    luaopen_provium_vm(L);
    luaopen_provium_sys(L);
    for (const char *f = "syscall\0syscall_start\0syscall_await\0clock\0clock_ops\0sys\0errno\0";
         *f; f += strlen(f) + 1) {
        lua_getfield(L, -1, f);
        lua_setfield(L, -3, f);
    }
    lua_pop(L, 1);
    luaopen_provium_fs(L);
    lua_setfield(L, -2, "fs");
    luaopen_provium_console(L);
    lua_setfield(L, -2, "console");
    luaopen_provium_proc(L);
    lua_setfield(L, -2, "proc");
    luaopen_provium_batch(L);
    lua_setfield(L, -2, "batch");
    luaopen_provium_worker(L);
    lua_setfield(L, -2, "worker");
    luaopen_provium_net(L);
    lua_setfield(L, -2, "net");
    luaopen_provium_disk(L);
    lua_setfield(L, -2, "disk");
    luaopen_provium_sym(L);
    lua_setfield(L, -2, "sym");
    static const luaL_Reg prims[] = {
        {"set_deadline", l_set_deadline},
        {"sleep", l_sleep},
        {"now", l_now},
        {"boot_cache", l_boot_cache},
        {"parse_duration", l_parse_duration},
        {"claim", l_claim},
        {"event", l_event},
        {"tempdir", l_tempdir},
        {"disk_usage", l_disk_usage},
        {"remove_tree", l_remove_tree},
        {"host_dir", l_host_dir},
        {"fixture", l_fixture},
        {"cache_touch", l_cache_touch},
        {"cache_discard_damaged", l_cache_discard_damaged},
        {"kill_all", l_kill_all},
        {"deadline_passed", l_deadline_passed},
        {"timeout_scale", l_timeout_scale},
        {NULL, NULL},
    };
    luaL_setfuncs(L, prims, 0);
    l_open_test_prims(L);
    l_open_barrier(L);
    l_open_attach(L);
    luaL_getmetatable(L, PV_RUNRESULT_MT);
    lua_setfield(L, -2, "runresult_mt");
    luaL_getmetatable(L, PV_VM_MT);
    lua_setfield(L, -2, "vm_mt");
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    lua_pushlstring(L, exe, n > 0 ? (size_t)n : 0);
    lua_setfield(L, -2, "exe");
    lua_pushstring(L, l_ctx.file ? l_ctx.file : "");
    lua_setfield(L, -2, "file");
    lua_pushstring(L, l_ctx.display ? l_ctx.display : "");
    lua_setfield(L, -2, "display");
    lua_newtable(L);
    for (size_t i = 0; l_ctx.config && i < l_ctx.config->nroots; i++) {
        lua_pushstring(L, l_ctx.config->roots[i]);
        lua_seti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "roots");
    lua_setglobal(L, "_provium_c");

    for (size_t i = 0; i < ARRAY_SIZE(prelude_order); i++) {
        if (load_prelude(L, prelude_order[i]) < 0) {
            lua_close(L);
            return NULL;
        }
    }
    return L;
}
