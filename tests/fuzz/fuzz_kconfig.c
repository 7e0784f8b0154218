/* libFuzzer target: the input is a kernel's configuration as `provium
 * kernel check` reads it (a .config, or a bzImage carrying one: the user
 * names any file). kconfig_read, the bzImage header readers and
 * kconfig_check must return a result or an error, never crash. */
#include "host/kconfig.h"
#include "host/kernel.h"

#include <fcntl.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *fuzz_path;
/* the file, open across inputs: each input replaces its bytes in place
 * (write_file_atomic's fsync and rename took most of each run: 538 a second) */
static int fuzz_fd = -1;

static void fuzz_cleanup(void)
{
    if (fuzz_path)
        unlink(fuzz_path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fuzz_path) {
        fuzz_path = xasprintf("/tmp/fuzz_kconfig.%d", (int)getpid());
        fuzz_fd = open(fuzz_path, O_RDWR | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fuzz_fd < 0)
            abort();
        atexit(fuzz_cleanup);
    }
    /* an xz file goes to the xz program, not to provium's code */
    if (size >= 6 && !memcmp(data,
                             "\xfd"
                             "7zXZ",
                             6))
        return 0;
    if (pwrite(fuzz_fd, data, size, 0) != (ssize_t)size || ftruncate(fuzz_fd, (off_t)size) < 0)
        abort();
    struct kconfig c;
    struct pv_err err = {0};
    if (kconfig_read(fuzz_path, &c, &err) == 0) {
        struct kconfig_miss miss[64];
        size_t required;
        if (kconfig_check(&c, miss, &required) > kconfig_noptions || required > kconfig_noptions)
            abort();
        kconfig_release(&c);
    }
    free(kernel_image_version(fuzz_path));
    (void)kernel_not_bzimage(fuzz_path);
    return 0;
}
