/* libFuzzer target for a lab snapshot's index, lab.json (docs/snapshots.md):
 * it is read in Lua only (lua/snapshot.lua, Lab:restore), through the C
 * JSON decoder (l_json.c, fuzzed alone by fuzz_json). So this target runs
 * the real Lab:restore of the prelude, in one Lua state kept across inputs,
 * on a directory holding the input as lab.json: it must either restore or
 * raise an error that says what is wrong with which file or VM, never a
 * Lua runtime error from inside the prelude. No VM starts: the .snap files
 * an index can name do not exist, and vm_globals.machine is one no
 * snapshot was taken with. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "host/lua/l_provium.h"
#include "host/vm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char check_src[] =
    "local dir = ...\n"
    "return function()\n"
    "  local lab = _provium.new_lab('fuzz', nil)\n"
    "  local ok, err = pcall(lab.restore, lab, dir)\n"
    "  collectgarbage()\n"
    "  if ok then return end\n"
    "  err = tostring(err)\n"
    "  if err:find('lab:restore: ', 1, true) or err:find('vm `', 1, true)\n"
    "     or err:find('provium:vm', 1, true) then return end\n"
    "  error('unclear error from Lab:restore: ' .. err)\n"
    "end\n";

static lua_State *L;
static char dir[] = "/tmp/provium-fuzz-lab.XXXXXX";

static void remove_dir(void)
{
    rm_rf(dir);
}

static void setup(void)
{
    if (!mkdtemp(dir))
        abort();
    atexit(remove_dir);
    vm_globals.machine = "fuzz-no-such-machine";
    vm_globals.rundir = dir;
    L = l_newstate();
    if (!L || luaL_loadbuffer(L, check_src, sizeof(check_src) - 1, "=check") != LUA_OK)
        abort();
    lua_pushstring(L, dir);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L)
        setup();
    char path[64];
    snprintf(path, sizeof(path), "%s/lab.json", dir);
    if (write_file_atomic(path, data, size, 0600) < 0)
        abort();
    lua_pushvalue(L, -1);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        abort();
    }
    return 0;
}
