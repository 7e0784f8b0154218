/* A TOML 1.0 parser, as much as configuration files need: tables, arrays of
 * tables, dotted and quoted keys, every string form, integers, floats,
 * booleans, arrays and inline tables. Datetimes are rejected. The whole
 * input is parsed into a tree of tables and values that the caller owns and
 * releases with toml_free(). The parser never crashes on any input: it
 * returns an error with a 1-based line and column instead. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Arrays, inline tables and tables (including those made by dotted keys and
 * headers) may nest at most this deep; deeper input is an error. */
#define TOML_MAX_DEPTH 64

enum toml_type { TOML_STRING, TOML_INT, TOML_FLOAT, TOML_BOOL, TOML_ARRAY, TOML_TABLE };

struct toml_table;

/* One value. line and col (1-based; col counts bytes) say where it starts in
 * the input: the opening quote, bracket or brace, or the first character. */
struct toml_value {
    enum toml_type type;
    int line, col;
    union {
        char *s; /* TOML_STRING: UTF-8, NUL-terminated (TOML's \u0000 is rejected) */
        int64_t i;
        double f;
        bool b;
        struct {
            struct toml_value **items;
            size_t n;
        } arr;
        struct toml_table *tab;
    } u;
};

/* A table: n keys in the order they were defined, with their values. line and
 * col are those of its [header], its opening brace, or of the first key that
 * created it. The fields after the comment are the parser's own. */
struct toml_table {
    size_t n;
    char **keys;
    struct toml_value **vals;
    int line, col;
    /* private */
    size_t cap;
    unsigned char *kflags; /* per key: the value is an array of tables made by [[...]] */
    size_t *slots;         /* hash index over keys (index + 1, 0 = empty) once n grows */
    size_t nslots;
    unsigned flags; /* how the table was defined, to reject redefinitions */
    int depth;      /* root = 0 */
};

/* Where and why parsing failed: line and col are 1-based (col in bytes). */
struct toml_error {
    int line, col;
    char msg[256];
};

/* Parse len bytes of text (need not be NUL-terminated). On success, *ret is a
 * new root table (free it with toml_free) and 0 is returned. On failure,
 * *ret is NULL, err (which may be NULL) says what and where, and -EINVAL is
 * returned. NUL bytes, invalid UTF-8 and datetimes are errors. */
int toml_parse(const char *text, size_t len, struct toml_table **ret, struct toml_error *err);

/* Free a table returned by toml_parse and everything in it. NULL is a no-op. */
void toml_free(struct toml_table *t);

/* The value of key in t (a direct child; no dotted lookups), or NULL. */
const struct toml_value *toml_get(const struct toml_table *t, const char *key);

/* "string", "integer", "float", "boolean", "array" or "table". */
const char *toml_type_name(enum toml_type t);
/* The same with an article, for messages: "a string", "an integer". */
const char *toml_type_a(enum toml_type t);
