/* The Lua layer: one state per test file, the embedded prelude, and the C
 * types it binds. Only files in src/host/lua include lua.h. */
#pragma once

#include <lauxlib.h>
#include <lua.h>

#include "config.h"
#include "util.h"

struct vm;
struct vm_run_req;
struct vm_run_result;
struct vm_stat;

#define PV_VM_MT "provium.vm"
#define PV_RUNRESULT_MT "provium.runresult"
#define PV_WORKER_MT "provium.worker"

/* What a file's state needs from the process that runs it. */
struct l_ctx {
    const struct config *config;
    const char *file;       /* the test file, as given */
    const char *display;    /* its name in output */
};
extern struct l_ctx l_ctx;

/* A fresh state: standard libraries, json, the provium C primitives
 * (`_provium_c`) and the prelude. NULL on failure (message on stderr). */
lua_State *l_newstate(void);
/* An embedded file of lua/ by name ("types"): its text, or NULL. */
const char *l_prelude_text(const char *name, size_t *len);

/* Raise the error of a failed guest operation: a positive r (the guest's
 * errno) reads "vm `a`: <op>: ENOENT: <what> (No such file or directory)";
 * a negative r raises err's message (the whole story, e.g. a dead VM). */
int l_raise_guest(lua_State *L, const struct vm *vm, const char *op, const char *what, int r,
                  const struct pv_err *err);

/* Raise a Lua error from a pv_err ("<what>: <message>"). */
int l_raise_err(lua_State *L, const char *what, const struct pv_err *err);

/* Request and reply buffers owned by a userdata (pushed), so a raise frees them. */
struct l_io {
    struct buf req, reply;
};
struct l_io *l_newio(lua_State *L);
/* Run one request (vm_call, 60 s) and release req; raise
 * "vm `a`: <op>: ENOENT: <what> (No such file...)" on failure. */
void l_call(lua_State *L, struct vm *vm, const char *op, const char *what, uint16_t type,
            struct buf *req, struct buf *reply);
void l_bad_reply(lua_State *L, const struct vm *vm, const char *op);
/* Push b as a string and release it; returns 1 (a C function's result count). */
int l_push_buf(lua_State *L, struct buf *b);

/* The VM of the userdata at i, a VM or a Worker; raises unless it is an
 * open VM or a live worker. Requests made next go where it says: to the
 * agent for a VM, to the worker for a Worker (vm->chan.route). */
struct vm *l_tovm(lua_State *L, int i);
/* The same without raising: NULL unless an open VM or a live worker is at i. */
struct vm *l_testvm(lua_State *L, int i);
/* l_tovm for a Worker (lua/l_worker.c). */
struct vm *l_worker_route(lua_State *L, int i, bool raise);
/* "vm `a`", or "vm `a` worker 2" while requests go to a worker (pushed). */
const char *l_who(lua_State *L, const struct vm *vm);
/* The open VM kept as user value 1 of the userdata at i (a stream, a
 * pending call: the VM outlives them), or NULL once it is closed. */
struct vm *l_uservm(lua_State *L, int i);

/* The arguments (2: argv table, 3: opts table) of _provium_c.run and of
 * run_async, as a request. Its strings stay anchored at stack index 4. */
int l_check_run(lua_State *L, struct vm_run_req *req);
/* Push the RunResult of a finished vm_run/vm_wait (r, err as they returned)
 * or raise its error; releases res either way. */
int l_push_run_result(lua_State *L, const struct vm *vm, const char *op, int r,
                      struct vm_run_result *res, const struct pv_err *err);

/* Shared by the single operations and vm:batch. */
void l_push_stat(lua_State *L, const struct vm_stat *st);
void l_push_listdir(lua_State *L, const struct vm *vm, const struct buf *reply);
/* mkdir (path, perm, parents), unlink (path) or rename (from, to), with the
 * arguments from stack index i: the request type, or 0 for another op. */
uint16_t l_encode_path_op(lua_State *L, const char *op, int i, struct buf *b);

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
