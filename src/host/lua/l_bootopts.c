/* vm:boot's options table (docs/vms.md) into struct boot_opts. */
#include <math.h>

#include "boot.h"
#include "l_provium.h"

double l_duration(lua_State *L, int idx, const char *what)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        double v = lua_tonumber(L, idx);
        if (!isfinite(v) || v < 0 || v > PV_DURATION_MAX)
            luaL_error(L, "%s must be a number of seconds from 0 to %.0f, got %f", what,
                       PV_DURATION_MAX, v);
        return v;
    }
    if (lua_type(L, idx) == LUA_TSTRING) {
        double v;
        if (parse_duration(lua_tostring(L, idx), &v) < 0)
            luaL_error(L, "bad timeout string `%s` for %s (use e.g. \"30s\", \"500ms\", \"5m\")",
                       lua_tostring(L, idx), what);
        return v;
    }
    luaL_error(L, "%s must be a number or a duration string, got %s", what, luaL_typename(L, idx));
    return 0;
}

/* Fill o from the boot opts table at idx (fields override what o has). */
static void parse_opts(lua_State *L, int idx, struct boot_opts *o)
{
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "boot opts: keys must be strings");
        const char *k = lua_tostring(L, -2);
        if (!strcmp(k, "memory")) {
            uint64_t v;
            if (lua_isinteger(L, -1) && lua_tointeger(L, -1) > 0)
                v = (uint64_t)lua_tointeger(L, -1);
            else if (lua_type(L, -1) != LUA_TSTRING || parse_size(lua_tostring(L, -1), &v) < 0)
                luaL_error(L, "boot opts: memory must be bytes or a size like \"512M\", got %s",
                           luaL_tolstring(L, -1, NULL));
            if (v < (64ull << 20))
                luaL_error(L, "boot opts: memory %llu is below 64M", (unsigned long long)v);
            o->memory = v;
        } else if (!strcmp(k, "cpus")) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 255)
                luaL_error(L, "boot opts: cpus must be an integer 1..255");
            o->cpus = (int)lua_tointeger(L, -1);
        } else if (!strcmp(k, "kernel_cmdline") || !strcmp(k, "kernel_cmdline_append")) {
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "boot opts: %s must be a string, got %s", k, luaL_typename(L, -1));
            char **dst = k[14] ? &o->kernel_cmdline_append : &o->kernel_cmdline;
            free(*dst);
            *dst = xstrdup(lua_tostring(L, -1));
        } else if (!strcmp(k, "agent_timeout")) {
            o->agent_timeout = l_duration(L, -1, "boot opts: agent_timeout");
        } else if (!strcmp(k, "initial_time")) {
            double v = lua_tonumber(L, -1);
            /* within what an i64 of nanoseconds holds (year 2262) */
            if (lua_type(L, -1) != LUA_TNUMBER || !isfinite(v) || fabs(v) > 9.2e9)
                luaL_error(L, "boot opts: initial_time must be a finite number of seconds since "
                              "the epoch");
            o->has_initial_time = true;
            o->initial_time = v;
        } else if (!strcmp(k, "rng_seed")) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
                luaL_error(L, "boot opts: rng_seed must be a non-negative integer");
            o->has_rng_seed = true;
            o->rng_seed = (uint64_t)lua_tointeger(L, -1);
        } else if (!strcmp(k, "files")) {
            size_t n = l_checkcount(L, lua_gettop(L), 65536, "boot opts: files");
            for (size_t i = 1; i <= n; i++) {
                lua_rawgeti(L, -1, (lua_Integer)i);
                if (!lua_istable(L, -1))
                    luaL_error(L, "boot opts: files[%d] must be a table {path=, content=, mode=}",
                               (int)i);
                lua_getfield(L, -1, "path");
                lua_getfield(L, -2, "content");
                lua_getfield(L, -3, "mode");
                if (lua_type(L, -3) != LUA_TSTRING || lua_type(L, -2) != LUA_TSTRING)
                    luaL_error(L, "boot opts: files[%d] needs string path and content", (int)i);
                size_t len;
                const char *content = lua_tolstring(L, -2, &len);
                o->files = xrealloc(o->files, (o->nfiles + 1) * sizeof(*o->files));
                struct boot_file *f = &o->files[o->nfiles++];
                f->path = xstrdup(lua_tostring(L, -3));
                f->content = xmalloc(len + 1);
                memcpy(f->content, content, len);
                f->len = len;
                f->mode = lua_isinteger(L, -1) ? (uint32_t)lua_tointeger(L, -1) & 07777 : 0644;
                lua_pop(L, 4);
            }
        } else if (!strcmp(k, "disks")) {
            /* attached by lua/disk.lua before the boot (docs/disks.md) */
            if (!lua_istable(L, -1))
                luaL_error(L, "boot opts: disks must be an array of tables, got %s",
                           luaL_typename(L, -1));
        } else if (!strcmp(k, "cold")) {
            if (!lua_isboolean(L, -1))
                luaL_error(L, "boot opts: cold must be a boolean, got %s", luaL_typename(L, -1));
            o->cold = lua_toboolean(L, -1);
        } else if (!strcmp(k, "pvh")) {
            if (!lua_isboolean(L, -1))
                luaL_error(L, "boot opts: pvh must be a boolean, got %s", luaL_typename(L, -1));
            o->has_pvh = true;
            o->pvh = lua_toboolean(L, -1);
        } else {
            luaL_error(L,
                       "boot opts: unknown option `%s` (known: memory, cpus, kernel_cmdline, "
                       "kernel_cmdline_append, agent_timeout, files, initial_time, rng_seed, "
                       "cold, pvh, disks)",
                       k);
        }
        lua_pop(L, 1);
    }
}

/* Boot opts are parsed into a struct the GC owns, so a raise mid-parse
 * leaks nothing. */
static int opts_gc(lua_State *L)
{
    boot_opts_release(lua_touserdata(L, 1));
    return 0;
}

struct boot_opts *l_boot_opts(lua_State *L, int ref, int idx)
{
    struct boot_opts *o = lua_newuserdatauv(L, sizeof(*o), 0);
    memset(o, 0, sizeof(*o));
    lua_newtable(L);
    lua_pushcfunction(L, opts_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    if (ref != LUA_NOREF) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
        parse_opts(L, -1, o);
        lua_pop(L, 1);
    }
    if (lua_istable(L, idx))
        parse_opts(L, idx, o);
    return o;
}
