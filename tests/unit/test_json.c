/* The `json` global (src/host/lua/l_json.c) in a real Lua state: round trips, the shapes
 * tables take, and every error the reference names. Lua snippets assert with the helpers
 * below, whose messages carry both operands; run under ASan, the error paths also prove
 * that no jansson tree leaks when a conversion raises. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/lua/l_json.h"

/* eq: equal values of the same math.type. same: deep equality, metatables ignored.
 * fails(pattern, f, ...): f raises an error containing pattern (plain text). */
static const char helpers[] =
    "local function show(v)\n"
    "  if type(v) == 'string' then return string.format('%q', v) end\n"
    "  if math.type(v) == 'float' then return string.format('%.17g (float)', v) end\n"
    "  return tostring(v)\n"
    "end\n"
    "function eq(got, want, what)\n"
    "  if got ~= want or math.type(got) ~= math.type(want) then\n"
    "    error(string.format('%s: got %s, want %s', what or 'value', show(got), show(want)), 2)\n"
    "  end\n"
    "end\n"
    "function enc(v, want) eq(json.encode(v), want, 'json.encode') end\n"
    "local function same_(a, b, path)\n"
    "  if type(a) ~= 'table' or type(b) ~= 'table' then\n"
    "    if a ~= b or math.type(a) ~= math.type(b) then\n"
    "      error(string.format('%s: got %s, want %s', path, show(a), show(b)), 0)\n"
    "    end\n"
    "    return\n"
    "  end\n"
    "  for k, v in pairs(a) do same_(v, b[k], path .. '[' .. show(k) .. ']') end\n"
    "  for k, v in pairs(b) do same_(a[k], v, path .. '[' .. show(k) .. ']') end\n"
    "end\n"
    "function same(got, want)\n"
    "  local ok, err = pcall(same_, got, want, 'value')\n"
    "  if not ok then error(err, 2) end\n"
    "end\n"
    "function fails(pattern, f, ...)\n"
    "  local ok, err = pcall(f, ...)\n"
    "  if ok then\n"
    "    error(string.format('no error, want one containing %q; got %s', pattern, show(err)), 2)\n"
    "  end\n"
    "  if not string.find(tostring(err), pattern, 1, true) then\n"
    "    error(string.format('error %q, want one containing %q', tostring(err), pattern), 2)\n"
    "  end\n"
    "end\n";

/* Run a snippet named after the C line that holds it, so a failure reads "line N:3: ...". */
static void run_at(lua_State *L, int line, const char *code)
{
    char name[32];

    snprintf(name, sizeof(name), "=line %d", line);
    if (luaL_loadbuffer(L, code, strlen(code), name) || lua_pcall(L, 0, 0, 0))
        fail_msg("%s", lua_tostring(L, -1));
    assert_int_equal(lua_gettop(L), 0);
}
#define run(L, code) run_at(L, __LINE__, code)

/* Give L the json global and the helpers, or close it. */
static int install(lua_State *L, void **state)
{
    luaL_openlibs(L);
    luaopen_provium_json(L);
    lua_setglobal(L, "json");
    if (luaL_dostring(L, helpers)) {
        fprintf(stderr, "helpers: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return -1;
    }
    *state = L;
    return 0;
}

static int setup(void **state)
{
    lua_State *L = luaL_newstate();

    return L ? install(L, state) : -1;
}

static int teardown(void **state)
{
    lua_close(*state);
    return 0;
}

static void test_encode_scalars(void **state)
{
    run(*state, "enc(nil, 'null')\n"
                "enc(true, 'true')\n"
                "enc(false, 'false')\n"
                "enc(0, '0')\n"
                "enc(-42, '-42')\n"
                "enc(math.maxinteger, '9223372036854775807')\n"
                "enc(math.mininteger, '-9223372036854775808')\n"
                "enc('', '\"\"')\n"
                "enc('a\"b\\\\c\\n\\t/', '\"a\\\\\"b\\\\\\\\c\\\\n\\\\t/\"')\n"
                "enc('nul\\0byte', '\"nul\\\\u0000byte\"')\n"
                "enc('caf\\u{e9} \\u{1F600}', '\"caf\\u{e9} \\u{1F600}\"')\n");
}

static void test_encode_floats(void **state)
{
    /* Floats stay floats, with the fewest digits that read back to the same double. */
    run(*state, "enc(1.0, '1.0')\n"
                "enc(-0.0, '-0.0')\n"
                "enc(0.5, '0.5')\n"
                "enc(0.1, '0.1')\n"
                "enc(1/3, '0.3333333333333333')\n"
                "enc({0.1, 1/3}, '[0.1,0.3333333333333333]')\n"
                "enc(1e300, '1e300')\n"
                "enc(2^63, '9.223372036854776e18')\n"
                "enc(5e-324, '5e-324')\n");
    /* Whatever digits are chosen, every float reads back exactly, and as a float. */
    run(*state, "math.randomseed(7)\n"
                "local xs = {}\n"
                "for i = 1, 2000 do\n"
                "  local x = (math.random() - 0.5) * 10.0 ^ math.random(-300, 300)\n"
                "  xs[i] = x\n"
                "  eq(json.decode(json.encode(x)), x, 'float ' .. i)\n"
                "end\n"
                "same(json.decode(json.encode(xs)), xs)\n");
}

static void test_encode_arrays(void **state)
{
    run(*state, "enc({1, 2, 3}, '[1,2,3]')\n"
                "enc({[1] = 1, [3] = 3}, '[1,null,3]')\n"
                "enc({[2] = 'b'}, '[null,\"b\"]')\n"
                "enc({{}, {{}}}, '[{},[{}]]')\n"
                "enc({1, {2, {3}}}, '[1,[2,[3]]]')\n"
                /* An empty table is an object unless its metatable says array. */
                "enc({}, '{}')\n"
                "enc(setmetatable({}, json.array_mt), '[]')\n"
                "enc(setmetatable({}, {__jsontype = 'array'}), '[]')\n"
                "enc(setmetatable({1, 2}, {__jsontype = 'object'}), '{\"1\":1,\"2\":2}')\n"
                /* The same table twice is not a cycle. */
                "local t = {1}\n"
                "enc({t, t, x = t}, '{\"1\":[1],\"2\":[1],\"x\":[1]}')\n"
                /* Holes are free in a short array, and a long one may be half empty. */
                "enc({[5] = true}, '[null,null,null,null,true]')\n"
                "local long = {}\n"
                "for i = 2, 140000, 2 do long[i] = i end\n"
                "local s = json.encode(long)\n"
                "eq(#json.decode(s), 140000, 'length of a half-full array')\n");
}

static void test_encode_objects(void **state)
{
    run(*state, "enc({b = 1, a = 2, c = {d = true}}, '{\"a\":2,\"b\":1,\"c\":{\"d\":true}}')\n"
                "enc({1, x = 2}, '{\"1\":1,\"x\":2}')\n"
                "enc({[0] = 'z', [-1] = 'm'}, '{\"-1\":\"m\",\"0\":\"z\"}')\n"
                "enc({[1.5] = 1}, '{\"1.5\":1}')\n"
                "enc({[2^63] = 1}, '{\"9223372036854775808\":1}')\n"
                "enc({[-2^70] = 1}, '{\"-1180591620717411303424\":1}')\n"
                "enc({['\\0k'] = 1}, '{\"\\\\u0000k\":1}')\n"
                "enc({['\\u{e9}'] = 1}, '{\"\\u{e9}\":1}')\n"
                "enc({a = nil, b = 1}, '{\"b\":1}')\n");
    /* Sorted keys make the text deterministic whatever the table's internal order. */
    run(*state, "local a, b = {}, {}\n"
                "for i = 1, 200 do a['k' .. i] = i end\n"
                "for i = 200, 1, -1 do b['k' .. i] = i end\n"
                "eq(json.encode(a), json.encode(b), 'same keys, other insertion order')\n");
}

static void test_encode_errors(void **state)
{
    run(*state, "local t = {}\n"
                "t.self = t\n"
                "fails('json.encode: cycle detected', json.encode, t)\n"
                "local u = {list = {}}\n"
                "u.list[1] = {back = u}\n"
                "fails('json.encode: cycle detected at value.list[1].back', json.encode, u)\n"
                "fails('json.encode: cannot encode a function', json.encode, print)\n"
                "fails('json.encode: cannot encode a function at value.a.b[2]', json.encode,\n"
                "      {a = {b = {1, print}}})\n"
                "fails('json.encode: cannot encode a userdata at value[\"a b\"]', json.encode,\n"
                "      {['a b'] = io.stdout})\n"
                "fails('json.encode: cannot encode a thread', json.encode,\n"
                "      {coroutine.create(print)})\n"
                "fails('json.encode: cannot use a boolean as an object key', json.encode,\n"
                "      {[true] = 1})\n"
                "fails('json.encode: cannot use a table as an object key', json.encode,\n"
                "      {x = {[{}] = 1}})\n"
                "fails('json.encode: cannot use inf as an object key', json.encode,\n"
                "      {[math.huge] = 1})\n"
                "fails('json.encode: cannot encode NaN', json.encode, 0/0)\n"
                "fails('json.encode: cannot encode inf at value[1]', json.encode, {math.huge})\n"
                "fails('json.encode: cannot encode -inf', json.encode, -math.huge)\n"
                "fails('json.encode: string is not valid UTF-8 (byte 3) at value.s', json.encode,\n"
                "      {s = 'ab\\xff'})\n"
                "fails('not valid UTF-8', json.encode, '\\xed\\xa0\\x80')\n"      /* surrogate */
                "fails('not valid UTF-8', json.encode, '\\xc0\\x80')\n"           /* overlong */
                "fails('not valid UTF-8', json.encode, '\\xf4\\x90\\x80\\x80')\n" /* > U+10FFFF */
                "fails('not valid UTF-8', json.encode, '\\xe2\\x82')\n"           /* truncated */
                "fails('json.encode: object key is not valid UTF-8 (byte 1)', json.encode,\n"
                "      {['\\x80'] = 1})\n"
                "fails('json.encode: duplicate object key \"1\"', json.encode,\n"
                "      {[1] = 1, ['1'] = 2})\n"
                "fails('json.encode: array too sparse: highest index 1000000000, 1 values',\n"
                "      json.encode, {[1e9] = 1})\n"
                "fails('json.encode: metatable field __jsontype must be \"array\" or \"object\"',\n"
                "      json.encode, setmetatable({}, {__jsontype = 'list'}))\n"
                "fails('json.encode: table marked as an array has a key that is not a positive',\n"
                "      json.encode, setmetatable({a = 1}, json.array_mt))\n"
                "fails(\"bad argument #1 to 'encode' (value expected)\",\n"
                "      function() return json.encode() end)\n");
    /* 200 nested tables are fine, 201 are not. */
    run(*state, "local function nest(n)\n"
                "  local root = {}\n"
                "  local t = root\n"
                "  for _ = 2, n do t[1] = {} t = t[1] end\n"
                "  return root\n"
                "end\n"
                "eq(json.encode(nest(200)), string.rep('[', 199) .. '{}' .. string.rep(']', 199))\n"
                "fails('json.encode: nesting deeper than 200 at value...[1][1]', json.encode,\n"
                "      nest(201))\n");
}

static void test_decode_values(void **state)
{
    run(*state, "eq(json.decode('0'), 0)\n"
                "eq(json.decode('-17'), -17)\n"
                "eq(json.decode('9223372036854775807'), math.maxinteger)\n"
                "eq(json.decode('-9223372036854775808'), math.mininteger)\n"
                "eq(json.decode('1.0'), 1.0)\n"
                "eq(json.decode('1e2'), 100.0)\n"
                "eq(json.decode('-2.5E-3'), -0.0025)\n"
                "eq(json.decode('true'), true)\n"
                "eq(json.decode('false'), false)\n"
                "eq(json.decode('null'), nil)\n"
                "eq(select('#', json.decode('null')), 1, 'values returned')\n"
                "eq(json.decode('\"x\"'), 'x')\n"
                "eq(json.decode(' \\n\\t\"sp\" \\n'), 'sp')\n"
                "eq(json.decode('\"\\\\u0000\\\\u00e9\\\\ud83d\\\\ude00\\\\n\"'),\n"
                "   '\\0\\u{e9}\\u{1F600}\\n')\n"
                "same(json.decode('{\"a\":{\"b\":[1,2.0,\"3\"]},\"c\":{}}'),\n"
                "     {a = {b = {1, 2.0, '3'}}, c = {}})\n"
                "eq(json.decode('{\"k\":1,\"k\":2}').k, 2, 'last duplicate wins')\n");
}

static void test_decode_null(void **state)
{
    run(*state, "local t = json.decode('[1,null,3]')\n"
                "eq(t[1], 1) eq(t[2], nil) eq(t[3], 3)\n"
                "local o = json.decode('{\"a\":null,\"b\":1}')\n"
                "eq(o.b, 1)\n"
                "eq(next(o, 'b') == nil and next(o) == 'b', true, 'b is the only key')\n"
                "same(json.decode('[null,null]'), {})\n");
    /* Decoded arrays keep their kind, so [] and {} survive a round trip. */
    run(*state, "enc(json.decode('[]'), '[]')\n"
                "enc(json.decode('{}'), '{}')\n"
                "enc(json.decode('{\"a\":[],\"b\":{},\"c\":null}'), '{\"a\":[],\"b\":{}}')\n"
                "enc(json.decode('[1,null]'), '[1]')\n"
                "eq(getmetatable(json.decode('[1]')), json.array_mt, 'array metatable')\n");
}

static void test_decode_errors(void **state)
{
    run(*state, "fails('json.decode: end of file expected near \\'x\\' at line 2 column 1',\n"
                "      json.decode, '{\"a\":1}\\nx')\n"
                "fails('at line 3 column 4 (byte 12)', json.decode, '[1,\\n 2,\\n   ,]')\n"
                "fails(\"json.decode: ']' expected near end of file at line 1 column 3\",\n"
                "      json.decode, '[1,')\n"
                "fails('json.decode: unexpected token near end of file', json.decode, '')\n"
                "fails('json.decode: invalid token', json.decode, '[NaN]')\n"
                "fails('json.decode: unable to decode byte 0xff', json.decode, '\"\\xff\"')\n"
                "fails('json.decode: invalid Unicode', json.decode, '\"\\\\ud800\"')\n"
                /* jansson refuses integers outside the 64-bit range (see l_json.h). */
                "fails(\"json.decode: too big integer near '18446744073709551615' at line 1\",\n"
                "      json.decode, '18446744073709551615')\n"
                "fails('too big negative integer', json.decode, '[-9223372036854775809]')\n"
                "fails('real number overflow', json.decode, '1e400')\n"
                "fails(\"bad argument #1 to 'decode' (string expected, got table)\",\n"
                "      function() return json.decode({}) end)\n"
                "fails(\"bad argument #1 to 'decode' (string expected, got no value)\",\n"
                "      function() return json.decode() end)\n"
                "eq(json.decode(12), 12, 'a number argument is read as its text')\n"
                "local deep = string.rep('[', 200) .. string.rep(']', 200)\n"
                "eq(json.encode(json.decode(deep)), deep, '200 levels')\n"
                "fails('json.decode: nesting deeper than 200', json.decode,\n"
                "      string.rep('{\"a\":', 201) .. '1' .. string.rep('}', 201))\n"
                "fails('maximum parsing depth', json.decode, string.rep('[', 5000))\n");
}

static void test_round_trip(void **state)
{
    run(*state, "local v = {\n"
                "  name = 'provium', tags = {'a', 'b', 'c'}, n = 3, ratio = 0.75, ok = true,\n"
                "  nested = {list = {{x = 1}, {x = 2.5}, {}}, empty = setmetatable({}, "
                "json.array_mt)},\n"
                "  unicode = '\\u{2603}', big = math.maxinteger, small = math.mininteger,\n"
                "}\n"
                "local s = json.encode(v)\n"
                "same(json.decode(s), v)\n"
                "eq(json.encode(json.decode(s)), s, 'text after a second round trip')\n");
}

/* The same through the C API, as the runner will call it. */
static void test_c_api(void **state)
{
    lua_State *L = *state;

    lua_getglobal(L, "json");
    lua_getfield(L, -1, "encode");
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, 7);
    lua_setfield(L, -2, "z");
    lua_pushnumber(L, 2.0);
    lua_setfield(L, -2, "a");
    assert_int_equal(lua_pcall(L, 1, 1, 0), LUA_OK);
    assert_string_equal(lua_tostring(L, -1), "{\"a\":2.0,\"z\":7}");
    lua_pop(L, 1);

    lua_getfield(L, -1, "decode");
    lua_pushliteral(L, "{\"a\": [1, 2");
    assert_int_equal(lua_pcall(L, 1, 1, 0), LUA_ERRRUN);
    assert_string_equal(lua_tostring(L, -1),
                        "json.decode: ']' expected near end of file at line 1 column 11 (byte 11)");
    lua_pop(L, 2);
    assert_int_equal(lua_gettop(L), 0);
}

/* Many failing calls in a row: the stack stays balanced and, under ASan, nothing leaks. */
static void test_errors_release_everything(void **state)
{
    run(*state,
        "local big = {}\n"
        "for i = 1, 1000 do big[i] = {i, tostring(i), {k = i + 0.5}} end\n"
        "big[1001] = print\n"
        "for _ = 1, 50 do\n"
        "  fails('cannot encode a function at value[1001]', json.encode, big)\n"
        "  fails('expected near end of file', json.decode, json.encode({big[1]}):sub(1, -2))\n"
        "end\n");
}

/* A Lua allocator with a budget, to make the Lua API fail in the middle of a conversion. */
struct budget {
    size_t used, limit;
};

static void *budget_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
    struct budget *b = ud;

    if (!p)
        osize = 0;
    if (nsize == 0) {
        free(p);
        b->used -= osize;
        return NULL;
    }
    if (nsize > osize && b->used + (nsize - osize) > b->limit)
        return NULL;
    p = realloc(p, nsize);
    if (p)
        b->used = b->used - osize + nsize;
    return p;
}

static int setup_budget(void **state)
{
    struct budget *b = calloc(1, sizeof(*b));
    lua_State *L;

    if (!b)
        return -1;
    b->limit = SIZE_MAX;
    L = lua_newstate(budget_alloc, b);
    if (!L) {
        free(b);
        return -1;
    }
    return install(L, state);
}

static int teardown_budget(void **state)
{
    void *b;

    lua_getallocf(*state, &b);
    lua_close(*state);
    free(b);
    return 0;
}

/* Out of Lua memory halfway: the error is Lua's own, and the jansson tree and text built so
 * far are freed (ASan's leak check fails the run otherwise). */
static void test_out_of_memory(void **state)
{
    static const char *const calls[][2] = {{"encode", "big"}, {"decode", "text"}};
    lua_State *L = *state;
    struct budget *b;

    lua_getallocf(L, (void **)&b);
    run(L, "big = {}\n"
           "for i = 1, 5000 do big[i] = {n = i, s = 'value ' .. i, f = i / 7} end\n"
           "text = json.encode(big)\n");
    for (size_t c = 0; c < sizeof(calls) / sizeof(calls[0]); c++) {
        for (size_t slack = 1024; slack <= 128 * 1024; slack *= 4) {
            lua_gc(L, LUA_GCCOLLECT);
            lua_getglobal(L, "json");
            lua_getfield(L, -1, calls[c][0]);
            lua_getglobal(L, calls[c][1]);
            b->limit = b->used + slack;
            int r = lua_pcall(L, 1, 1, 0);
            b->limit = SIZE_MAX;
            /* the largest budgets may suffice, depending on the build */
            if (r != LUA_OK || slack == 1024) {
                assert_int_equal(r, LUA_ERRMEM);
                assert_string_equal(lua_tostring(L, -1), "not enough memory");
            }
            lua_pop(L, 2);
        }
    }
    run(L, "eq(json.encode(json.decode(text)), text, 'after running out of memory')\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_encode_scalars, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_floats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_arrays, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_objects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_encode_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_null, setup, teardown),
        cmocka_unit_test_setup_teardown(test_decode_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_c_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_release_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_memory, setup_budget, teardown_budget),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
