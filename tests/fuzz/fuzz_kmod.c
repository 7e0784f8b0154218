/* libFuzzer target: the input is a modules.dep (a kernel tree the user
 * points provium at may be broken or odd). kmod_order must return 0 or an
 * error, never crash or loop, and on success give each path once. */
#include "host/kmod.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *fuzz_dir;
/* modules.dep, open across inputs: each input replaces its bytes in place
 * (open with O_TRUNC and close made ext4 write the file back every time,
 * 349 inputs a second) */
static int fuzz_dep_fd = -1;

static void fuzz_cleanup(void)
{
    if (fuzz_dir)
        rm_rf(fuzz_dir);
}

static void fuzz_init(void)
{
    static char tmpl[] = "/tmp/fuzz_kmod.XXXXXX";
    if (!mkdtemp(tmpl))
        abort();
    fuzz_dir = tmpl;
    _cleanup_free_ char *dep = xasprintf("%s/modules.dep", fuzz_dir);
    fuzz_dep_fd = open(dep, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fuzz_dep_fd < 0)
        abort();
    _cleanup_free_ char *builtin = xasprintf("%s/modules.builtin", fuzz_dir);
    static const char b[] = "kernel/fs/ext4/ext4.ko\nkernel/drivers/virtio/virtio-blk.ko\n";
    if (write_file_atomic(builtin, b, sizeof(b) - 1, 0644) < 0)
        abort();
    atexit(fuzz_cleanup);
}

static void fuzz_check(char **paths)
{
    for (size_t i = 0; paths[i]; i++)
        for (size_t j = i + 1; paths[j]; j++)
            if (!strcmp(paths[i], paths[j])) {
                fprintf(stderr, "fuzz_kmod: %s listed twice\n", paths[i]);
                abort();
            }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_dir)
        fuzz_init();
    if (pwrite(fuzz_dep_fd, data, size, 0) != (ssize_t)size ||
        ftruncate(fuzz_dep_fd, (off_t)size) < 0)
        abort();

    static const char *const sets[][3] = {
        {"a", "b_c", "virtio-pci"},
        {"virtio_blk", "x", "a"},
        {"m0", "ext4", "m-1"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(sets); i++) {
        char **paths = NULL;
        struct pv_err err = {0};
        if (kmod_order(fuzz_dir, sets[i], ARRAY_SIZE(sets[i]), &paths, &err) == 0) {
            fuzz_check(paths);
            kmod_free_paths(paths);
        } else if (paths || !err.msg[0]) {
            fprintf(stderr, "fuzz_kmod: an error without a message or with output\n");
            abort();
        }
    }
    return 0;
}
