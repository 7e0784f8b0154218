/* The `json` global (reference section 18): json.encode and json.decode, built on jansson.
 *
 * json.encode(value) -> string
 *   Compact output with object keys sorted, so equal values give equal text.
 *   - nil -> null, booleans, strings (must be valid UTF-8; NUL bytes become \u0000).
 *   - Integers stay integers; floats stay floats ("1.0", not "1") and are printed with the
 *     fewest digits (one count for the whole document) that read back to the same double.
 *     NaN and infinities are errors.
 *   - A table whose keys are all positive integers is an array of length max(key), holes
 *     emitted as null: {[1]=1,[3]=3} -> [1,null,3]. An array longer than 65536 must be at
 *     least half full, so a stray t[1e9] = 1 is an error and not gigabytes of nulls.
 *   - An empty table is {}: a table cannot say whether it is an empty list or an empty map,
 *     and an object is what most JSON APIs accept for "nothing here". A metatable field
 *     __jsontype = "array" or "object" overrides the guess (json.array_mt carries "array",
 *     so setmetatable({}, json.array_mt) encodes as []).
 *   - Any other table is an object. Integer keys are written in decimal, integral float keys
 *     (only those beyond the integer range exist in Lua 5.4) as integers, other finite float
 *     keys with the fewest round-trip digits. A key that is a string equal to another key's
 *     text ({[1]=1, ["1"]=2}) is an error, since only one of them could survive.
 *   - Errors: cycles ("json.encode: cycle detected"), functions, userdata, threads, keys of
 *     other types, nesting deeper than 200 tables. Messages end with the place in the value,
 *     written as Lua: "... at value.items[3]".
 *   Tables are read raw: no __index, __pairs or __len.
 *
 * json.decode(text) -> value
 *   Any JSON value at top level. Integers are lua integers, exactly; other numbers floats.
 *   null -> nil: object members that are null are absent, arrays get holes. Arrays come back
 *   with json.array_mt as metatable so that they encode as arrays again, [] included.
 *   Duplicate object keys: the last one wins. Nesting deeper than 200 is an error.
 *   Integers outside the 64-bit range are an error ("too big integer near '...'"). The
 *   reference wraps 18446744073709551615 to -1; jansson refuses such a token and has no mode
 *   that keeps other integers exact while letting it through (JSON_DECODE_INT_AS_REAL turns
 *   every integer into a float), so a clear error is the closest faithful behaviour.
 *   Syntax errors read "json.decode: <what> at line L column C (byte B)".
 *
 * Wrong argument types raise the usual "bad argument" errors. No jansson memory outlives a
 * call, whichever way it ends. */
#pragma once

#include <lua.h>

/* Push a new table {encode = ..., decode = ..., array_mt = ...}. */
int luaopen_provium_json(lua_State *L);
/* json.encode that never fails on bytes: each byte that does not start
 * well-formed UTF-8 becomes U+FFFD. For a file's outcome, whose messages
 * may quote whatever a guest printed. */
void l_push_json_encode_lossy(lua_State *L);
