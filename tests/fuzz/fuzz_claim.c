/* The static scan of provium:claim over arbitrary test-file text. */
#include <stdint.h>

#include "host/pool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct amount a = {0};
    bool found = false;
    struct pv_err err = {0};
    int r = pool_scan_claim_text((const char *)data, size, "fuzz.test.lua", &a, &found, &err);
    /* a claim found is a valid one; a failure says why */
    if ((r == 0 && found && a.memory == 0) || (r < 0 && !err.msg[0]))
        __builtin_trap();
    return 0;
}
