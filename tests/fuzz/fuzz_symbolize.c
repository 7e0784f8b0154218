/* libFuzzer target: the outputs of binutils' `objdump -t` and `addr2line
 * -a -f -i` as symbolize.c reads them (docs/splats.md#symbolized-stacks):
 * the tools run on files the user names, so their text is input. The
 * first byte picks the parser; found locations are printable text. */
#include <stdint.h>

#include "host/symbolize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    if (data[0] & 1) {
        struct sym_query q[] = {
            {.func = "demo_write", .off = 0xdf, .len = 0x100},
            {.func = "f", .off = 0, .len = 0, .ret = true},
            {.func = "init_once", .off = 0x10, .len = 0x40},
        };
        sym_parse_objdump(text, len, q, ARRAY_SIZE(q));
        sym_query_release(q, ARRAY_SIZE(q));
        return 0;
    }
    char *where[8] = {NULL};
    sym_parse_addr2line(text, len, (data[0] & 2) ? "/tmp/m/" : NULL, where, ARRAY_SIZE(where));
    for (size_t i = 0; i < ARRAY_SIZE(where); i++) {
        for (const char *p = where[i]; p && *p; p++)
            if ((unsigned char)*p < 0x20)
                __builtin_trap();
        free(where[i]);
    }
    return 0;
}
