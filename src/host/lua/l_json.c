/* The `json` global: Lua values to and from jansson trees. The semantics are documented in
 * l_json.h.
 *
 * Both directions convert inside a protected call whose jansson tree belongs to the outer
 * lua_CFunction: whatever the conversion raises (a bad value, a memory error from the Lua
 * API), the outer frame frees the tree and only then passes the error on. Every container is
 * linked into the tree before it is filled, so the tree always holds everything built. */
#include "l_json.h"

#include <jansson.h>
#include <lauxlib.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define JSON_MAX_DEPTH 200
/* Arrays up to this length may have any number of holes; longer ones must be half full. */
#define JSON_SPARSE_FREE 65536
#define JSON_TYPE_FIELD "__jsontype"
/* Enough for "%.0f" of any integral double: 309 digits, a sign and the NUL. */
#define JSON_KEY_BUF 320

struct json_step {
    const char *key; /* NULL: an array index */
    size_t len;
    lua_Integer index;
    bool quoted; /* the key was a string, not a number */
};

struct json_enc {
    json_t *root;                          /* owned by l_json_encode, freed there on every path */
    char *text;                            /* likewise */
    int precision;                         /* significant digits the reals need, at least */
    int depth;                             /* tables enclosing the value being encoded */
    const void *tables[JSON_MAX_DEPTH];    /* those tables, outermost first */
    struct json_step path[JSON_MAX_DEPTH]; /* path[i]: the way out of tables[i] */
    bool lossy; /* strings that are not UTF-8 get U+FFFD for each bad byte */
};

struct json_dec {
    json_t *root; /* owned by l_json_decode */
};

/* ASCII only: ctype.h would follow the locale, which a script can change. */
static bool isdigit_c(char c)
{
    return c >= '0' && c <= '9';
}
static bool isalpha_c(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Raise "json.encode: <fmt ...> at value<path>", the path being the first nsteps steps. */
static int enc_error(lua_State *L, const struct json_enc *e, int nsteps, const char *fmt, ...)
{
    luaL_Buffer b;
    va_list ap;

    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "json.encode: ");
    lua_pushvalue(L, -2);
    luaL_addvalue(&b);
    if (nsteps > 0)
        luaL_addstring(&b, " at value");
    /* A path through deep nesting is long and its tail is what locates the value. */
    if (nsteps > 12)
        luaL_addstring(&b, "...");
    for (int i = nsteps > 12 ? nsteps - 8 : 0; i < nsteps; i++) {
        const struct json_step *s = &e->path[i];
        bool name = s->quoted && s->len > 0 && s->len <= 40 && !isdigit_c(s->key[0]);

        if (!s->key) {
            lua_pushfstring(L, "[%I]", s->index);
            luaL_addvalue(&b);
            continue;
        }
        for (size_t k = 0; name && k < s->len; k++)
            name = s->key[k] == '_' || isalpha_c(s->key[k]) || isdigit_c(s->key[k]);
        if (name) {
            luaL_addchar(&b, '.');
            luaL_addlstring(&b, s->key, s->len);
            continue;
        }
        luaL_addstring(&b, s->quoted ? "[\"" : "[");
        /* Long or unprintable keys are shortened; the message names a place, not the key. */
        for (size_t k = 0; k < MIN(s->len, (size_t)40); k++) {
            unsigned char c = (unsigned char)s->key[k];
            luaL_addchar(&b, c < 0x20 || c == 0x7f || c == '"' || c == '\\' ? '?' : (char)c);
        }
        luaL_addstring(&b, s->len > 40 ? "...\"]" : s->quoted ? "\"]" : "]");
    }
    luaL_pushresult(&b);
    return lua_error(L);
}

/* Offset of the first byte that does not start well-formed UTF-8 (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF), or len when all of it is well-formed. */
static size_t utf8_invalid_at(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    while (i < len) {
        unsigned c = s[i];
        size_t n;
        uint32_t cp, min;

        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, cp = c & 0x0f, min = 0x800;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return i;
        }
        if (len - i <= n)
            return i;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += n + 1;
    }
    return len;
}

static bool real_reads_back(double v, int precision)
{
    char buf[40];

    snprintf(buf, sizeof(buf), "%.*g", precision, v);
    return strtod(buf, NULL) == v;
}

/* The fewest significant digits that print v so that it reads back the same (at most 17). */
static int real_precision(double v)
{
    int p = 1;

    while (p < 17 && !real_reads_back(v, p))
        p++;
    return p;
}

/* Whether every real in j reads back the same when printed with precision digits. Usually the
 * largest per-value precision does it, but a value whose shortest form rounds up can be missed
 * by a longer form that rounds down, hence the check. */
static bool reals_read_back(json_t *j, int precision)
{
    switch (json_typeof(j)) {
    case JSON_REAL: return real_reads_back(json_real_value(j), precision);
    case JSON_ARRAY:
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (!reals_read_back(json_array_get(j, i), precision))
                return false;
        }
        return true;
    case JSON_OBJECT:
        for (void *it = json_object_iter(j); it; it = json_object_iter_next(j, it)) {
            if (!reals_read_back(json_object_iter_value(it), precision))
                return false;
        }
        return true;
    default: return true;
    }
}

/* Link v into parent (under the current step's key) or make it the root. Takes v. */
static void attach(lua_State *L, struct json_enc *e, json_t *parent, json_t *v)
{
    int rc;

    if (!v)
        enc_error(L, e, e->depth, "out of memory");
    if (!parent) {
        e->root = v;
        return;
    }
    if (json_is_array(parent)) {
        rc = json_array_append_new(parent, v);
    } else {
        const struct json_step *s = &e->path[e->depth - 1];
        /* Keys were checked for UTF-8 by the caller. */
        rc = json_object_setn_new_nocheck(parent, s->key, s->len, v);
    }
    if (rc)
        enc_error(L, e, e->depth, "out of memory");
}

static void encode_value(lua_State *L, struct json_enc *e, int idx, json_t *parent);

/* Push the object key at idx as a string and return it; raise for keys JSON cannot have.
 * Numbers are formatted here: lua_tolstring would change the key under lua_next. */
static const char *push_key(lua_State *L, struct json_enc *e, int idx, size_t *ret_len)
{
    char buf[JSON_KEY_BUF];
    const char *key;
    size_t len, bad;
    double v;

    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        key = lua_tolstring(L, idx, &len);
        bad = utf8_invalid_at(key, len);
        if (bad < len)
            enc_error(L, e, e->depth, "object key is not valid UTF-8 (byte %d)", (int)bad + 1);
        lua_pushvalue(L, idx);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            lua_pushfstring(L, "%I", lua_tointeger(L, idx));
            break;
        }
        v = lua_tonumber(L, idx);
        if (isinf(v))
            enc_error(L, e, e->depth, "cannot use %s as an object key", v > 0 ? "inf" : "-inf");
        if (v == floor(v))
            snprintf(buf, sizeof(buf), "%.0f", v);
        else
            snprintf(buf, sizeof(buf), "%.*g", real_precision(v), v);
        lua_pushstring(L, buf);
        break;
    default: enc_error(L, e, e->depth, "cannot use a %s as an object key", luaL_typename(L, idx));
    }
    return lua_tolstring(L, -1, ret_len);
}

static void encode_object(lua_State *L, struct json_enc *e, int idx, json_t *parent)
{
    json_t *obj = json_object();
    int d = e->depth;

    attach(L, e, parent, obj);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        bool quoted = lua_type(L, -2) == LUA_TSTRING;
        size_t len;
        const char *key;

        key = push_key(L, e, lua_absindex(L, -2), &len);
        if (json_object_getn(obj, key, len))
            enc_error(L, e, d, "duplicate object key \"%s\"", key);
        e->path[d] = (struct json_step){key, len, 0, quoted};
        e->depth = d + 1;
        encode_value(L, e, lua_absindex(L, -2), obj);
        e->depth = d;
        lua_pop(L, 2);
    }
}

static void encode_array(lua_State *L, struct json_enc *e, int idx, json_t *parent, lua_Integer n)
{
    json_t *arr = json_array();
    int d = e->depth;

    attach(L, e, parent, arr);
    for (lua_Integer i = 1; i <= n; i++) {
        e->path[d] = (struct json_step){NULL, 0, i, false};
        lua_rawgeti(L, idx, i);
        e->depth = d + 1;
        encode_value(L, e, lua_gettop(L), arr);
        e->depth = d;
        lua_pop(L, 1);
    }
}

static void encode_table(lua_State *L, struct json_enc *e, int idx, json_t *parent)
{
    const void *self = lua_topointer(L, idx);
    int d = e->depth, kind;
    bool ints = true, as_array;
    lua_Integer max = 0, count = 0;

    for (int i = 0; i < d; i++) {
        if (e->tables[i] == self)
            enc_error(L, e, d, "cycle detected");
    }
    if (d >= JSON_MAX_DEPTH)
        enc_error(L, e, d, "nesting deeper than %d", JSON_MAX_DEPTH);
    e->tables[d] = self;
    luaL_checkstack(L, 6, "json.encode");

    lua_pushnil(L);
    while (lua_next(L, idx)) {
        count++;
        if (ints && lua_isinteger(L, -2) && lua_tointeger(L, -2) > 0)
            max = MAX(max, lua_tointeger(L, -2));
        else
            ints = false;
        lua_pop(L, 1);
    }
    as_array = ints && count > 0;

    kind = luaL_getmetafield(L, idx, JSON_TYPE_FIELD);
    if (kind != LUA_TNIL) {
        const char *want = lua_tostring(L, -1);

        if (kind != LUA_TSTRING || (strcmp(want, "array") && strcmp(want, "object")))
            enc_error(L, e, d,
                      "metatable field " JSON_TYPE_FIELD " must be \"array\" or \"object\"");
        as_array = !strcmp(want, "array");
        if (as_array && !ints)
            enc_error(L, e, d, "table marked as an array has a key that is not a positive integer");
        lua_pop(L, 1);
    }

    if (!as_array) {
        encode_object(L, e, idx, parent);
        return;
    }
    if (max > JSON_SPARSE_FREE && max / 2 > count)
        enc_error(L, e, d, "array too sparse: highest index %I, %I values", max, count);
    encode_array(L, e, idx, parent, max);
}

static void encode_value(lua_State *L, struct json_enc *e, int idx, json_t *parent)
{
    const char *s;
    size_t len, bad;
    double v;

    switch (lua_type(L, idx)) {
    case LUA_TNIL: attach(L, e, parent, json_null()); return;
    case LUA_TBOOLEAN: attach(L, e, parent, json_boolean(lua_toboolean(L, idx))); return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            attach(L, e, parent, json_integer(lua_tointeger(L, idx)));
            return;
        }
        v = lua_tonumber(L, idx);
        if (isnan(v))
            enc_error(L, e, e->depth, "cannot encode NaN");
        if (isinf(v))
            enc_error(L, e, e->depth, "cannot encode %s", v > 0 ? "inf" : "-inf");
        e->precision = MAX(e->precision, real_precision(v));
        attach(L, e, parent, json_real(v));
        return;
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        bad = utf8_invalid_at(s, len);
        if (bad < len && e->lossy) {
            struct buf b = BUF_INIT;
            while (bad < len) {
                buf_add(&b, s, bad);
                buf_adds(&b, "\xef\xbf\xbd");
                s += bad + 1;
                len -= bad + 1;
                bad = utf8_invalid_at(s, len);
            }
            buf_add(&b, s, len);
            attach(L, e, parent, json_stringn_nocheck(b.data ? b.data : "", b.len));
            buf_release(&b);
            return;
        }
        if (bad < len)
            enc_error(L, e, e->depth, "string is not valid UTF-8 (byte %d)", (int)bad + 1);
        attach(L, e, parent, json_stringn_nocheck(s, len));
        return;
    case LUA_TTABLE: encode_table(L, e, idx, parent); return;
    default: enc_error(L, e, e->depth, "cannot encode a %s", luaL_typename(L, idx));
    }
}

/* (enc lightuserdata, value) -> string; e->root and e->text are the caller's to free. */
static int json_encode_protected(lua_State *L)
{
    struct json_enc *e = lua_touserdata(L, 1);
    size_t flags = JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY;

    encode_value(L, e, 2, NULL);
    if (e->precision > 0) {
        while (e->precision < 17 && !reals_read_back(e->root, e->precision))
            e->precision++;
        flags |= JSON_REAL_PRECISION(e->precision);
    }
    e->text = json_dumps(e->root, flags);
    if (!e->text)
        return luaL_error(L, "json.encode: out of memory");
    lua_pushstring(L, e->text);
    return 1;
}

/* json.encode(value) -> string; as l_json_encode_lossy when the upvalue is true */
static int l_json_encode(lua_State *L)
{
    struct json_enc e = {.lossy = lua_toboolean(L, lua_upvalueindex(1))};
    int rc;

    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_pushcfunction(L, json_encode_protected);
    lua_pushlightuserdata(L, &e);
    lua_pushvalue(L, 1);
    rc = lua_pcall(L, 2, 1, 0);
    json_decref(e.root);
    free(e.text);
    if (rc != LUA_OK)
        return lua_error(L);
    return 1;
}

/* Push j as a Lua value. Stack index 2 holds the metatable for arrays. */
static void decode_value(lua_State *L, json_t *j, int depth)
{
    if ((json_is_object(j) || json_is_array(j)) && depth > JSON_MAX_DEPTH)
        luaL_error(L, "json.decode: nesting deeper than %d", JSON_MAX_DEPTH);
    luaL_checkstack(L, 4, "json.decode");
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        lua_createtable(L, 0, (int)MIN(json_object_size(j), (size_t)INT_MAX));
        for (void *it = json_object_iter(j); it; it = json_object_iter_next(j, it)) {
            if (json_is_null(json_object_iter_value(it)))
                continue;
            lua_pushlstring(L, json_object_iter_key(it), json_object_iter_key_len(it));
            decode_value(L, json_object_iter_value(it), depth + 1);
            lua_rawset(L, -3);
        }
        return;
    case JSON_ARRAY:
        lua_createtable(L, (int)MIN(json_array_size(j), (size_t)INT_MAX), 0);
        for (size_t i = 0; i < json_array_size(j); i++) {
            if (json_is_null(json_array_get(j, i)))
                continue;
            decode_value(L, json_array_get(j, i), depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_pushvalue(L, 2);
        lua_setmetatable(L, -2);
        return;
    case JSON_STRING: lua_pushlstring(L, json_string_value(j), json_string_length(j)); return;
    case JSON_INTEGER: lua_pushinteger(L, (lua_Integer)json_integer_value(j)); return;
    case JSON_REAL: lua_pushnumber(L, json_real_value(j)); return;
    case JSON_TRUE:
    case JSON_FALSE: lua_pushboolean(L, json_is_true(j)); return;
    case JSON_NULL: lua_pushnil(L); return;
    }
}

/* (dec lightuserdata, array metatable) -> value; d->root is the caller's to free. */
static int json_decode_protected(lua_State *L)
{
    const struct json_dec *d = lua_touserdata(L, 1);

    decode_value(L, d->root, 1);
    return 1;
}

/* json.decode(text) -> value */
static int l_json_decode(lua_State *L)
{
    struct json_dec d;
    json_error_t err;
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    int rc;

    d.root = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (!d.root)
        return luaL_error(L, "json.decode: %s at line %d column %d (byte %d)%s", err.text, err.line,
                          err.column, err.position,
                          json_error_code(&err) == json_error_numeric_overflow
                              ? "; numbers must fit a 64-bit integer or a double"
                              : "");
    lua_settop(L, 1);
    lua_pushcfunction(L, json_decode_protected);
    lua_pushlightuserdata(L, &d);
    lua_pushvalue(L, lua_upvalueindex(1));
    rc = lua_pcall(L, 2, 1, 0);
    json_decref(d.root);
    if (rc != LUA_OK)
        return lua_error(L);
    return 1;
}

int luaopen_provium_json(lua_State *L)
{
    lua_createtable(L, 0, 3);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, JSON_TYPE_FIELD);
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "array_mt");
    lua_pushcclosure(L, l_json_decode, 1);
    lua_setfield(L, -2, "decode");
    lua_pushboolean(L, 0);
    lua_pushcclosure(L, l_json_encode, 1);
    lua_setfield(L, -2, "encode");
    return 1;
}

void l_push_json_encode_lossy(lua_State *L)
{
    lua_pushboolean(L, 1);
    lua_pushcclosure(L, l_json_encode, 1);
}
