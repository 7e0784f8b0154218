/* The Kconfig options a kernel needs to boot under Provium, and the reader
 * of a kernel's configuration: a .config, /boot/config-*, or the config a
 * bzImage carries (CONFIG_IKCONFIG). One table serves `provium kernel
 * check`, `provium kernel config` and docs/kernels.md (whose table is
 * `provium kernel options`' output; tests/unit/test_kconfig.c compares). */
#pragma once

#include "util.h"

enum kconfig_need { KCONFIG_REQUIRED, KCONFIG_RECOMMENDED };

struct kconfig_option {
    const char *name; /* without CONFIG_: "VIRTIO_PCI" */
    enum kconfig_need need;
    bool module_ok;      /* `m` satisfies it (Provium loads the module at boot) */
    const char *feature; /* NULL: every VM; else what needs it ("networks") */
    const char *why;     /* one line */
};

extern const struct kconfig_option kconfig_options[];
extern const size_t kconfig_noptions;

/* A parsed configuration: the options set to something (`y`, `m`, a
 * number or a string); "# CONFIG_X is not set" and absent ones are not in
 * it. */
struct kconfig {
    char **names; /* without CONFIG_ */
    char **values;
    size_t n;
};

/* Parse .config text (NUL-terminated). Lines that are not assignments are
 * skipped. */
void kconfig_parse(const char *text, struct kconfig *ret);
/* The value of name (without CONFIG_), or NULL when it is not set. */
const char *kconfig_get(const struct kconfig *c, const char *name);
void kconfig_release(struct kconfig *c);

/* Read the configuration in path: a bzImage's embedded one (its payload
 * gzip-compressed, CONFIG_KERNEL_GZIP, and CONFIG_IKCONFIG set), an
 * xz-compressed config (Debian's /usr/src/linux-config-*), or a plain
 * .config. -ENOENT with err naming the file when a bzImage carries none. */
int kconfig_read(const char *path, struct kconfig *ret, struct pv_err *err);

/* One missing or unsatisfied option of the table, as kconfig_check finds
 * it: the option, and what the configuration has instead ("m" where `y`
 * is needed, NULL when unset). */
struct kconfig_miss {
    const struct kconfig_option *opt;
    const char *have;
};

/* Compare c with the table. modules_ok: `m` satisfies options that allow
 * it (the kernel will have its modules); without MODULES=y it never does.
 * Fills ret (up to kconfig_noptions entries, the caller's array) and
 * returns how many; *ret_required counts the required ones. */
size_t kconfig_check(const struct kconfig *c, struct kconfig_miss *ret, size_t *ret_required);

/* The table as docs/kernels.md shows it (Markdown, with a trailing
 * newline). */
void kconfig_markdown(struct buf *out);

/* `provium kernel config`: in the kernel tree dir, start from `make
 * tinyconfig` (minimal), the tree's .config, or `make defconfig` when it
 * has none; turn on every option of the table it lacks with the tree's
 * scripts/config (with minimal, not those of a feature: networks, disks,
 * vsock, workers); `make olddefconfig`; read the result back. out gets
 * what changed. -EINVAL when Kconfig turned a needed option off again. */
int kconfig_configure(const char *dir, bool minimal, struct buf *out, struct pv_err *err);

/* `provium kernel build`, after kconfig_configure: `make -jN bzImage`, and
 * with MODULES=y the modules, installed under arch/x86/boot (where the
 * default profile finds them beside the bzImage). *ret_bzimage gets the
 * bzImage's path, *ret_modules the modules directory or NULL. */
int kconfig_build(const char *dir, int jobs, char **ret_bzimage, char **ret_modules,
                  struct pv_err *err);
