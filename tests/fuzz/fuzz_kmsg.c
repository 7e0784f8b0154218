/* Guest bytes of PV_EV_KMSG events, formatted the way the host logs them. */
#include <stdint.h>

#include "host/vm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf out = BUF_INIT;
    vm_kmsg_format(data, size, &out);
    /* every output line is the "[  sec.usec] " prefix and a record's text */
    if (out.len && out.data[out.len - 1] != '\n')
        __builtin_trap();
    buf_release(&out);
    return 0;
}
