/* libFuzzer target for the TOML parser: any input must either parse or be
 * rejected with a message and a position inside the input, never crash. */
#include <stdint.h>
#include <stdlib.h>

#include "host/toml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Touch every value so that a malformed tree would trip the sanitisers. */
static size_t fuzz_toml_walk_table(const struct toml_table *t);

static size_t fuzz_toml_walk_value(const struct toml_value *v)
{
    size_t n = 1;
    if (v->line < 1 || v->col < 1)
        abort();
    switch (v->type) {
    case TOML_STRING: n += v->u.s[0] != 0; break;
    case TOML_ARRAY:
        for (size_t i = 0; i < v->u.arr.n; i++)
            n += fuzz_toml_walk_value(v->u.arr.items[i]);
        break;
    case TOML_TABLE: n += fuzz_toml_walk_table(v->u.tab); break;
    default: break;
    }
    return n;
}

static size_t fuzz_toml_walk_table(const struct toml_table *t)
{
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (toml_get(t, t->keys[i]) != t->vals[i])
            abort();
        n += fuzz_toml_walk_value(t->vals[i]);
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct toml_table *t = NULL;
    struct toml_error err;
    if (toml_parse((const char *)data, size, &t, &err) == 0) {
        fuzz_toml_walk_table(t);
        toml_free(t);
    } else if (t || err.line < 1 || err.col < 1 || !err.msg[0]) {
        abort();
    }
    return 0;
}
