/* libFuzzer target for a snapshot file's header (snapshot.c,
 * vm_snapshot_parse_header): the first bytes of any file handed to
 * vm:restore. It is either refused (-EINVAL) or a JSON object whose line,
 * newline included, lies within the bytes read. */
#include <stdint.h>
#include <stdlib.h>

#include "host/vm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *h = NULL;
    size_t len = 0;
    int r = vm_snapshot_parse_header((const char *)data, size, &h, &len);
    if (r < 0) {
        if (r != -EINVAL || h)
            abort();
        return 0;
    }
    if (!json_is_object(h) || len == 0 || len > size || data[len - 1] != '\n')
        abort();
    json_decref(h);
    return 0;
}
