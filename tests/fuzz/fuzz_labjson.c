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
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "host/lua/l_provium.h"
#include "host/vm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The full collection runs once this input's lab, VMs and message are
 * unreachable: what the input allocated is then freed within its run, so
 * libFuzzer's leak check (run when allocations outnumber frees) has nothing
 * to do; while the check held them, it scanned the heap after every new
 * input and took half the time. */
static const char check_src[] =
    "local dir = ...\n"
    "local function attempt()\n"
    "  local lab = _provium.new_lab('fuzz', nil)\n"
    "  local ok, err = pcall(lab.restore, lab, dir)\n"
    "  if ok then return nil end\n"
    "  err = tostring(err)\n"
    "  if err:find('lab:restore: ', 1, true) or err:find('vm `', 1, true)\n"
    "     or err:find('provium:vm', 1, true) then return nil end\n"
    "  return 'unclear error from Lab:restore: ' .. err\n"
    "end\n"
    "return function()\n"
    "  local unclear = attempt()\n"
    "  collectgarbage()\n"
    "  if unclear then error(unclear) end\n"
    "end\n";

static lua_State *L;
static char dir[] = "/tmp/provium-fuzz-lab.XXXXXX";
/* lab.json, open across inputs: each input replaces its bytes in place
 * (write_file_atomic's fsync and rename took most of each run) */
static int index_fd = -1;

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
    char path[64];
    snprintf(path, sizeof(path), "%s/lab.json", dir);
    index_fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (index_fd < 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L)
        setup();
    if (pwrite(index_fd, data, size, 0) != (ssize_t)size || ftruncate(index_fd, (off_t)size) < 0)
        abort();
    lua_pushvalue(L, -1);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        abort();
    }
    return 0;
}
