/* libFuzzer target for a snapshot file's header (snapshot.c,
 * vm_snapshot_parse_header): the first bytes of any file handed to
 * vm:restore. It is either refused (-EINVAL) or a JSON object whose line,
 * newline included, lies within the bytes read. Its list of frozen disks
 * (vm_snapshot_disks) is refused or gives at most VM_MAX_DISKS disks, each
 * with a valid id, its file named after it, a slot of the disks' range, and
 * neither id nor slot twice. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
    struct vm_snap_disk d[VM_MAX_DISKS];
    size_t n = 99;
    r = vm_snapshot_disks(h, d, &n);
    if (r < 0 && (r != -EINVAL || n != 0))
        abort();
    for (size_t i = 0; r == 0 && i < n; i++) {
        size_t idlen = strlen(d[i].id);
        if (n > VM_MAX_DISKS || idlen == 0 || idlen > VM_DISK_ID_MAX ||
            strncmp(d[i].file, "disk-", 5) || strcmp(d[i].file + 5, d[i].id) ||
            strchr(d[i].id, '/') || d[i].slot < VM_DISK_SLOT0 ||
            d[i].slot >= VM_DISK_SLOT0 + VM_MAX_DISKS || !d[i].size || d[i].size % 512)
            abort();
        for (size_t j = 0; j < i; j++)
            if (!strcmp(d[i].id, d[j].id) || d[i].slot == d[j].slot)
                abort();
    }
    json_decref(h);
    return 0;
}
