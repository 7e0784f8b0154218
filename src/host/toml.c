/* A TOML 1.0 parser written from the specification (toml.io/en/v1.0.0).
 *
 * The parser is a plain recursive descent over a byte cursor. Recursion only
 * happens for arrays and inline tables, and both are capped at
 * TOML_MAX_DEPTH, so hostile input cannot exhaust the stack. Every table
 * records how it came to exist (a [header], a dotted key, an inline table, or
 * implicitly as the parent of a header) because TOML's redefinition rules
 * depend on exactly that. */
#include "toml.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>

#include "util.h"

enum {
    TAB_HEADER = 1 << 0, /* defined by [a.b] or as an element of [[a.b]] */
    TAB_DOTTED = 1 << 1, /* created by a dotted key such as a.b = 1 */
    TAB_INLINE = 1 << 2, /* an inline table { ... }: closed once written */
};

enum {
    KEY_AOT = 1 << 0, /* the value is an array of tables made by [[...]] */
};

#define NOT_FOUND ((size_t)-1)
/* Tables with more keys than this get a hash index, so that huge inputs
 * do not make duplicate checks quadratic. */
#define HASH_MIN_KEYS 8

struct parser {
    const char *start, *p, *end;
    /* Line tracking for value positions: everything before track is counted. */
    const char *track, *line_start;
    int line;
    struct toml_table *root, *cur;
    struct toml_error *err;
};

/* A parsed key such as a."b c".d, with where each part starts. */
struct keypath {
    char **parts;
    const char **at;
    size_t n, cap;
};

static int parse_value(struct parser *P, int depth, struct toml_value **ret);

/* ---- positions and errors ---- */

/* The position of the cursor. The cursor only moves forward, so counting
 * the newlines passed since the last call keeps this linear overall. */
static void toml_here(struct parser *P, int *line, int *col)
{
    for (; P->track < P->p; P->track++) {
        if (*P->track == '\n') {
            P->line++;
            P->line_start = P->track + 1;
        }
    }
    *line = P->line;
    *col = (int)(P->p - P->line_start) + 1;
}

/* The position of `at`, a point on the cursor's line (keys and the value
 * after them always share a line). */
static void toml_pos(struct parser *P, const char *at, int *line, int *col)
{
    toml_here(P, line, col);
    if (at >= P->line_start && at <= P->p)
        *col = (int)(at - P->line_start) + 1;
}

/* Record an error at `at` and return -EINVAL. Only one error is ever
 * reported, so counting lines from the start here is cheap enough. */
PV_PRINTF(3, 4) static int toml_fail(struct parser *P, const char *at, const char *fmt, ...)
{
    int line = 1;
    const char *ls = P->start;
    for (const char *q = P->start; q < at && q < P->end; q++) {
        if (*q == '\n') {
            line++;
            ls = q + 1;
        }
    }
    P->err->line = line;
    P->err->col = (int)(at - ls) + 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(P->err->msg, sizeof(P->err->msg), fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* Length of the UTF-8 sequence starting with byte c (input is validated). */
static size_t utf8_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xf0)
        return 4;
    if (c >= 0xe0)
        return 3;
    return 2;
}

/* Describe the character at `at` for a message: `x`, newline, end of input. */
static const char *toml_describe(const struct parser *P, const char *at, char *buf, size_t size)
{
    if (at >= P->end)
        return "end of input";
    unsigned char c = (unsigned char)*at;
    if (c == '\n' || (c == '\r' && at + 1 < P->end && at[1] == '\n'))
        return "newline";
    if (c >= 0x80) {
        size_t n = utf8_len(c);
        if (n > (size_t)(P->end - at))
            n = (size_t)(P->end - at);
        snprintf(buf, size, "`%.*s`", (int)n, at);
    } else if (c < 0x20 || c == 0x7f) {
        snprintf(buf, size, "U+%04X", c);
    } else {
        snprintf(buf, size, "`%c`", c);
    }
    return buf;
}

const char *toml_type_a(enum toml_type t)
{
    switch (t) {
    case TOML_STRING: return "a string";
    case TOML_INT: return "an integer";
    case TOML_FLOAT: return "a float";
    case TOML_BOOL: return "a boolean";
    case TOML_ARRAY: return "an array";
    case TOML_TABLE: return "a table";
    }
    return "a value";
}

const char *toml_type_name(enum toml_type t)
{
    switch (t) {
    case TOML_STRING: return "string";
    case TOML_INT: return "integer";
    case TOML_FLOAT: return "float";
    case TOML_BOOL: return "boolean";
    case TOML_ARRAY: return "array";
    case TOML_TABLE: return "table";
    }
    return "unknown";
}

/* ---- the tree ---- */

static void value_free(struct toml_value *v);

static void table_free(struct toml_table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++) {
        free(t->keys[i]);
        value_free(t->vals[i]);
    }
    free(t->keys);
    free(t->vals);
    free(t->kflags);
    free(t->slots);
    free(t);
}

static void value_free(struct toml_value *v)
{
    if (!v)
        return;
    switch (v->type) {
    case TOML_STRING: free(v->u.s); break;
    case TOML_ARRAY:
        for (size_t i = 0; i < v->u.arr.n; i++)
            value_free(v->u.arr.items[i]);
        free(v->u.arr.items);
        break;
    case TOML_TABLE: table_free(v->u.tab); break;
    default: break;
    }
    free(v);
}

void toml_free(struct toml_table *t)
{
    table_free(t);
}

static struct toml_value *value_new(enum toml_type type, int line, int col)
{
    struct toml_value *v = xcalloc(1, sizeof(*v));
    v->type = type;
    v->line = line;
    v->col = col;
    return v;
}

static struct toml_table *table_new(int line, int col, int depth, unsigned flags)
{
    struct toml_table *t = xcalloc(1, sizeof(*t));
    t->line = line;
    t->col = col;
    t->depth = depth;
    t->flags = flags;
    return t;
}

/* FNV-1a. */
static size_t key_hash(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return (size_t)h;
}

static size_t table_find(const struct toml_table *t, const char *key)
{
    if (!t->slots) {
        for (size_t i = 0; i < t->n; i++)
            if (!strcmp(t->keys[i], key))
                return i;
        return NOT_FOUND;
    }
    size_t mask = t->nslots - 1;
    for (size_t i = key_hash(key) & mask;; i = (i + 1) & mask) {
        size_t s = t->slots[i];
        if (!s)
            return NOT_FOUND;
        if (!strcmp(t->keys[s - 1], key))
            return s - 1;
    }
}

/* Put key index idx into the hash index (which has a free slot). */
static void table_slot_add(struct toml_table *t, size_t idx)
{
    size_t mask = t->nslots - 1;
    size_t i = key_hash(t->keys[idx]) & mask;
    while (t->slots[i])
        i = (i + 1) & mask;
    t->slots[i] = idx + 1;
}

/* Add key (taken over) with value v (taken over). The caller has checked
 * that the key is not there yet. */
static void table_add(struct toml_table *t, char *key, struct toml_value *v, unsigned kflags)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 4;
        t->keys = xrealloc(t->keys, t->cap * sizeof(*t->keys));
        t->vals = xrealloc(t->vals, t->cap * sizeof(*t->vals));
        t->kflags = xrealloc(t->kflags, t->cap);
    }
    t->keys[t->n] = key;
    t->vals[t->n] = v;
    t->kflags[t->n] = (unsigned char)kflags;
    t->n++;
    if (t->n <= HASH_MIN_KEYS)
        return;
    /* Keep the index at most half full; rebuild it when it is not. */
    if (t->n * 2 > t->nslots) {
        size_t nslots = 16;
        while (nslots < t->n * 4)
            nslots *= 2;
        free(t->slots);
        t->slots = xcalloc(nslots, sizeof(*t->slots));
        t->nslots = nslots;
        for (size_t i = 0; i < t->n; i++)
            table_slot_add(t, i);
    } else {
        table_slot_add(t, t->n - 1);
    }
}

const struct toml_value *toml_get(const struct toml_table *t, const char *key)
{
    if (!t || !key)
        return NULL;
    size_t i = table_find(t, key);
    return i == NOT_FOUND ? NULL : t->vals[i];
}

/* Append to an array value; capacity doubles at each power of two, since
 * the public struct has no capacity field. */
static void array_push(struct toml_value *arr, struct toml_value *item)
{
    size_t n = arr->u.arr.n;
    if (n == 0)
        arr->u.arr.items = xmalloc(4 * sizeof(*arr->u.arr.items));
    else if (n >= 4 && (n & (n - 1)) == 0)
        arr->u.arr.items = xrealloc(arr->u.arr.items, 2 * n * sizeof(*arr->u.arr.items));
    arr->u.arr.items[n] = item;
    arr->u.arr.n = n + 1;
}

/* ---- keys ---- */

/* buf_steal() of a buffer never written to is not NUL-terminated, so
 * terminate explicitly: empty strings and keys are valid TOML. */
static char *buf_steal_str(struct buf *b)
{
    buf_add(b, "", 0);
    return buf_steal(b);
}

static void keypath_release(struct keypath *k)
{
    for (size_t i = 0; i < k->n; i++)
        free(k->parts[i]);
    free(k->parts);
    free(k->at);
    k->parts = NULL;
    k->at = NULL;
    k->n = k->cap = 0;
}

static void keypath_push(struct keypath *k, char *part, const char *at)
{
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 4;
        k->parts = xrealloc(k->parts, k->cap * sizeof(*k->parts));
        k->at = xrealloc(k->at, k->cap * sizeof(*k->at));
    }
    k->parts[k->n] = part;
    k->at[k->n] = at;
    k->n++;
}

static bool is_bare_key_char(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static bool is_bare_key(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_bare_key_char((unsigned char)*s))
            return false;
    return true;
}

/* The first `upto` parts joined with dots, for messages (quoted where a
 * part is not a bare key). */
static char *keypath_str(const struct keypath *k, size_t upto)
{
    struct buf b = BUF_INIT;
    for (size_t i = 0; i < upto && i < k->n; i++) {
        if (i)
            buf_adds(&b, ".");
        if (is_bare_key(k->parts[i]))
            buf_adds(&b, k->parts[i]);
        else
            buf_addf(&b, "\"%s\"", k->parts[i]);
    }
    return buf_steal_str(&b);
}

/* ---- cursor ---- */

static int peek(const struct parser *P)
{
    return P->p < P->end ? (unsigned char)*P->p : -1;
}

static int peek_at(const struct parser *P, size_t k)
{
    return (size_t)(P->end - P->p) > k ? (unsigned char)P->p[k] : -1;
}

static void skip_ws(struct parser *P)
{
    while (P->p < P->end && (*P->p == ' ' || *P->p == '\t'))
        P->p++;
}

/* At '#': skip to the end of the line (the newline stays). */
static int skip_comment(struct parser *P)
{
    for (P->p++; P->p < P->end; P->p++) {
        unsigned char c = (unsigned char)*P->p;
        if (c == '\n' || (c == '\r' && peek_at(P, 1) == '\n'))
            break;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return toml_fail(P, P->p, "control character U+%04X in comment", c);
    }
    return 0;
}

/* If at a newline (LF or CRLF), step over it and return 1; a lone CR is an
 * error; otherwise return 0. */
static int eat_newline(struct parser *P)
{
    int c = peek(P);
    if (c == '\n') {
        P->p++;
        return 1;
    }
    if (c == '\r') {
        if (peek_at(P, 1) != '\n')
            return toml_fail(P, P->p, "carriage return not followed by a newline");
        P->p += 2;
        return 1;
    }
    return 0;
}

/* Skip blanks, comments and newlines (inside arrays). */
static int skip_ws_comments_newlines(struct parser *P)
{
    for (;;) {
        skip_ws(P);
        if (peek(P) == '#') {
            int r = skip_comment(P);
            if (r < 0)
                return r;
        }
        int r = eat_newline(P);
        if (r < 0)
            return r;
        if (r == 0)
            return 0;
    }
}

/* After a key/value pair or a header: blanks, an optional comment, then a
 * newline or the end of the input. */
static int end_of_line(struct parser *P, const char *after)
{
    skip_ws(P);
    if (peek(P) == '#') {
        int r = skip_comment(P);
        if (r < 0)
            return r;
    }
    if (P->p >= P->end)
        return 0;
    int r = eat_newline(P);
    if (r < 0)
        return r;
    if (r == 0) {
        char buf[16];
        return toml_fail(P, P->p, "unexpected %s after %s",
                         toml_describe(P, P->p, buf, sizeof(buf)), after);
    }
    return 0;
}

/* ---- strings ---- */

static void utf8_put(struct buf *b, uint32_t cp)
{
    char s[4];
    size_t n;
    if (cp < 0x80) {
        s[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        s[0] = (char)(0xc0 | (cp >> 6));
        s[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        s[0] = (char)(0xe0 | (cp >> 12));
        s[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        s[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        s[0] = (char)(0xf0 | (cp >> 18));
        s[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        s[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        s[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    buf_add(b, s, n);
}

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* At a backslash inside a basic string (not a line-ending backslash). */
static int parse_escape(struct parser *P, struct buf *out)
{
    const char *bs = P->p;
    int c = peek_at(P, 1);
    const char *simple = NULL;
    char buf[16];
    switch (c) {
    case 'b': simple = "\b"; break;
    case 't': simple = "\t"; break;
    case 'n': simple = "\n"; break;
    case 'f': simple = "\f"; break;
    case 'r': simple = "\r"; break;
    case '"': simple = "\""; break;
    case '\\': simple = "\\"; break;
    case 'u':
    case 'U': break;
    default:
        if (c > 0x20 && c < 0x7f)
            return toml_fail(P, bs, "invalid escape `\\%c`", c);
        return toml_fail(P, bs, "invalid escape: `\\` followed by %s",
                         toml_describe(P, bs + 1, buf, sizeof(buf)));
    }
    if (simple) {
        buf_adds(out, simple);
        P->p += 2;
        return 0;
    }
    int ndigits = c == 'u' ? 4 : 8;
    uint32_t cp = 0;
    for (int i = 0; i < ndigits; i++) {
        int d = hex_digit(peek_at(P, 2 + (size_t)i));
        if (d < 0)
            return toml_fail(P, bs, "invalid escape `\\%c`: expected %d hex digits", c, ndigits);
        cp = cp * 16 + (uint32_t)d;
    }
    if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return toml_fail(P, bs, "invalid escape `\\%c%.*s`: not a Unicode scalar value", c, ndigits,
                         bs + 2);
    if (cp == 0)
        return toml_fail(P, bs, "escape `\\%c%.*s` (NUL) is not supported", c, ndigits, bs + 2);
    utf8_put(out, cp);
    P->p += 2 + ndigits;
    return 0;
}

/* In a multi-line basic string, at a backslash: if only blanks follow it up
 * to the end of the line, skip the backslash and all whitespace and newlines
 * after it, and return 1. Otherwise return 0 (it is an escape). */
static int line_ending_backslash(struct parser *P)
{
    const char *q = P->p + 1;
    while (q < P->end && (*q == ' ' || *q == '\t'))
        q++;
    if (!(q < P->end && (*q == '\n' || (*q == '\r' && q + 1 < P->end && q[1] == '\n'))))
        return 0;
    P->p = q;
    for (;;) {
        skip_ws(P);
        int r = eat_newline(P);
        if (r <= 0)
            return r < 0 ? r : 1;
    }
}

/* The closing delimiter of a multi-line string is three quotes, but up to
 * two more quotes right before it belong to the content. At a quote, count
 * the run; return true (and consume it) if it closes the string. */
static bool multi_close(struct parser *P, char q, struct buf *out)
{
    size_t run = 0;
    while (P->p + run < P->end && P->p[run] == q)
        run++;
    if (run < 3) {
        buf_add(out, P->p, run);
        P->p += run;
        return false;
    }
    size_t extra = run - 3 > 2 ? 2 : run - 3;
    buf_add(out, P->p, extra);
    /* Any quotes beyond five are left for the caller to reject. */
    P->p += extra + 3;
    return true;
}

/* Parse a string of any kind at the cursor into *ret. */
static int parse_string(struct parser *P, bool allow_multi, char **ret)
{
    const char *open = P->p;
    char q = *P->p;
    bool basic = q == '"';
    bool multi = peek_at(P, 1) == q && peek_at(P, 2) == q;
    struct buf out = BUF_INIT;
    int r = 0;

    if (multi && !allow_multi)
        return toml_fail(P, open, "a multi-line string cannot be a key");
    P->p += multi ? 3 : 1;
    if (multi) {
        /* A newline right after the opening delimiter is trimmed. */
        r = eat_newline(P);
        if (r < 0)
            goto out;
    }
    for (;;) {
        if (P->p >= P->end) {
            r = toml_fail(P, open,
                          multi ? "unterminated multi-line string" : "unterminated string");
            goto out;
        }
        unsigned char c = (unsigned char)*P->p;
        if (c == (unsigned char)q) {
            if (!multi) {
                P->p++;
                break;
            }
            if (multi_close(P, q, &out))
                break;
            continue;
        }
        if (c == '\\' && basic) {
            if (multi) {
                r = line_ending_backslash(P);
                if (r < 0)
                    goto out;
                if (r > 0)
                    continue;
            }
            r = parse_escape(P, &out);
            if (r < 0)
                goto out;
            continue;
        }
        if (c == '\n' || (c == '\r' && peek_at(P, 1) == '\n')) {
            if (!multi) {
                r = toml_fail(P, open, "unterminated string");
                goto out;
            }
            /* CRLF is stored as LF. */
            buf_add(&out, "\n", 1);
            P->p += c == '\r' ? 2 : 1;
            continue;
        }
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            r = toml_fail(P, P->p, "control character U+%04X in string", c);
            goto out;
        }
        /* Copy this byte and the ordinary ones after it at once. */
        const char *s = P->p++;
        while (P->p < P->end) {
            c = (unsigned char)*P->p;
            if (c == (unsigned char)q || c == '\\' || c < 0x20 || c == 0x7f)
                break;
            P->p++;
        }
        buf_add(&out, s, (size_t)(P->p - s));
    }
    *ret = buf_steal_str(&out);
    return 0;
out:
    buf_release(&out);
    return r;
}

static int parse_simple_key(struct parser *P, char **ret)
{
    int c = peek(P);
    if (c == '"' || c == '\'')
        return parse_string(P, false, ret);
    if (c >= 0 && is_bare_key_char(c)) {
        const char *s = P->p;
        while (P->p < P->end && is_bare_key_char((unsigned char)*P->p))
            P->p++;
        *ret = xstrndup(s, (size_t)(P->p - s));
        return 0;
    }
    char buf[16];
    return toml_fail(P, P->p, "expected a key, found %s", toml_describe(P, P->p, buf, sizeof(buf)));
}

/* key = simple-key *( ws "." ws simple-key ) */
static int parse_key(struct parser *P, struct keypath *k)
{
    for (;;) {
        const char *at = P->p;
        char *part = NULL;
        int r = parse_simple_key(P, &part);
        if (r < 0)
            return r;
        keypath_push(k, part, at);
        skip_ws(P);
        if (peek(P) != '.')
            return 0;
        P->p++;
        skip_ws(P);
    }
}

/* ---- numbers ---- */

static bool is_digit_base(int c, int base)
{
    switch (base) {
    case 2: return c == '0' || c == '1';
    case 8: return c >= '0' && c <= '7';
    case 16: return hex_digit(c) >= 0;
    default: return c >= '0' && c <= '9';
    }
}

/* Digits of base with single underscores between them, starting at s[i].
 * Returns the index after them; *bad is set for a misplaced underscore and
 * *count to the number of characters taken. */
static size_t scan_digits(const char *s, size_t len, size_t i, int base, bool *bad, size_t *count)
{
    size_t start = i;
    *count = 0;
    if (i >= len || !is_digit_base((unsigned char)s[i], base))
        return i;
    for (;;) {
        while (i < len && is_digit_base((unsigned char)s[i], base))
            i++;
        if (i < len && s[i] == '_') {
            if (i + 1 < len && is_digit_base((unsigned char)s[i + 1], base)) {
                i++;
                continue;
            }
            *bad = true;
        }
        break;
    }
    *count = i - start;
    return i;
}

/* Check tok against TOML's integer and float grammars. Returns 0 and sets
 * *is_float and *base, or -1 if it is not a number. */
static int number_kind(const char *tok, size_t len, bool *is_float, int *base)
{
    size_t i = 0, n;
    bool bad = false;
    *is_float = false;
    *base = 10;
    if (i < len && (tok[i] == '+' || tok[i] == '-'))
        i++;
    if (i + 1 < len && tok[i] == '0' &&
        (tok[i + 1] == 'x' || tok[i + 1] == 'o' || tok[i + 1] == 'b')) {
        if (i != 0) /* no sign on prefixed integers */
            return -1;
        *base = tok[1] == 'x' ? 16 : tok[1] == 'o' ? 8 : 2;
        i = scan_digits(tok, len, 2, *base, &bad, &n);
        return n == 0 || bad || i != len ? -1 : 0;
    }
    size_t int_start = i;
    i = scan_digits(tok, len, i, 10, &bad, &n);
    if (n == 0 || bad)
        return -1;
    if (tok[int_start] == '0' && n > 1) /* no leading zeros */
        return -1;
    if (i < len && tok[i] == '.') {
        *is_float = true;
        i = scan_digits(tok, len, i + 1, 10, &bad, &n);
        if (n == 0 || bad)
            return -1;
    }
    if (i < len && (tok[i] == 'e' || tok[i] == 'E')) {
        *is_float = true;
        i++;
        if (i < len && (tok[i] == '+' || tok[i] == '-'))
            i++;
        i = scan_digits(tok, len, i, 10, &bad, &n);
        if (n == 0 || bad)
            return -1;
    }
    return i == len ? 0 : -1;
}

static bool is_number_char(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
           c == '.' || c == '+' || c == '-';
}

static bool looks_like_datetime(const struct parser *P)
{
    for (int i = 0; i < 4; i++) {
        int c = peek_at(P, (size_t)i);
        if (c < '0' || c > '9')
            return i == 2 && c == ':'; /* a local time: 07:32:00 */
    }
    return peek_at(P, 4) == '-'; /* a date: 1979-05-27 */
}

static int parse_number(struct parser *P, struct toml_value *v)
{
    const char *s = P->p;
    if (looks_like_datetime(P))
        return toml_fail(P, s, "datetimes are not supported");
    while (P->p < P->end && is_number_char((unsigned char)*P->p))
        P->p++;
    size_t len = (size_t)(P->p - s);
    int shown = len > 40 ? 40 : (int)len;
    const char *ellipsis = len > 40 ? "..." : "";

    const char *word = s + (len > 0 && (s[0] == '+' || s[0] == '-'));
    size_t wlen = len - (size_t)(word - s);
    if (wlen == 3 && (!memcmp(word, "inf", 3) || !memcmp(word, "nan", 3))) {
        v->type = TOML_FLOAT;
        v->u.f = word[0] == 'i' ? INFINITY : NAN;
        if (s[0] == '-')
            v->u.f = -v->u.f;
        return 0;
    }

    bool is_float;
    int base;
    if (len == 0 || number_kind(s, len, &is_float, &base) < 0) {
        char buf[16];
        if (len == 0)
            return toml_fail(P, s, "expected a value, found %s",
                             toml_describe(P, s, buf, sizeof(buf)));
        return toml_fail(P, s, "invalid number `%.*s%s`", shown, s, ellipsis);
    }

    /* Drop the underscores (and the 0x/0o/0b prefix) for the C library. */
    _cleanup_free_ char *clean = xmalloc(len + 1);
    size_t n = 0;
    for (size_t i = base == 10 ? 0 : 2; i < len; i++)
        if (s[i] != '_')
            clean[n++] = s[i];
    clean[n] = 0;

    errno = 0;
    if (is_float) {
        double d = strtod(clean, NULL);
        if (errno == ERANGE && isinf(d))
            return toml_fail(P, s, "number `%.*s%s` is out of range", shown, s, ellipsis);
        v->type = TOML_FLOAT;
        v->u.f = d;
    } else if (base == 10) {
        long long x = strtoll(clean, NULL, 10);
        if (errno == ERANGE)
            return toml_fail(P, s, "integer `%.*s%s` is out of range", shown, s, ellipsis);
        v->type = TOML_INT;
        v->u.i = (int64_t)x;
    } else {
        unsigned long long x = strtoull(clean, NULL, base);
        if (errno == ERANGE || x > (unsigned long long)INT64_MAX)
            return toml_fail(P, s, "integer `%.*s%s` is out of range", shown, s, ellipsis);
        v->type = TOML_INT;
        v->u.i = (int64_t)x;
    }
    return 0;
}

/* ---- arrays, inline tables, key/value pairs ---- */

static int parse_array(struct parser *P, int depth, struct toml_value *v)
{
    const char *open = P->p;
    char buf[16];
    v->type = TOML_ARRAY;
    P->p++;
    for (;;) {
        int r = skip_ws_comments_newlines(P);
        if (r < 0)
            return r;
        if (P->p >= P->end)
            return toml_fail(P, open, "unterminated array");
        if (peek(P) == ']') {
            P->p++;
            return 0;
        }
        struct toml_value *item = NULL;
        r = parse_value(P, depth + 1, &item);
        if (r < 0)
            return r;
        array_push(v, item);
        r = skip_ws_comments_newlines(P);
        if (r < 0)
            return r;
        if (P->p >= P->end)
            return toml_fail(P, open, "unterminated array");
        if (peek(P) == ',') {
            P->p++;
            continue;
        }
        if (peek(P) == ']') {
            P->p++;
            return 0;
        }
        return toml_fail(P, P->p, "expected `,` or `]` in array, found %s",
                         toml_describe(P, P->p, buf, sizeof(buf)));
    }
}

/* Walk (creating as needed) the tables named by all but the last part of a
 * dotted key, starting at t. Returns the table the last part goes into. */
static int dotted_walk(struct parser *P, struct toml_table *t, const struct keypath *k,
                       struct toml_table **ret)
{
    for (size_t i = 0; i + 1 < k->n; i++) {
        size_t idx = table_find(t, k->parts[i]);
        if (idx == NOT_FOUND) {
            if (t->depth + 1 > TOML_MAX_DEPTH)
                return toml_fail(P, k->at[i], "nesting too deep (limit is %d)", TOML_MAX_DEPTH);
            int line, col;
            toml_pos(P, k->at[i], &line, &col);
            struct toml_value *v = value_new(TOML_TABLE, line, col);
            v->u.tab = table_new(line, col, t->depth + 1, TAB_DOTTED);
            table_add(t, xstrdup(k->parts[i]), v, 0);
            t = v->u.tab;
            continue;
        }
        struct toml_value *v = t->vals[idx];
        if (v->type == TOML_TABLE && (v->u.tab->flags & TAB_DOTTED) &&
            !(v->u.tab->flags & TAB_INLINE)) {
            t = v->u.tab;
            continue;
        }
        _cleanup_free_ char *path = keypath_str(k, i + 1);
        if (v->type != TOML_TABLE)
            return toml_fail(P, k->at[i], "key `%s` is %s, not a table", path,
                             toml_type_a(v->type));
        if (v->u.tab->flags & TAB_INLINE)
            return toml_fail(P, k->at[i], "inline table `%s` cannot be extended", path);
        return toml_fail(P, k->at[i],
                         "table `%s` is defined elsewhere and cannot be extended with dotted keys",
                         path);
    }
    *ret = t;
    return 0;
}

/* key = value, adding to table t. */
static int parse_keyval(struct parser *P, struct toml_table *t)
{
    struct keypath k = {0};
    const char *kstart = P->p;
    struct toml_table *target = NULL;
    struct toml_value *v = NULL;
    char buf[16];
    int r = parse_key(P, &k);
    if (r < 0)
        goto out;
    if (peek(P) != '=') {
        _cleanup_free_ char *path = keypath_str(&k, k.n);
        r = toml_fail(P, P->p, "expected `=` after key `%s`, found %s", path,
                      toml_describe(P, P->p, buf, sizeof(buf)));
        goto out;
    }
    P->p++;
    skip_ws(P);
    /* Check the key before the value, so a clash is reported first. */
    r = dotted_walk(P, t, &k, &target);
    if (r < 0)
        goto out;
    if (table_find(target, k.parts[k.n - 1]) != NOT_FOUND) {
        _cleanup_free_ char *path = keypath_str(&k, k.n);
        r = toml_fail(P, kstart, "duplicate key `%s`", path);
        goto out;
    }
    r = parse_value(P, target->depth + 1, &v);
    if (r < 0)
        goto out;
    table_add(target, steal_pointer(&k.parts[k.n - 1]), v, 0);
out:
    keypath_release(&k);
    return r;
}

static int parse_inline_table(struct parser *P, int depth, struct toml_value *v)
{
    const char *open = P->p;
    char buf[16];
    v->type = TOML_TABLE;
    v->u.tab = table_new(v->line, v->col, depth, TAB_INLINE);
    P->p++;
    skip_ws(P);
    if (peek(P) == '}') {
        P->p++;
        return 0;
    }
    for (;;) {
        skip_ws(P);
        int c = peek(P);
        if (c < 0 || c == '\n' || c == '\r')
            return toml_fail(P, open, "unterminated inline table");
        int r = parse_keyval(P, v->u.tab);
        if (r < 0)
            return r;
        skip_ws(P);
        c = peek(P);
        if (c == ',') {
            P->p++;
            skip_ws(P);
            if (peek(P) == '}')
                return toml_fail(P, P->p, "trailing comma in inline table");
            continue;
        }
        if (c == '}') {
            P->p++;
            return 0;
        }
        if (c < 0 || c == '\n' || c == '\r')
            return toml_fail(P, open, "unterminated inline table");
        return toml_fail(P, P->p, "expected `,` or `}` in inline table, found %s",
                         toml_describe(P, P->p, buf, sizeof(buf)));
    }
}

static bool match_word(const struct parser *P, const char *w)
{
    size_t n = strlen(w);
    return (size_t)(P->end - P->p) >= n && !memcmp(P->p, w, n);
}

static int parse_value(struct parser *P, int depth, struct toml_value **ret)
{
    int line, col, r;
    char buf[16];
    toml_here(P, &line, &col);
    struct toml_value *v = value_new(TOML_BOOL, line, col);
    int c = peek(P);

    if ((c == '[' || c == '{') && depth > TOML_MAX_DEPTH) {
        r = toml_fail(P, P->p, "nesting too deep (limit is %d)", TOML_MAX_DEPTH);
    } else if (c == '"' || c == '\'') {
        v->type = TOML_STRING;
        r = parse_string(P, true, &v->u.s);
    } else if (c == '[') {
        r = parse_array(P, depth, v);
    } else if (c == '{') {
        r = parse_inline_table(P, depth, v);
    } else if (match_word(P, "true")) {
        v->u.b = true;
        P->p += 4;
        r = 0;
    } else if (match_word(P, "false")) {
        v->u.b = false;
        P->p += 5;
        r = 0;
    } else if ((c >= '0' && c <= '9') || c == '+' || c == '-' || match_word(P, "inf") ||
               match_word(P, "nan")) {
        v->type = TOML_INT;
        r = parse_number(P, v);
    } else if (c >= 0 && is_bare_key_char(c)) {
        /* Most likely a string someone forgot to quote. */
        const char *s = P->p;
        size_t n = 0;
        while (s + n < P->end && is_bare_key_char((unsigned char)s[n]) && n < 40)
            n++;
        r = toml_fail(P, s, "invalid value `%.*s` (strings need quotes)", (int)n, s);
    } else {
        r = toml_fail(P, P->p, "expected a value, found %s",
                      toml_describe(P, P->p, buf, sizeof(buf)));
    }
    if (r < 0) {
        value_free(v);
        return r;
    }
    *ret = v;
    return 0;
}

/* ---- table headers ---- */

/* Walk (creating as needed) the tables named by all but the last part of a
 * header. Headers may pass through tables made any way except inline, and
 * through arrays of tables (to their last element). */
static int header_walk(struct parser *P, const struct keypath *k, int line, int col,
                       struct toml_table **ret)
{
    struct toml_table *t = P->root;
    for (size_t i = 0; i + 1 < k->n; i++) {
        size_t idx = table_find(t, k->parts[i]);
        if (idx == NOT_FOUND) {
            if (t->depth + 1 > TOML_MAX_DEPTH)
                return toml_fail(P, k->at[i], "nesting too deep (limit is %d)", TOML_MAX_DEPTH);
            struct toml_value *v = value_new(TOML_TABLE, line, col);
            v->u.tab = table_new(line, col, t->depth + 1, 0);
            table_add(t, xstrdup(k->parts[i]), v, 0);
            t = v->u.tab;
            continue;
        }
        struct toml_value *v = t->vals[idx];
        if (v->type == TOML_ARRAY && (t->kflags[idx] & KEY_AOT)) {
            t = v->u.arr.items[v->u.arr.n - 1]->u.tab;
            continue;
        }
        if (v->type == TOML_TABLE && !(v->u.tab->flags & TAB_INLINE)) {
            t = v->u.tab;
            continue;
        }
        _cleanup_free_ char *path = keypath_str(k, i + 1);
        if (v->type != TOML_TABLE)
            return toml_fail(P, k->at[i], "key `%s` is %s, not a table", path,
                             toml_type_a(v->type));
        return toml_fail(P, k->at[i], "inline table `%s` cannot be extended", path);
    }
    *ret = t;
    return 0;
}

/* [a.b.c] */
static int header_table(struct parser *P, const struct keypath *k, const char *open, int line,
                        int col)
{
    struct toml_table *t;
    int r = header_walk(P, k, line, col, &t);
    if (r < 0)
        return r;
    const char *last = k->parts[k->n - 1];
    const char *last_at = k->at[k->n - 1];
    size_t idx = table_find(t, last);

    if (idx == NOT_FOUND) {
        if (t->depth + 1 > TOML_MAX_DEPTH)
            return toml_fail(P, last_at, "nesting too deep (limit is %d)", TOML_MAX_DEPTH);
        struct toml_value *v = value_new(TOML_TABLE, line, col);
        v->u.tab = table_new(line, col, t->depth + 1, TAB_HEADER);
        table_add(t, xstrdup(last), v, 0);
        P->cur = v->u.tab;
        return 0;
    }

    struct toml_value *v = t->vals[idx];
    _cleanup_free_ char *path = keypath_str(k, k->n);
    if (v->type == TOML_ARRAY && (t->kflags[idx] & KEY_AOT))
        return toml_fail(P, last_at, "key `%s` is an array of tables, not a table", path);
    if (v->type != TOML_TABLE)
        return toml_fail(P, last_at, "key `%s` is %s, not a table", path, toml_type_a(v->type));
    unsigned flags = v->u.tab->flags;
    if (flags & TAB_HEADER)
        return toml_fail(P, open, "duplicate table `[%s]`", path);
    if (flags & TAB_DOTTED)
        return toml_fail(P, open, "duplicate table `[%s]` (already defined by dotted keys)", path);
    if (flags & TAB_INLINE)
        return toml_fail(P, open, "duplicate table `[%s]` (already defined inline)", path);
    /* Created implicitly by an earlier [path.sub]: defined here. */
    v->u.tab->flags |= TAB_HEADER;
    v->u.tab->line = v->line = line;
    v->u.tab->col = v->col = col;
    P->cur = v->u.tab;
    return 0;
}

/* [[a.b.c]] */
static int header_array(struct parser *P, const struct keypath *k, int line, int col)
{
    struct toml_table *t;
    int r = header_walk(P, k, line, col, &t);
    if (r < 0)
        return r;
    const char *last = k->parts[k->n - 1];
    const char *last_at = k->at[k->n - 1];
    size_t idx = table_find(t, last);
    struct toml_value *v;

    if (t->depth + 2 > TOML_MAX_DEPTH)
        return toml_fail(P, last_at, "nesting too deep (limit is %d)", TOML_MAX_DEPTH);
    if (idx == NOT_FOUND) {
        v = value_new(TOML_ARRAY, line, col);
        table_add(t, xstrdup(last), v, KEY_AOT);
    } else {
        v = t->vals[idx];
        if (v->type != TOML_ARRAY || !(t->kflags[idx] & KEY_AOT)) {
            _cleanup_free_ char *path = keypath_str(k, k->n);
            if (v->type == TOML_ARRAY)
                return toml_fail(P, last_at, "cannot append to static array `%s`", path);
            return toml_fail(P, last_at, "key `%s` is %s, not an array of tables", path,
                             toml_type_a(v->type));
        }
    }
    struct toml_value *elem = value_new(TOML_TABLE, line, col);
    elem->u.tab = table_new(line, col, t->depth + 2, TAB_HEADER);
    array_push(v, elem);
    P->cur = elem->u.tab;
    return 0;
}

/* [a.b.c] or [[a.b.c]]: make the named table the current one. */
static int parse_header(struct parser *P)
{
    const char *open = P->p;
    bool aot = peek_at(P, 1) == '[';
    struct keypath k = {0};
    int line, col, r;
    toml_here(P, &line, &col);

    P->p += aot ? 2 : 1;
    skip_ws(P);
    r = parse_key(P, &k);
    if (r < 0)
        goto out;
    if (peek(P) != ']' || (aot && peek_at(P, 1) != ']')) {
        char buf[16];
        r = toml_fail(P, P->p, "expected `%s` to close the table header, found %s",
                      aot ? "]]" : "]", toml_describe(P, P->p, buf, sizeof(buf)));
        goto out;
    }
    P->p += aot ? 2 : 1;
    r = end_of_line(P, "table header");
    if (r < 0)
        goto out;
    if (aot)
        r = header_array(P, &k, line, col);
    else
        r = header_table(P, &k, open, line, col);
out:
    keypath_release(&k);
    return r;
}

/* ---- the document ---- */

/* Return the first byte that is not valid UTF-8 (overlongs, surrogates and
 * values above U+10FFFF are invalid), or NULL. */
static const char *utf8_check(const char *s, const char *end)
{
    const unsigned char *p = (const unsigned char *)s;
    const unsigned char *e = (const unsigned char *)end;
    while (p < e) {
        unsigned char c = *p;
        size_t n;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            p++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return (const char *)p;
        }
        if ((size_t)(e - p) <= n)
            return (const char *)p;
        if (p[1] < lo || p[1] > hi)
            return (const char *)p;
        for (size_t i = 2; i <= n; i++)
            if (p[i] < 0x80 || p[i] > 0xbf)
                return (const char *)p;
        p += n + 1;
    }
    return NULL;
}

static int parse_document(struct parser *P)
{
    /* A UTF-8 byte order mark is allowed and ignored. */
    if (P->end - P->p >= 3 && !memcmp(P->p, "\xef\xbb\xbf", 3))
        P->p += 3;
    for (;;) {
        skip_ws(P);
        if (P->p >= P->end)
            return 0;
        int c = peek(P);
        int r;
        if (c == '#') {
            r = skip_comment(P);
        } else if (c == '\n' || c == '\r') {
            r = eat_newline(P);
        } else if (c == '[') {
            r = parse_header(P);
        } else {
            r = parse_keyval(P, P->cur);
            if (r == 0)
                r = end_of_line(P, "value");
        }
        if (r < 0)
            return r;
    }
}

int toml_parse(const char *text, size_t len, struct toml_table **ret, struct toml_error *err)
{
    struct toml_error dummy;
    struct parser P = {0};
    const char *bad;

    *ret = NULL;
    if (!err)
        err = &dummy;
    memset(err, 0, sizeof(*err));
    if (!text)
        text = "";
    P.start = P.p = P.track = P.line_start = text;
    P.end = text + len;
    P.line = 1;
    P.err = err;

    if (len > INT_MAX) {
        err->line = 1;
        err->col = 1;
        snprintf(err->msg, sizeof(err->msg), "input too large");
        return -EINVAL;
    }
    bad = memchr(text, 0, len);
    if (bad)
        return toml_fail(&P, bad, "NUL byte in input");
    bad = utf8_check(text, P.end);
    if (bad)
        return toml_fail(&P, bad, "invalid UTF-8");

    P.root = P.cur = table_new(1, 1, 0, TAB_HEADER);
    int r = parse_document(&P);
    if (r < 0) {
        table_free(P.root);
        return r;
    }
    *ret = P.root;
    return 0;
}
