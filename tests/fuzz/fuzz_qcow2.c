/* libFuzzer target for the qcow2 header reads (disk/qcow2.c): the first
 * bytes of an image a user attaches with format = "qcow2". dk_qcow2_alone
 * says whether the image is the whole disk, dk_qcow2_size gives the disk's
 * size; both refuse exactly what lacks the magic (-EINVAL), and read a file
 * shorter than the header as if zeros followed (QEMU refuses it later). */
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "host/disk/disk_priv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* one file across inputs, rewritten in place */
static int fuzz_fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz_fd < 0 && (fuzz_fd = memfd_create("fuzz_qcow2", MFD_CLOEXEC)) < 0)
        abort();
    if (ftruncate(fuzz_fd, 0) < 0 || pwrite(fuzz_fd, data, size, 0) != (ssize_t)size)
        abort();
    int alone = dk_qcow2_alone(fuzz_fd);
    uint64_t disk = 0;
    int r = dk_qcow2_size(fuzz_fd, &disk);
    bool magic = size >= 4 && !memcmp(data, "QFI\xfb", 4);
    if (magic ? (r != 0 || (alone != 0 && alone != -EXDEV)) : (r != -EINVAL || alone != -EINVAL))
        abort();
    (void)disk;
    return 0;
}
