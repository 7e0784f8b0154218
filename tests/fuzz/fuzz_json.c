/* json.decode on arbitrary bytes, in one Lua state kept across inputs. When a document
 * decodes, its re-encoding must succeed (bar an over-sparse array) and be a fixed point:
 * encode(decode(text)) == text. Decode errors must be the module's own message. Any broken
 * expectation aborts, so the fuzzer reports it like a crash. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "host/lua/l_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char check_src[] =
    "local json = ...\n"
    "return function(s)\n"
    "  local ok, v = pcall(json.decode, s)\n"
    "  if not ok then\n"
    "    if not v:find('^json%.decode: ') then error('unexpected decode error: ' .. v) end\n"
    "    return\n"
    "  end\n"
    "  local ok2, text = pcall(json.encode, v)\n"
    "  if not ok2 then\n"
    "    if not text:find('json.encode: array too sparse', 1, true) then\n"
    "      error('decoded value does not encode: ' .. text)\n"
    "    end\n"
    "    return\n"
    "  end\n"
    "  local again = json.encode(json.decode(text))\n"
    "  if again ~= text then\n"
    "    error(string.format('not a fixed point:\\n%q\\n%q', text, again))\n"
    "  end\n"
    "end\n";

/* The state and, at stack index 1, the check function. Never closed: it lives as long as the
 * process, and stays reachable, so the leak checker does not count it. */
static lua_State *fuzz_state(void)
{
    static lua_State *L;

    if (L)
        return L;
    L = luaL_newstate();
    if (!L)
        abort();
    luaL_openlibs(L);
    if (luaL_loadstring(L, check_src) != LUA_OK)
        goto fail;
    luaopen_provium_json(L);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        goto fail;
    return L;
fail:
    fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fuzz_state();

    lua_pushvalue(L, 1);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
        abort();
    }
    return 0;
}
