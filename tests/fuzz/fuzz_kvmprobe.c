/* libFuzzer target for the KVM probe's cache (accel.c,
 * accel_cache_verdict): the file kernel-cache/kvm-probe holds lines
 * "<host kernel> qemu-<version> ok|hangs"; any bytes give a verdict of -1,
 * 0 or 1 for any key, and the last line for a key wins. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host/accel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int verdict(const uint8_t *data, size_t size, const char *key)
{
    char *text = xmalloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0; /* read_file's buffer is NUL-terminated too */
    int v = accel_cache_verdict(text, key);
    free(text);
    if (v < -1 || v > 1)
        abort();
    return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"6.1.0-18-amd64 qemu-7.2.11", "", " ", "x"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        verdict(data, size, keys[i]);
    /* the key of the input's first line, up to its last space: found */
    const char *nl = memchr(data, '\n', size);
    size_t first = nl ? (size_t)(nl - (const char *)data) : size;
    char *line = xstrndup((const char *)data, first);
    char *sp = strrchr(line, ' ');
    if (sp && !memchr(data, 0, size)) {
        *sp = 0;
        /* appended after the input, a line for that key decides */
        struct buf b = BUF_INIT;
        buf_add(&b, data, size);
        buf_addf(&b, "\n%s ok\n", line);
        if (verdict((const uint8_t *)b.data, b.len, line) != 1)
            abort();
        buf_release(&b);
    }
    free(line);
    return 0;
}
