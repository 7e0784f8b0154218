/* provium repl (docs/repl.md): boot a VM and read Lua from a prompt with
 * the whole API, line editing and history (libedit), multi-line input,
 * results printed. */
#include "repl.h"

#include <editline/readline.h>
#include <signal.h>
#include <stdio.h>

#include "lua/l_json.h"
#include "lua/l_provium.h"
#include "vm.h"

static void on_signal(int sig)
{
    vm_kill_all();
    _exit(128 + sig);
}

/* Whether the error message says the chunk is just not finished yet. */
static bool incomplete(lua_State *L)
{
    size_t len;
    const char *msg = lua_tolstring(L, -1, &len);
    return msg && len >= 5 && !strcmp(msg + len - 5, "<eof>");
}

/* Compile `return <text>` (an expression to print), else text itself. */
static int compile(lua_State *L, const char *text)
{
    _cleanup_free_ char *ret = xasprintf("return %s;", text);
    if (luaL_loadbuffer(L, ret, strlen(ret), "=repl") == LUA_OK)
        return LUA_OK;
    lua_pop(L, 1);
    return luaL_loadbuffer(L, text, strlen(text), "=repl");
}

/* A line of text that may hold a guest's bytes (a program's output, a
 * console tail in an error), escaped for the terminal
 * (docs/cli.md#guest-bytes). */
static void print_text(FILE *f, const char *prefix, const char *s, size_t n)
{
    struct buf b = BUF_INIT;
    buf_adds(&b, prefix);
    buf_add_escaped(&b, s, n);
    buf_adds(&b, "\n");
    fwrite(b.data, 1, b.len, f);
    buf_release(&b);
}

/* The error message at the top of L's stack. */
static void print_error(lua_State *L, const char *prefix)
{
    size_t n;
    const char *msg = lua_tolstring(L, -1, &n);
    if (!msg) {
        msg = "(error object is not a string)";
        n = strlen(msg);
    }
    print_text(stderr, prefix, msg, n);
}

/* print(...): Lua's print, escaped: a test prints what its guest said. */
static int l_print(lua_State *L)
{
    int n = lua_gettop(L);
    luaL_checkstack(L, n, "too many arguments to print");
    for (int i = 1; i <= n; i++)
        luaL_tolstring(L, i, NULL); /* may raise: nothing is held yet */
    struct buf b = BUF_INIT;
    for (int i = n + 1; i <= 2 * n; i++) {
        size_t len;
        const char *s = lua_tolstring(L, i, &len);
        if (i > n + 1)
            buf_adds(&b, "\t");
        buf_add_escaped(&b, s, len);
    }
    buf_adds(&b, "\n");
    fwrite(b.data, 1, b.len, stdout);
    buf_release(&b);
    return 0;
}

/* A value as the prompt shows it: strings as they are, tables as JSON
 * where they can be, anything else through tostring. */
static void show(lua_State *L, int i)
{
    if (lua_type(L, i) == LUA_TTABLE && !luaL_getmetafield(L, i, "__tostring")) {
        l_push_json_encode_lossy(L);
        lua_pushvalue(L, i);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
            size_t n;
            const char *s = lua_tolstring(L, -1, &n);
            print_text(stdout, "", s, n);
            lua_pop(L, 1);
            return;
        }
        lua_pop(L, 1);
    } else if (lua_type(L, i) == LUA_TTABLE) {
        lua_pop(L, 1); /* the metafield */
    }
    size_t n;
    const char *s = luaL_tolstring(L, i, &n);
    print_text(stdout, "", s, n);
    lua_pop(L, 1);
}

static int traceback(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

/* Read, evaluate and print until Ctrl-D; the stack above base is the
 * user's. History lives in provium's cache directory. */
static void prompt_loop(lua_State *L, int base)
{
    _cleanup_free_ char *hist = NULL, *dir = NULL;
    struct pv_err err = {0};
    if (user_cache_dir(USER_DIR_MAKE, &dir, &err) == 0) {
        hist = xasprintf("%s/repl_history", dir);
        read_history(hist);
    } else {
        fprintf(stderr, "provium repl: no history: %s\n", err.msg);
    }
    struct buf chunk = BUF_INIT;
    for (;;) {
        char *line = readline(chunk.len ? ">> " : "> ");
        if (!line)
            break;
        if (!chunk.len && !*line) {
            free(line);
            continue;
        }
        if (chunk.len)
            buf_adds(&chunk, "\n");
        buf_adds(&chunk, line);
        free(line);
        lua_pushcfunction(L, traceback);
        int tb = lua_gettop(L);
        if (compile(L, chunk.data) != LUA_OK) {
            if (incomplete(L)) {
                lua_settop(L, base);
                continue;
            }
            print_error(L, "");
        } else if (lua_pcall(L, 0, LUA_MULTRET, tb) != LUA_OK) {
            print_error(L, "");
        } else {
            for (int i = tb + 1; i <= lua_gettop(L); i++)
                show(L, i);
        }
        fflush(stdout);
        add_history(chunk.data);
        buf_consume(&chunk, chunk.len);
        lua_settop(L, base);
    }
    buf_release(&chunk);
    if (hist)
        write_history(hist);
}

int repl_run(const struct config *cfg, const char *profile, const char *name, const char *fixture)
{
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    l_ctx.config = cfg;
    l_ctx.file = "(repl)";
    l_ctx.display = "(repl)";
    vm_globals.file = "(repl)";
    lua_State *L = l_newstate();
    if (!L)
        return 2;
    lua_register(L, "print", l_print);
    /* provium:vm(name, profile):boot(), or provium:vm_fixture(fixture):
     * bound to `vm` and to its name */
    lua_getglobal(L, "provium");
    if (fixture) {
        fprintf(stderr, "provium repl: restoring fixture `%s`...\n", fixture);
        lua_getfield(L, -1, "vm_fixture");
        lua_insert(L, -2);
        lua_pushstring(L, fixture);
    } else {
        fprintf(stderr, "provium repl: booting `%s` (profile %s)...\n", name, profile);
        lua_getfield(L, -1, "vm");
        lua_insert(L, -2);
        lua_pushstring(L, name);
        lua_pushstring(L, profile);
    }
    if (lua_pcall(L, fixture ? 2 : 3, 1, 0) != LUA_OK) {
        print_error(L, "provium repl: ");
        lua_close(L);
        vm_kill_all();
        return 2;
    }
    if (!fixture) {
        lua_getfield(L, -1, "boot");
        lua_insert(L, -2);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            print_error(L, "provium repl: ");
            lua_close(L);
            vm_kill_all();
            return 2;
        }
    }
    lua_getfield(L, -1, "name");
    lua_pushvalue(L, -2);
    lua_call(L, 1, 1);
    name = lua_pushfstring(L, "%s", lua_tostring(L, -1)); /* anchored: stays on the stack */
    lua_pushvalue(L, -3);
    lua_setglobal(L, "vm");
    lua_pushvalue(L, -3);
    lua_setglobal(L, name);
    fprintf(stderr,
            "provium repl: `vm` (also `%s`) is booted; Lua 5.4 with the provium API. "
            "Ctrl-D ends (and stops the VM).\n",
            name);
    int base = lua_gettop(L); /* what stays on the stack: the VM and its name */

    prompt_loop(L, base);
    fputc('\n', stderr);
    lua_close(L); /* shuts the VM down */
    vm_kill_all();
    return 0;
}
