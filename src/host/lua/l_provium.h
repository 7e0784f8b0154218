/* The Lua layer: one state per test file, the embedded prelude, and the C
 * types it binds. Only files in src/host/lua include lua.h. */
#pragma once

#include <lauxlib.h>
#include <lua.h>

#include "config.h"
#include "guest.h"
#include "util.h"

#define PV_VM_MT "provium.vm"
#define PV_RUNRESULT_MT "provium.runresult"
#define PV_WORKER_MT "provium.worker"

/* What a file's state needs from the process that runs it. */
struct l_ctx {
    const struct config *config;
    const char *file;    /* the test file, as given */
    const char *display; /* its name in output */
};
extern struct l_ctx l_ctx;

/* A fresh state: standard libraries, json, the provium C primitives
 * (`_provium_c`) and the prelude. NULL on failure (message on stderr). */
lua_State *l_newstate(void);
/* An embedded file of lua/ by name ("types"): its text, or NULL. */
const char *l_prelude_text(const char *name, size_t *len);

/* Where the userdata at i sends requests: the agent of a VM, or a
 * Worker's worker. l_checktarget raises unless it is an open VM or a live
 * worker; l_testtarget returns false instead. */
struct target l_checktarget(lua_State *L, int i);
bool l_testtarget(lua_State *L, int i, struct target *ret);
/* The same for a Worker userdata (l_worker.c). */
bool l_worker_target(lua_State *L, int i, bool raise, struct target *ret);
/* The VM or Worker kept as user value 1 of the userdata at i (a stream, a
 * pending call: they outlive neither), while it is still open. */
bool l_usertarget(lua_State *L, int i, struct target *ret);
/* The VM of a target, for operations only a VM has (console, lifecycle). */
struct vm *l_tovm(lua_State *L, int i);

/* Raise the error of a failed guest operation: the guest's errno reads
 * "vm `a`: <op>: ENOENT: <what> (No such file or directory)" (what NULL:
 * the agent's message instead); a host failure raises err's message (the
 * whole story, e.g. a dead VM). */
int l_raise_guest(lua_State *L, const struct target *t, const char *op, const char *what,
                  const struct pv_err *err);

/* Raise err as a Lua error in full: its message and a dead VM's story,
 * after "<what>: " for l_raise_err. */
int l_raise(lua_State *L, const struct pv_err *err);
int l_raise_err(lua_State *L, const char *what, const struct pv_err *err);

/* A zeroed userdata of size bytes (pushed) whose metatable mt has gc as
 * its __gc: C state a raise cannot leak. */
void *l_newudata(lua_State *L, size_t size, const char *mt, lua_CFunction gc);
/* A buf owned by a userdata (pushed), so that a raise frees it. */
struct buf *l_newbuf(lua_State *L);
/* Push b as a string and release it; returns 1 (a C function's result count). */
int l_push_buf(lua_State *L, struct buf *b);

/* Set t[name] = {const.name = const.value, ...} on the table at the top:
 * how the wire's constants reach lua/ (never retyped there). */
struct l_const {
    const char *name;
    lua_Integer value;
};
void l_set_consts(lua_State *L, const char *name, const struct l_const *c, size_t n);

/* A number of seconds or a duration string ("30s", "500ms") at idx, from 0
 * to PV_DURATION_MAX; else a raise naming what. */
double l_duration(lua_State *L, int idx, const char *what);

/* vm:boot's options: the creation-time table (registry ref, or LUA_NOREF)
 * overridden by the table at idx, parsed into a GC-owned userdata left on
 * the stack (a raise mid-parse leaks nothing). */
struct boot_opts;
struct boot_opts *l_boot_opts(lua_State *L, int ref, int idx);

/* A Lua array's length for C to allocate by: lua_rawlen (no __len) and at
 * most max, else a raise naming what. */
size_t l_checkcount(lua_State *L, int i, size_t max, const char *what);

/* The arguments (2: argv table, 3: opts table) of _provium_c.run and of
 * run_async, as a request. Its strings stay anchored at stack index 4. */
void l_check_run(lua_State *L, struct guest_run_req *req);
/* A guest_run_result owned by a userdata (pushed), so that a raise frees it. */
struct guest_run_result *l_new_run_result(lua_State *L);
/* Push the RunResult of a finished guest_run/guest_wait (r, err as they
 * returned) or raise its error; releases res either way. */
int l_push_run_result(lua_State *L, const struct target *t, const char *op, int r,
                      struct guest_run_result *res, const struct pv_err *err);

/* The Lua name of an enum pv_ftype ("file", "directory", ...; "other"). */
const char *l_ftype_name(int t);
/* Shared by the single operations and vm:batch. */
void l_push_stat(lua_State *L, const struct guest_stat *st);
/* The entries of a ListDir reply as {{name=, entry_type=}, ...}, or false
 * when the reply is malformed (err says why). */
bool l_push_listdir(lua_State *L, const struct buf *reply, struct pv_err *err);
/* The arguments (2: nr, 3: args, 4: bufs, 5: ptrs, 6: nested, as lua/sys.lua's
 * P.syscall_args makes them) of _provium_c.syscall and of a vm:batch syscall
 * row, as a request; raises on a bad shape. The request, and the arrays it
 * points at, live in a userdata pushed at index 7; its strings stay anchored
 * in the tables. */
struct guest_syscall_req *l_check_syscall(lua_State *L);
/* Push ret, errno and out_bufs (3 values). */
void l_push_syscall_result(lua_State *L, const struct guest_syscall_res *res);

int luaopen_provium_vm(lua_State *L);
/* _provium_c.worker: the primitives behind lua/worker.lua. */
int luaopen_provium_worker(lua_State *L);
/* _provium_c.batch_encode and _provium_c.batch (lua/batch.lua). */
int luaopen_provium_batch(lua_State *L);
/* The primitives behind lua/process.lua and the Tail streams. */
int luaopen_provium_proc(lua_State *L);
/* The primitives behind lua/console.lua. */
int luaopen_provium_console(lua_State *L);
/* The primitives behind lua/file.lua. */
int luaopen_provium_fs(lua_State *L);
/* Adds vm:read_mem/write_mem; returns {syscall=, sys=, errno=}. */
int luaopen_provium_sys(lua_State *L);
int luaopen_provium_json(lua_State *L);
/* The test-only primitives (l_test.c), set into the table at the top. */
void l_open_test_prims(lua_State *L);
/* _provium_c.barrier (l_barrier.c), set into the table at the top. */
void l_open_barrier(lua_State *L);
/* _provium_c.keep (--keep-on-failure, src/host/lua/l_attach.c). */
void l_open_attach(lua_State *L);
/* _provium_c.net: the primitives behind lua/net.lua (bridges, NICs). */
int luaopen_provium_net(lua_State *L);
/* _provium_c.disk: the primitives behind lua/disk.lua (attached disks). */
int luaopen_provium_disk(lua_State *L);
/* _provium_c.sym: the primitives behind lua/symbols.lua (symbolized stacks). */
int luaopen_provium_sym(lua_State *L);
