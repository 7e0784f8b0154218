/* libFuzzer target for the bzImage reader of pvh.c (pvh_unpack): any file
 * given as a kernel. It is refused (-ENOEXEC, -EBADMSG) or unpacks to an
 * x86-64 ELF of the size the image announced. */
#include <stdint.h>
#include <stdlib.h>

#include "host/pvh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf out = BUF_INIT;
    int r = pvh_unpack(data, size, &out);
    if (r != 0 && r != -ENOEXEC && r != -EBADMSG)
        abort();
    if (r == 0 && (out.len < 64 || memcmp(out.data,
                                          "\x7f"
                                          "ELF",
                                          4)))
        abort();
    buf_release(&out);
    return 0;
}
