/* The Lua layer: one state per test file, the embedded prelude, and the C
 * types it binds. Only files in src/host/lua include lua.h. */
#pragma once

#include <lauxlib.h>
#include <lua.h>

#include "config.h"
#include "util.h"

struct vm;

#define PV_VM_MT "provium.vm"
#define PV_RUNRESULT_MT "provium.runresult"

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

/* Raise the error of a failed guest operation: a positive r (the guest's
 * errno) reads "vm `a`: <op>: ENOENT: <what> (No such file or directory)";
 * a negative r raises err's message (the whole story, e.g. a dead VM). */
int l_raise_guest(lua_State *L, const struct vm *vm, const char *op, const char *what, int r,
                  const struct pv_err *err);

/* Raise a Lua error from a pv_err ("<what>: <message>"). */
int l_raise_err(lua_State *L, const char *what, const struct pv_err *err);

/* The VM of the userdata at i; raises unless it is an open VM. */
struct vm *l_tovm(lua_State *L, int i);

int luaopen_provium_vm(lua_State *L);
/* The primitives behind lua/console.lua. */
int luaopen_provium_console(lua_State *L);
/* The primitives behind lua/file.lua. */
int luaopen_provium_fs(lua_State *L);
/* Adds vm:read_mem/write_mem; returns {syscall=, sys=, errno=}. */
int luaopen_provium_sys(lua_State *L);
int luaopen_provium_json(lua_State *L);
