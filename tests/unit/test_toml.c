/* Unit tests for the TOML parser: a valid corpus checked value by value, and
 * a malformed corpus checked message by message, with positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>

#include "host/toml.h"
#include "util.h"

/* ---- helpers ---- */

static struct toml_table *parse_ok_len(const char *text, size_t len, int line)
{
    struct toml_table *t = NULL;
    struct toml_error err = {0};
    int r = toml_parse(text, len, &t, &err);
    if (r != 0 || !t)
        fail_msg("line %d: parse failed (r=%d) at %d:%d: %s\n--- input ---\n%.*s", line, r,
                 err.line, err.col, err.msg, (int)len, text);
    return t;
}
#define PARSE_OK(text) parse_ok_len((text), strlen(text), __LINE__)

/* Follow a dotted path of plain keys ("a.b.c"), through tables only. */
static const struct toml_value *lookup(const struct toml_table *t, const char *path)
{
    _cleanup_free_ char *copy = xstrdup(path);
    const struct toml_value *v = NULL;
    char *save = NULL;
    for (char *part = strtok_r(copy, ".", &save); part; part = strtok_r(NULL, ".", &save)) {
        if (v) {
            if (v->type != TOML_TABLE)
                return NULL;
            t = v->u.tab;
        }
        v = toml_get(t, part);
        if (!v)
            return NULL;
    }
    return v;
}

static const struct toml_value *typed(const struct toml_table *t, const char *path,
                                      enum toml_type type, int line)
{
    const struct toml_value *v = lookup(t, path);
    if (!v)
        fail_msg("line %d: `%s` not found", line, path);
    if (v->type != type)
        fail_msg("line %d: `%s` is %s, want %s", line, path, toml_type_name(v->type),
                 toml_type_name(type));
    return v;
}

static void check_str(const struct toml_value *v, const char *want, const char *what, int line)
{
    if (v->type != TOML_STRING)
        fail_msg("line %d: %s is %s, want string", line, what, toml_type_name(v->type));
    if (strcmp(v->u.s, want))
        fail_msg("line %d: %s: got \"%s\", want \"%s\"", line, what, v->u.s, want);
}

static void check_int(const struct toml_value *v, int64_t want, const char *what, int line)
{
    if (v->type != TOML_INT)
        fail_msg("line %d: %s is %s, want integer", line, what, toml_type_name(v->type));
    if (v->u.i != want)
        fail_msg("line %d: %s: got %lld, want %lld", line, what, (long long)v->u.i,
                 (long long)want);
}

static void check_float(const struct toml_value *v, double want, const char *what, int line)
{
    if (v->type != TOML_FLOAT)
        fail_msg("line %d: %s is %s, want float", line, what, toml_type_name(v->type));
    bool same = isnan(want) ? isnan(v->u.f) && !signbit(v->u.f) == !signbit(want)
                            : v->u.f == want && !signbit(v->u.f) == !signbit(want);
    if (!same)
        fail_msg("line %d: %s: got %.17g, want %.17g", line, what, v->u.f, want);
}

static void check_pos(int got_line, int got_col, int line, int col, const char *what, int at)
{
    if (got_line != line || got_col != col)
        fail_msg("line %d: %s at %d:%d, want %d:%d", at, what, got_line, got_col, line, col);
}

#define STR_AT(t, path, want) check_str(typed(t, path, TOML_STRING, __LINE__), want, path, __LINE__)
#define INT_AT(t, path, want) check_int(typed(t, path, TOML_INT, __LINE__), want, path, __LINE__)
#define FLOAT_AT(t, path, want)                                                                    \
    check_float(typed(t, path, TOML_FLOAT, __LINE__), want, path, __LINE__)
#define BOOL_AT(t, path, want) assert_int_equal(typed(t, path, TOML_BOOL, __LINE__)->u.b, (want))
#define ARR_AT(t, path) typed(t, path, TOML_ARRAY, __LINE__)
#define TAB_AT(t, path) (typed(t, path, TOML_TABLE, __LINE__)->u.tab)

static const struct toml_value *item(const struct toml_value *arr, size_t i, int line)
{
    if (arr->type != TOML_ARRAY)
        fail_msg("line %d: %s is not an array", line, toml_type_name(arr->type));
    if (i >= arr->u.arr.n)
        fail_msg("line %d: index %zu out of range (array has %zu items)", line, i, arr->u.arr.n);
    return arr->u.arr.items[i];
}
#define ITEM(arr, i) item((arr), (size_t)(i), __LINE__)
#define POS(v, l, c) check_pos((v)->line, (v)->col, l, c, #v, __LINE__)

/* ---- valid corpus ---- */

static void test_comments_and_empty(void **state)
{
    struct toml_table *t = PARSE_OK("");
    assert_int_equal(t->n, 0);
    toml_free(t);

    t = PARSE_OK("# only a comment\n\n   \t\n# another # with hashes\n");
    assert_int_equal(t->n, 0);
    toml_free(t);

    t = PARSE_OK("\xef\xbb\xbf"
                 "a = 1 # trailing comment\n"
                 "b = \"# not a comment\" #c\n"
                 "c = 3#tight");
    INT_AT(t, "a", 1);
    STR_AT(t, "b", "# not a comment");
    INT_AT(t, "c", 3);
    toml_free(t);
}

static void test_keys(void **state)
{
    struct toml_table *t = PARSE_OK("bare_key-1 = 1\n"
                                    "1234 = 2\n"
                                    "\"quoted key\" = 3\n"
                                    "'literal \"key\"' = 4\n"
                                    "\"\" = 5\n"
                                    "\"a.b\" = 6\n"
                                    "\"\\u00e9t\\u00e9\" = 7\n"
                                    "3.14 = 8\n"
                                    "site . \"google.com\" . 'x' = 9\n"
                                    "key=10\n");
    INT_AT(t, "bare_key-1", 1);
    INT_AT(t, "1234", 2);
    check_int(toml_get(t, "quoted key"), 3, "quoted key", __LINE__);
    check_int(toml_get(t, "literal \"key\""), 4, "literal key", __LINE__);
    check_int(toml_get(t, ""), 5, "empty key", __LINE__);
    check_int(toml_get(t, "a.b"), 6, "\"a.b\"", __LINE__);
    check_int(toml_get(t, "\xc3\xa9t\xc3\xa9"), 7, "unicode key", __LINE__);
    INT_AT(t, "3.14", 8); /* two keys: 3, then 14 */
    const struct toml_table *site = TAB_AT(t, "site");
    const struct toml_value *g = toml_get(site, "google.com");
    assert_non_null(g);
    assert_int_equal(g->type, TOML_TABLE);
    check_int(toml_get(g->u.tab, "x"), 9, "site.google.com.x", __LINE__);
    INT_AT(t, "key", 10);
    /* Definition order is kept. */
    assert_string_equal(t->keys[0], "bare_key-1");
    assert_string_equal(t->keys[t->n - 1], "key");
    toml_free(t);
}

static void test_strings(void **state)
{
    struct toml_table *t = PARSE_OK(
        "basic = \"tab\\there \\\"quoted\\\" back\\\\slash \\b\\f\\r\\n end\"\n"
        "unicode = \"\\u00e9 \\u20AC \\U0001F600 \\U0000004B\"\n"
        "literal = 'C:\\Users\\nodejs\\templates'\n"
        "literal_quote = 'Tom \"Dubs\" Preston-Werner'\n"
        "empty = \"\"\n"
        "empty_lit = ''\n"
        "utf8 = \"h\xc3\xa9llo \xe2\x82\xac\"\n"
        "ml = \"\"\"\n"
        "Roses are red\n"
        "Violets are blue\"\"\"\n"
        "ml_no_trim = \"\"\"  first\n"
        "second\"\"\"\n"
        "ml_join = \"\"\"\n"
        "The quick brown \\\n"
        "\n"
        "\n"
        "   fox jumps \\   \n"
        "   over the lazy dog.\\\n"
        "   \"\"\"\n"
        "ml_quotes = \"\"\"Here are two quotation marks: \"\". Simple enough.\"\"\"\n"
        "ml_end_quotes = \"\"\"\"This,\" she said, \"is just a pointless statement.\"\"\"\"\n"
        "ml_escape = \"\"\"a\\tb\\u00e9 \\\"\"\"\"\"\"\n"
        "ml_lit = '''\n"
        "The first newline is\n"
        "trimmed in raw strings.\n"
        "   All other whitespace\n"
        "   is preserved. \\n stays.\n"
        "'''\n"
        "ml_lit_quotes = '''Here are fifteen quotation marks: \"\"\"\"\"\"\"\"\"\"\"\"\"\"\"'''\n"
        "ml_lit_end = ''''That,' she said, 'is still pointless.''''\n"
        "tab_inside = \"a\tb\"\n");
    STR_AT(t, "basic", "tab\there \"quoted\" back\\slash \b\f\r\n end");
    STR_AT(t, "unicode", "\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 K");
    STR_AT(t, "literal", "C:\\Users\\nodejs\\templates");
    STR_AT(t, "literal_quote", "Tom \"Dubs\" Preston-Werner");
    STR_AT(t, "empty", "");
    STR_AT(t, "empty_lit", "");
    STR_AT(t, "utf8", "h\xc3\xa9llo \xe2\x82\xac");
    STR_AT(t, "ml", "Roses are red\nViolets are blue");
    STR_AT(t, "ml_no_trim", "  first\nsecond");
    STR_AT(t, "ml_join", "The quick brown fox jumps over the lazy dog.");
    STR_AT(t, "ml_quotes", "Here are two quotation marks: \"\". Simple enough.");
    STR_AT(t, "ml_end_quotes", "\"This,\" she said, \"is just a pointless statement.\"");
    STR_AT(t, "ml_escape", "a\tb\xc3\xa9 \"\"\"");
    STR_AT(t, "ml_lit",
           "The first newline is\ntrimmed in raw strings.\n   All other whitespace\n"
           "   is preserved. \\n stays.\n");
    STR_AT(t, "ml_lit_quotes", "Here are fifteen quotation marks: \"\"\"\"\"\"\"\"\"\"\"\"\"\"\"");
    STR_AT(t, "ml_lit_end", "'That,' she said, 'is still pointless.'");
    STR_AT(t, "tab_inside", "a\tb");
    toml_free(t);
}

static void test_crlf(void **state)
{
    struct toml_table *t = PARSE_OK("a = 1\r\n"
                                    "# comment\r\n"
                                    "s = \"\"\"\r\n"
                                    "x\r\n"
                                    "y \\\r\n"
                                    "  z\"\"\"\r\n"
                                    "[t]\r\n"
                                    "b = [\r\n"
                                    "  1,\r\n"
                                    "]\r\n");
    INT_AT(t, "a", 1);
    STR_AT(t, "s", "x\ny z");
    const struct toml_value *b = typed(t, "t.b", TOML_ARRAY, __LINE__);
    POS(b, 8, 5);
    check_int(ITEM(b, 0), 1, "t.b[0]", __LINE__);
    toml_free(t);
}

static void test_integers(void **state)
{
    struct toml_table *t = PARSE_OK("a = 99\n"
                                    "b = +42\n"
                                    "c = 0\n"
                                    "d = -17\n"
                                    "e = +0\n"
                                    "f = -0\n"
                                    "g = 1_000\n"
                                    "h = 5_349_221\n"
                                    "i = 1_2_3_4_5\n"
                                    "hex1 = 0xDEADBEEF\n"
                                    "hex2 = 0xdeadbeef\n"
                                    "hex3 = 0xdead_beef\n"
                                    "hex4 = 0x00ff\n"
                                    "oct1 = 0o01234567\n"
                                    "oct2 = 0o755\n"
                                    "bin1 = 0b11010110\n"
                                    "bin2 = 0b1_0\n"
                                    "max = 9223372036854775807\n"
                                    "min = -9223372036854775808\n"
                                    "hexmax = 0x7fffffffffffffff\n");
    INT_AT(t, "a", 99);
    INT_AT(t, "b", 42);
    INT_AT(t, "c", 0);
    INT_AT(t, "d", -17);
    INT_AT(t, "e", 0);
    INT_AT(t, "f", 0);
    INT_AT(t, "g", 1000);
    INT_AT(t, "h", 5349221);
    INT_AT(t, "i", 12345);
    INT_AT(t, "hex1", 0xDEADBEEF);
    INT_AT(t, "hex2", 0xDEADBEEF);
    INT_AT(t, "hex3", 0xDEADBEEF);
    INT_AT(t, "hex4", 255);
    INT_AT(t, "oct1", 01234567);
    INT_AT(t, "oct2", 0755);
    INT_AT(t, "bin1", 214);
    INT_AT(t, "bin2", 2);
    INT_AT(t, "max", INT64_MAX);
    INT_AT(t, "min", INT64_MIN);
    INT_AT(t, "hexmax", INT64_MAX);
    toml_free(t);
}

static void test_floats(void **state)
{
    struct toml_table *t = PARSE_OK("a = +1.0\n"
                                    "b = 3.1415\n"
                                    "c = -0.01\n"
                                    "d = 5e+22\n"
                                    "e = 1e06\n"
                                    "f = -2E-2\n"
                                    "g = 6.626e-34\n"
                                    "h = 224_617.445_991_228\n"
                                    "i = 0.0\n"
                                    "j = -0.0\n"
                                    "k = 1e1_0\n"
                                    "l = inf\n"
                                    "m = +inf\n"
                                    "n = -inf\n"
                                    "o = nan\n"
                                    "p = +nan\n"
                                    "q = -nan\n"
                                    "r = 1e-400\n"
                                    "s = 0e0\n");
    FLOAT_AT(t, "a", 1.0);
    FLOAT_AT(t, "b", 3.1415);
    FLOAT_AT(t, "c", -0.01);
    FLOAT_AT(t, "d", 5e22);
    FLOAT_AT(t, "e", 1e6);
    FLOAT_AT(t, "f", -2e-2);
    FLOAT_AT(t, "g", 6.626e-34);
    FLOAT_AT(t, "h", 224617.445991228);
    FLOAT_AT(t, "i", 0.0);
    FLOAT_AT(t, "j", -0.0);
    FLOAT_AT(t, "k", 1e10);
    FLOAT_AT(t, "l", INFINITY);
    FLOAT_AT(t, "m", INFINITY);
    FLOAT_AT(t, "n", -INFINITY);
    FLOAT_AT(t, "o", NAN);
    FLOAT_AT(t, "p", NAN);
    FLOAT_AT(t, "q", -NAN);
    FLOAT_AT(t, "r", 0.0); /* underflow rounds to zero; not an error */
    FLOAT_AT(t, "s", 0.0);
    toml_free(t);
}

static void test_booleans(void **state)
{
    struct toml_table *t = PARSE_OK("yes = true\nno = false\n");
    BOOL_AT(t, "yes", true);
    BOOL_AT(t, "no", false);
    toml_free(t);
}

static void test_arrays(void **state)
{
    struct toml_table *t = PARSE_OK("empty = []\n"
                                    "empty_ws = [ \n\n ]\n"
                                    "ints = [1, 2, 3]\n"
                                    "mixed = [1, \"two\", 3.0, true, [4], {five = 5}]\n"
                                    "nested = [[1, 2], ['a', \"b\"], [[[]]]]\n"
                                    "multi = [\n"
                                    "  1, # one\n"
                                    "  # a comment line\n"
                                    "  2\n"
                                    "  ,\n"
                                    "  3,   \n"
                                    "]\n"
                                    "trailing = [1,2,]\n"
                                    "tables = [ { x = 1, y = 2 }, { x = 3 } ]\n");
    assert_int_equal(ARR_AT(t, "empty")->u.arr.n, 0);
    assert_int_equal(ARR_AT(t, "empty_ws")->u.arr.n, 0);
    const struct toml_value *a = ARR_AT(t, "ints");
    assert_int_equal(a->u.arr.n, 3);
    for (int i = 0; i < 3; i++)
        check_int(ITEM(a, i), i + 1, "ints[i]", __LINE__);

    a = ARR_AT(t, "mixed");
    assert_int_equal(a->u.arr.n, 6);
    check_int(ITEM(a, 0), 1, "mixed[0]", __LINE__);
    check_str(ITEM(a, 1), "two", "mixed[1]", __LINE__);
    check_float(ITEM(a, 2), 3.0, "mixed[2]", __LINE__);
    assert_int_equal(ITEM(a, 3)->type, TOML_BOOL);
    assert_int_equal(ITEM(a, 4)->type, TOML_ARRAY);
    assert_int_equal(ITEM(a, 5)->type, TOML_TABLE);
    check_int(toml_get(ITEM(a, 5)->u.tab, "five"), 5, "mixed[5].five", __LINE__);

    a = ARR_AT(t, "nested");
    assert_int_equal(a->u.arr.n, 3);
    check_int(ITEM(ITEM(a, 0), 1), 2, "nested[0][1]", __LINE__);
    check_str(ITEM(ITEM(a, 1), 0), "a", "nested[1][0]", __LINE__);
    assert_int_equal(ITEM(ITEM(ITEM(a, 2), 0), 0)->u.arr.n, 0);

    a = ARR_AT(t, "multi");
    assert_int_equal(a->u.arr.n, 3);
    check_int(ITEM(a, 2), 3, "multi[2]", __LINE__);
    POS(ITEM(a, 0), 9, 3);
    POS(ITEM(a, 1), 11, 3);

    assert_int_equal(ARR_AT(t, "trailing")->u.arr.n, 2);
    a = ARR_AT(t, "tables");
    assert_int_equal(a->u.arr.n, 2);
    check_int(toml_get(ITEM(a, 0)->u.tab, "y"), 2, "tables[0].y", __LINE__);
    check_int(toml_get(ITEM(a, 1)->u.tab, "x"), 3, "tables[1].x", __LINE__);
    toml_free(t);
}

static void test_inline_tables(void **state)
{
    struct toml_table *t = PARSE_OK("name = { first = \"Tom\", last = \"Preston-Werner\" }\n"
                                    "point = {x=1,y=2}\n"
                                    "empty = {}\n"
                                    "nested = { a = { b = { c = 1 } }, d = [1, { e = 2 }] }\n"
                                    "dotted = { type.name = \"pug\", type.size = 3 }\n");
    STR_AT(t, "name.first", "Tom");
    STR_AT(t, "name.last", "Preston-Werner");
    INT_AT(t, "point.x", 1);
    INT_AT(t, "point.y", 2);
    assert_int_equal(TAB_AT(t, "empty")->n, 0);
    INT_AT(t, "nested.a.b.c", 1);
    const struct toml_value *d = typed(t, "nested.d", TOML_ARRAY, __LINE__);
    check_int(toml_get(ITEM(d, 1)->u.tab, "e"), 2, "nested.d[1].e", __LINE__);
    STR_AT(t, "dotted.type.name", "pug");
    INT_AT(t, "dotted.type.size", 3);
    POS(typed(t, "point", TOML_TABLE, __LINE__), 2, 9);
    POS(TAB_AT(t, "point"), 2, 9);
    toml_free(t);
}

static void test_tables(void **state)
{
    struct toml_table *t = PARSE_OK("top = 0\n"
                                    "[table]\n"
                                    "key = \"value\"\n"
                                    "[ dog . \"tater.man\" ]\n"
                                    "type.name = \"pug\"\n"
                                    "[x.y.z.w] # implicit x, x.y, x.y.z\n"
                                    "[x] # defining a super-table afterwards is fine\n"
                                    "k = 1\n"
                                    "[fruit]\n"
                                    "apple.color = \"red\"\n"
                                    "apple.taste.sweet = true\n"
                                    "[fruit.apple.texture] # a sub-table of a dotted table\n"
                                    "smooth = true\n"
                                    "[empty]\n"
                                    "['quoted table']\n"
                                    "q = 1\n");
    INT_AT(t, "top", 0);
    STR_AT(t, "table.key", "value");
    const struct toml_value *dog = toml_get(TAB_AT(t, "dog"), "tater.man");
    assert_non_null(dog);
    check_str(lookup(dog->u.tab, "type.name"), "pug", "dog.tater.man.type.name", __LINE__);
    assert_int_equal(TAB_AT(t, "x.y.z.w")->n, 0);
    INT_AT(t, "x.k", 1);
    STR_AT(t, "fruit.apple.color", "red");
    BOOL_AT(t, "fruit.apple.taste.sweet", true);
    BOOL_AT(t, "fruit.apple.texture.smooth", true);
    assert_int_equal(TAB_AT(t, "empty")->n, 0);
    check_int(toml_get(toml_get(t, "quoted table")->u.tab, "q"), 1, "quoted table.q", __LINE__);

    /* Positions: a header table is where its '[' is; [x] redefines x's
     * position, which was first the implicit [x.y.z.w]. */
    POS(TAB_AT(t, "table"), 2, 1);
    POS(TAB_AT(t, "x"), 7, 1);
    POS(TAB_AT(t, "x.y"), 6, 1);
    POS(TAB_AT(t, "fruit.apple"), 10, 1);
    POS(TAB_AT(t, "fruit.apple.taste"), 11, 7);
    POS(typed(t, "table.key", TOML_STRING, __LINE__), 3, 7);
    POS(t, 1, 1);
    toml_free(t);
}

static void test_array_of_tables(void **state)
{
    struct toml_table *t = PARSE_OK("[[products]]\n"
                                    "name = \"Hammer\"\n"
                                    "sku = 738594937\n"
                                    "\n"
                                    "[[products]]  # empty table within the array\n"
                                    "\n"
                                    "[[products]]\n"
                                    "name = \"Nail\"\n"
                                    "color = \"gray\"\n"
                                    "\n"
                                    "[[fruits]]\n"
                                    "name = \"apple\"\n"
                                    "[fruits.physical]  # subtable of the last fruits element\n"
                                    "color = \"red\"\n"
                                    "[[fruits.varieties]]\n"
                                    "name = \"red delicious\"\n"
                                    "[[fruits.varieties]]\n"
                                    "name = \"granny smith\"\n"
                                    "[[fruits]]\n"
                                    "name = \"banana\"\n"
                                    "[[fruits.varieties]]\n"
                                    "name = \"plantain\"\n"
                                    "[fruit]\n"
                                    "apple.color = \"red\"\n"
                                    "[[fruit.apple.seeds]]\n"
                                    "size = 2\n");
    const struct toml_value *p = ARR_AT(t, "products");
    assert_int_equal(p->u.arr.n, 3);
    check_str(toml_get(ITEM(p, 0)->u.tab, "name"), "Hammer", "products[0].name", __LINE__);
    check_int(toml_get(ITEM(p, 0)->u.tab, "sku"), 738594937, "products[0].sku", __LINE__);
    assert_int_equal(ITEM(p, 1)->u.tab->n, 0);
    check_str(toml_get(ITEM(p, 2)->u.tab, "color"), "gray", "products[2].color", __LINE__);
    POS(ITEM(p, 1), 5, 1);

    const struct toml_value *f = ARR_AT(t, "fruits");
    assert_int_equal(f->u.arr.n, 2);
    const struct toml_table *apple = ITEM(f, 0)->u.tab;
    check_str(lookup(apple, "physical.color"), "red", "fruits[0].physical.color", __LINE__);
    const struct toml_value *v = toml_get(apple, "varieties");
    assert_int_equal(v->u.arr.n, 2);
    check_str(toml_get(ITEM(v, 1)->u.tab, "name"), "granny smith", "variety", __LINE__);
    v = toml_get(ITEM(f, 1)->u.tab, "varieties");
    assert_int_equal(v->u.arr.n, 1);
    check_str(toml_get(ITEM(v, 0)->u.tab, "name"), "plantain", "variety", __LINE__);

    const struct toml_value *seeds = typed(t, "fruit.apple.seeds", TOML_ARRAY, __LINE__);
    check_int(toml_get(ITEM(seeds, 0)->u.tab, "size"), 2, "seeds[0].size", __LINE__);
    toml_free(t);
}

static void test_many_keys(void **state)
{
    /* Enough keys to use the hash index; every one must still be found. */
    struct buf b = BUF_INIT;
    for (int i = 0; i < 5000; i++)
        buf_addf(&b, "key%d = %d\n", i, i);
    struct toml_table *t = parse_ok_len(b.data, b.len, __LINE__);
    assert_int_equal(t->n, 5000);
    for (int i = 0; i < 5000; i++) {
        char k[32];
        snprintf(k, sizeof(k), "key%d", i);
        check_int(toml_get(t, k), i, k, __LINE__);
    }
    assert_null(toml_get(t, "key5000"));
    assert_null(toml_get(t, "nope"));
    toml_free(t);
    buf_release(&b);

    /* And a duplicate among them is still caught. */
    b = (struct buf)BUF_INIT;
    for (int i = 0; i < 100; i++)
        buf_addf(&b, "k%d = 1\n", i);
    buf_adds(&b, "k57 = 2\n");
    struct toml_error err;
    t = (struct toml_table *)(uintptr_t)1;
    assert_int_equal(toml_parse(b.data, b.len, &t, &err), -EINVAL);
    assert_null(t);
    assert_string_equal(err.msg, "duplicate key `k57`");
    assert_int_equal(err.line, 101);
    assert_int_equal(err.col, 1);
    buf_release(&b);
}

static void test_api_edges(void **state)
{
    toml_free(NULL);
    assert_null(toml_get(NULL, "a"));
    assert_string_equal(toml_type_name(TOML_STRING), "string");
    assert_string_equal(toml_type_name(TOML_INT), "integer");
    assert_string_equal(toml_type_name(TOML_FLOAT), "float");
    assert_string_equal(toml_type_name(TOML_BOOL), "boolean");
    assert_string_equal(toml_type_name(TOML_ARRAY), "array");
    assert_string_equal(toml_type_name(TOML_TABLE), "table");

    /* Not NUL-terminated: only len bytes are read. */
    const char text[] = {'a', ' ', '=', ' ', '1', '2', '3'};
    struct toml_table *t = parse_ok_len(text, 5, __LINE__);
    INT_AT(t, "a", 1);
    toml_free(t);

    /* err may be NULL. */
    t = NULL;
    assert_int_equal(toml_parse("a = ", 4, &t, NULL), -EINVAL);
    assert_null(t);
    assert_int_equal(toml_parse(NULL, 0, &t, NULL), 0);
    assert_int_equal(t->n, 0);
    toml_free(t);
}

/* ---- malformed corpus ---- */

struct bad_case {
    const char *text;
    int line, col;
    const char *msg;
};

static const struct bad_case bad_cases[] = {
    /* strings */
    {"a = \"abc\nb = 1\n", 1, 5, "unterminated string"},
    {"a = \"abc", 1, 5, "unterminated string"},
    {"a = 'abc\n", 1, 5, "unterminated string"},
    {"x = 1\na = \"\"\"abc\n\n", 2, 5, "unterminated multi-line string"},
    {"a = '''abc''", 1, 5, "unterminated multi-line string"},
    {"a = \"ab\\qc\"", 1, 8, "invalid escape `\\q`"},
    {"a = \"\\x41\"", 1, 6, "invalid escape `\\x`"},
    {"a = \"\\e\"", 1, 6, "invalid escape `\\e`"},
    {"a = \"a\\ b\"", 1, 7, "invalid escape: `\\` followed by ` `"},
    {"a = \"abc\\\nd\"", 1, 9, "invalid escape: `\\` followed by newline"},
    {"a = \"\\u12\"", 1, 6, "invalid escape `\\u`: expected 4 hex digits"},
    {"a = \"\\U0001F60\"", 1, 6, "invalid escape `\\U`: expected 8 hex digits"},
    {"a = \"\\uD800\"", 1, 6, "invalid escape `\\uD800`: not a Unicode scalar value"},
    {"a = \"\\U00110000\"", 1, 6, "invalid escape `\\U00110000`: not a Unicode scalar value"},
    {"a = \"\\u0000\"", 1, 6, "escape `\\u0000` (NUL) is not supported"},
    {"a = \"\"\"\nx \\q\"\"\"", 2, 3, "invalid escape `\\q`"},
    {"a = \"x\x01y\"", 1, 7, "control character U+0001 in string"},
    {"a = \"x\x7fy\"", 1, 7, "control character U+007F in string"},
    {"a = 'x\ry'", 1, 7, "control character U+000D in string"},
    {"a = \"\"\"x\ry\"\"\"", 1, 9, "control character U+000D in string"},
    {"a = \"\"\"x\"\"\"\"\"\"", 1, 14, "unexpected `\"` after value"},
    {"\"\"\"k\"\"\" = 1", 1, 1, "a multi-line string cannot be a key"},
    /* keys and key/value pairs */
    {"a = 1\na = 2\n", 2, 1, "duplicate key `a`"},
    {"a.b = 1\n\"a\".'b' = 2\n", 2, 1, "duplicate key `a.b`"},
    {"[t]\nx = 1\ny = 2\nx = 3\n", 4, 1, "duplicate key `x`"},
    {"\"a b\".c = 1\n'a b'.c = 2\n", 2, 1, "duplicate key `\"a b\".c`"},
    {"a = {x = 1, x = 2}", 1, 13, "duplicate key `x`"},
    {"a 1", 1, 3, "expected `=` after key `a`, found `1`"},
    {"name\n", 1, 5, "expected `=` after key `name`, found newline"},
    {"a.b", 1, 4, "expected `=` after key `a.b`, found end of input"},
    {"a == 1", 1, 4, "expected a value, found `=`"},
    {"= 1", 1, 1, "expected a key, found `=`"},
    {"a. = 1", 1, 4, "expected a key, found `=`"},
    {"a = ", 1, 5, "expected a value, found end of input"},
    {"a =\nb = 1", 1, 4, "expected a value, found newline"},
    {"a = 1 2", 1, 7, "unexpected `2` after value"},
    {"a = \"x\" b = 1", 1, 9, "unexpected `b` after value"},
    {"a = true1", 1, 9, "unexpected `1` after value"},
    {"a = [1] ]", 1, 9, "unexpected `]` after value"},
    {"a = bzImage", 1, 5, "invalid value `bzImage` (strings need quotes)"},
    {"a = True", 1, 5, "invalid value `True` (strings need quotes)"},
    {"a = \xc3\xa9", 1, 5, "expected a value, found `\xc3\xa9`"},
    /* numbers */
    {"a = 01", 1, 5, "invalid number `01`"},
    {"a = -012", 1, 5, "invalid number `-012`"},
    {"a = 0_0", 1, 5, "invalid number `0_0`"},
    {"a = 1__2", 1, 5, "invalid number `1__2`"},
    {"a = _1", 1, 5, "invalid value `_1` (strings need quotes)"},
    {"a = 1_", 1, 5, "invalid number `1_`"},
    {"a = 0x_ff", 1, 5, "invalid number `0x_ff`"},
    {"a = 0x", 1, 5, "invalid number `0x`"},
    {"a = 0xG", 1, 5, "invalid number `0xG`"},
    {"a = 0o8", 1, 5, "invalid number `0o8`"},
    {"a = 0b102", 1, 5, "invalid number `0b102`"},
    {"a = +0x10", 1, 5, "invalid number `+0x10`"},
    {"a = 0X10", 1, 5, "invalid number `0X10`"},
    {"a = 1.", 1, 5, "invalid number `1.`"},
    {"a = .5", 1, 5, "expected a value, found `.`"},
    {"a = 1.e5", 1, 5, "invalid number `1.e5`"},
    {"a = 1e", 1, 5, "invalid number `1e`"},
    {"a = 1e_5", 1, 5, "invalid number `1e_5`"},
    {"a = 1.2.3", 1, 5, "invalid number `1.2.3`"},
    {"a = 1_.5", 1, 5, "invalid number `1_.5`"},
    {"a = ++1", 1, 5, "invalid number `++1`"},
    {"a = infinity", 1, 5, "invalid number `infinity`"},
    {"a = nan1", 1, 5, "invalid number `nan1`"},
    {"a = Inf", 1, 5, "invalid value `Inf` (strings need quotes)"},
    {"a = 9223372036854775808", 1, 5, "integer `9223372036854775808` is out of range"},
    {"a = -9223372036854775809", 1, 5, "integer `-9223372036854775809` is out of range"},
    {"a = 0x8000000000000000", 1, 5, "integer `0x8000000000000000` is out of range"},
    {"a = 1e999", 1, 5, "number `1e999` is out of range"},
    {"a = 123456789012345678901234567890123456789012345678", 1, 5,
     "integer `1234567890123456789012345678901234567890...` is out of range"},
    {"a = 1979-05-27", 1, 5, "datetimes are not supported"},
    {"a = 1979-05-27T07:32:00Z", 1, 5, "datetimes are not supported"},
    {"a = 07:32:00", 1, 5, "datetimes are not supported"},
    {"a = [1979-05-27]", 1, 6, "datetimes are not supported"},
    /* arrays and inline tables */
    {"a = [1, 2", 1, 5, "unterminated array"},
    {"a = [1,\n2,\n", 1, 5, "unterminated array"},
    {"x = 0\na = [[1], [2]", 2, 5, "unterminated array"},
    {"a = [1 2]", 1, 8, "expected `,` or `]` in array, found `2`"},
    {"a = [1,,2]", 1, 8, "expected a value, found `,`"},
    {"a = [,]", 1, 6, "expected a value, found `,`"},
    {"a = {b = 1", 1, 5, "unterminated inline table"},
    {"a = {b = 1\n}", 1, 5, "unterminated inline table"},
    {"a = {\nb = 1}", 1, 5, "unterminated inline table"},
    {"a = {b = 1,}", 1, 12, "trailing comma in inline table"},
    {"a = {b = 1 c = 2}", 1, 12, "expected `,` or `}` in inline table, found `c`"},
    {"a = {,}", 1, 6, "expected a key, found `,`"},
    {"a = {b}", 1, 7, "expected `=` after key `b`, found `}`"},
    /* tables */
    {"[a]\n[a]\n", 2, 1, "duplicate table `[a]`"},
    {"[a.b]\n[a]\n[a]\n", 3, 1, "duplicate table `[a]`"},
    {"[a]\nb.c = 1\n[a.b]\n", 3, 1, "duplicate table `[a.b]` (already defined by dotted keys)"},
    {"[fruit]\napple.taste.sweet = true\n[fruit.apple.taste]\n", 3, 1,
     "duplicate table `[fruit.apple.taste]` (already defined by dotted keys)"},
    {"a = {}\n[a]\n", 2, 1, "duplicate table `[a]` (already defined inline)"},
    {"a = 1\n[a]\n", 2, 2, "key `a` is an integer, not a table"},
    {"a = \"s\"\n[a.b]\n", 2, 2, "key `a` is a string, not a table"},
    {"[a]\nb = [1]\n[a.b.c]\n", 3, 4, "key `a.b` is an array, not a table"},
    {"a = 1\na.b = 2\n", 2, 1, "key `a` is an integer, not a table"},
    {"a.b = 1\na.b.c = 2\n", 2, 3, "key `a.b` is an integer, not a table"},
    {"a = {b = 1}\na.c = 2\n", 2, 1, "inline table `a` cannot be extended"},
    {"a = {b = {}}\n[a.b.c]\n", 2, 2, "inline table `a` cannot be extended"},
    {"[a.b.c]\nz = 9\n[a]\nb.c.t = 1\n", 4, 1,
     "table `b` is defined elsewhere and cannot be extended with dotted keys"},
    {"[a]\n[b]\n[a.x]\ny=1\n[a]\nx.z = 1\n", 5, 1, "duplicate table `[a]`"},
    {"[[a]]\n[a]\n", 2, 2, "key `a` is an array of tables, not a table"},
    {"a = [1]\n[[a]]\n", 2, 3, "cannot append to static array `a`"},
    {"[a]\n[[a]]\n", 2, 3, "key `a` is a table, not an array of tables"},
    {"a = 1\n[[a]]\n", 2, 3, "key `a` is an integer, not an array of tables"},
    {"[[a.b]]\n[a]\nb.y = 2\n", 3, 1, "key `b` is an array, not a table"},
    {"[a", 1, 3, "expected `]` to close the table header, found end of input"},
    {"[a\n]", 1, 3, "expected `]` to close the table header, found newline"},
    {"[[a]\n", 1, 4, "expected `]]` to close the table header, found `]`"},
    {"[[a] ]\n", 1, 4, "expected `]]` to close the table header, found `]`"},
    {"[]\n", 1, 2, "expected a key, found `]`"},
    {"[a.]\n", 1, 4, "expected a key, found `]`"},
    {"[a] b = 1\n", 1, 5, "unexpected `b` after table header"},
    {"[a]]\n", 1, 4, "unexpected `]` after table header"},
    /* bytes */
    {"a = 1\rb = 2", 1, 6, "carriage return not followed by a newline"},
    {"# c\x01\n", 1, 4, "control character U+0001 in comment"},
    {"# c\x7f\n", 1, 4, "control character U+007F in comment"},
    {"a = \"\xff\"", 1, 6, "invalid UTF-8"},
    {"a = \"\xc0\xaf\"", 1, 6, "invalid UTF-8"},                           /* overlong */
    {"a = \"\xed\xa0\x80\"", 1, 6, "invalid UTF-8"},                       /* surrogate */
    {"a = \"\xf4\x90\x80\x80\"", 1, 6, "invalid UTF-8"},                   /* above U+10FFFF */
    {"# ok\n# \xe2\x82\n", 2, 3, "invalid UTF-8"},                         /* truncated */
    {"a = 1\n\xef\xbb\xbf", 2, 1, "expected a key, found `\xef\xbb\xbf`"}, /* BOM mid-file */
};

static void test_malformed(void **state)
{
    int failures = 0;
    for (size_t i = 0; i < ARRAY_SIZE(bad_cases); i++) {
        const struct bad_case *c = &bad_cases[i];
        struct toml_table *t = (struct toml_table *)(uintptr_t)1;
        struct toml_error err;
        memset(&err, 0x55, sizeof(err));
        int r = toml_parse(c->text, strlen(c->text), &t, &err);
        if (r == 0) {
            print_error("case %zu: parsed, want error %d:%d `%s`\n--- input ---\n%s\n", i, c->line,
                        c->col, c->msg, c->text);
            toml_free(t);
            failures++;
            continue;
        }
        if (r != -EINVAL || t != NULL || strcmp(err.msg, c->msg) || err.line != c->line ||
            err.col != c->col) {
            print_error("case %zu: got r=%d %d:%d `%s`\n"
                        "         want r=%d %d:%d `%s`\n--- input ---\n%s\n",
                        i, r, err.line, err.col, err.msg, -EINVAL, c->line, c->col, c->msg,
                        c->text);
            failures++;
        }
    }
    if (failures)
        fail_msg("%d malformed case(s) failed", failures);
}

static void expect_error_len(const char *text, size_t len, int line, int col, const char *msg,
                             int at)
{
    struct toml_table *t = NULL;
    struct toml_error err = {0};
    int r = toml_parse(text, len, &t, &err);
    if (r != -EINVAL || t || err.line != line || err.col != col || strcmp(err.msg, msg))
        fail_msg("line %d: got r=%d %d:%d `%s`, want r=%d %d:%d `%s`", at, r, err.line, err.col,
                 err.msg, -EINVAL, line, col, msg);
    toml_free(t);
}

static void test_nul_byte(void **state)
{
    const char text[] = "a = 1\nb = \"x\0y\"\n";
    expect_error_len(text, sizeof(text) - 1, 2, 7, "NUL byte in input", __LINE__);
    const char text2[] = "\0";
    expect_error_len(text2, 1, 1, 1, "NUL byte in input", __LINE__);
}

static char *repeat(const char *s, int n)
{
    struct buf b = BUF_INIT;
    for (int i = 0; i < n; i++)
        buf_adds(&b, s);
    buf_add(&b, "", 0);
    return buf_steal(&b);
}

static void test_depth_limit(void **state)
{
    char msg[64];
    snprintf(msg, sizeof(msg), "nesting too deep (limit is %d)", TOML_MAX_DEPTH);

    /* Arrays: TOML_MAX_DEPTH levels parse, one more does not. */
    _cleanup_free_ char *open_ok = repeat("[", TOML_MAX_DEPTH);
    _cleanup_free_ char *close_ok = repeat("]", TOML_MAX_DEPTH);
    _cleanup_free_ char *ok = xasprintf("a = %s%s", open_ok, close_ok);
    struct toml_table *t = PARSE_OK(ok);
    toml_free(t);
    _cleanup_free_ char *bad = xasprintf("a = %s[%s]", open_ok, close_ok);
    expect_error_len(bad, strlen(bad), 1, 5 + TOML_MAX_DEPTH, msg, __LINE__);

    /* Inline tables. */
    _cleanup_free_ char *inl = repeat("{b=", TOML_MAX_DEPTH + 1);
    _cleanup_free_ char *inl_doc = xasprintf("a = %s", inl);
    expect_error_len(inl_doc, strlen(inl_doc), 1, 5 + 3 * TOML_MAX_DEPTH, msg, __LINE__);

    /* Dotted keys and headers nest tables too: a.a.(...).a = 1 with
     * TOML_MAX_DEPTH dots makes that many tables, which is the limit. */
    _cleanup_free_ char *dots = repeat("a.", TOML_MAX_DEPTH);
    _cleanup_free_ char *dotted_ok = xasprintf("%sa = 1", dots);
    t = PARSE_OK(dotted_ok);
    toml_free(t);
    _cleanup_free_ char *dotted = xasprintf("a.%sa = 1", dots);
    expect_error_len(dotted, strlen(dotted), 1, 1 + 2 * TOML_MAX_DEPTH, msg, __LINE__);
    _cleanup_free_ char *dots_less = repeat("a.", TOML_MAX_DEPTH - 1);
    _cleanup_free_ char *header_ok = xasprintf("[%sa]\nx = 1", dots_less);
    t = PARSE_OK(header_ok);
    toml_free(t);
    _cleanup_free_ char *header = xasprintf("[%sa]", dots);
    expect_error_len(header, strlen(header), 1, 2 + 2 * TOML_MAX_DEPTH, msg, __LINE__);

    /* A hundred thousand brackets: an error, not a stack overflow. */
    _cleanup_free_ char *deep = repeat("[", 100000);
    _cleanup_free_ char *deep_doc = xasprintf("a = %s", deep);
    expect_error_len(deep_doc, strlen(deep_doc), 1, 5 + TOML_MAX_DEPTH, msg, __LINE__);
}

static void test_huge_inputs(void **state)
{
    /* A 4 MiB string value. */
    size_t n = 4u << 20;
    char *big = xmalloc(n + 16);
    memcpy(big, "s = \"", 5);
    memset(big + 5, 'x', n);
    memcpy(big + 5 + n, "\"\n", 2);
    struct toml_table *t = parse_ok_len(big, n + 7, __LINE__);
    assert_int_equal(strlen(toml_get(t, "s")->u.s), n);
    toml_free(t);

    /* The same without its closing quote. */
    expect_error_len(big, n + 5, 1, 5, "unterminated string", __LINE__);
    free(big);

    /* A long array and many array-of-table elements. */
    struct buf b = BUF_INIT;
    buf_adds(&b, "a = [");
    for (int i = 0; i < 200000; i++)
        buf_addf(&b, "%d,", i);
    buf_adds(&b, "]\n");
    for (int i = 0; i < 20000; i++)
        buf_adds(&b, "[[t]]\nx = 1\n");
    t = parse_ok_len(b.data, b.len, __LINE__);
    assert_int_equal(toml_get(t, "a")->u.arr.n, 200000);
    check_int(toml_get(t, "a")->u.arr.items[199999], 199999, "a[199999]", __LINE__);
    assert_int_equal(toml_get(t, "t")->u.arr.n, 20000);
    toml_free(t);
    buf_release(&b);

    /* Pseudo-random bytes and pseudo-random TOML-ish tokens: any result
     * is fine as long as nothing crashes (the sanitisers watch). */
    static const char *const tokens[] = {
        "[",  "]",   "[[", "]]", "{", "}", "=", ",",  ".", "a",    "\"",  "'",    "\"\"\"", "'''",
        "\\", "\\u", "1",  "0x", "e", "_", "#", "\n", " ", "true", "inf", "\r\n", "-"};
    uint32_t seed = 12345;
    for (int round = 0; round < 2000; round++) {
        struct buf r = BUF_INIT;
        int len = (int)(seed % 200);
        for (int i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            if (round % 2)
                buf_adds(&r, tokens[(seed >> 16) % ARRAY_SIZE(tokens)]);
            else {
                char c = (char)(seed >> 16);
                buf_add(&r, &c, 1);
            }
        }
        struct toml_error err;
        t = NULL;
        if (toml_parse(r.data ? r.data : "", r.len, &t, &err) == 0)
            toml_free(t);
        else if (t || err.line < 1 || err.col < 1 || !err.msg[0])
            fail_msg("round %d: bad error record %d:%d `%s`", round, err.line, err.col, err.msg);
        buf_release(&r);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_comments_and_empty),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_crlf),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_booleans),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_inline_tables),
        cmocka_unit_test(test_tables),
        cmocka_unit_test(test_array_of_tables),
        cmocka_unit_test(test_many_keys),
        cmocka_unit_test(test_api_edges),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_huge_inputs),
    };
    return cmocka_run_group_tests_name("toml", tests, NULL, NULL);
}
