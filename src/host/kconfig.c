#include "kconfig.h"

#include "spawn.h"

#include <stdio.h>
#include <sys/wait.h>
#include <zlib.h>

/* What the agent and a VM's devices need of a kernel (docs/kernels.md shows
 * this table). A required option missing means no agent: the boot fails.
 * The dependencies Kconfig would silently drop an option without are
 * listed too (TTY, VIRTIO_MENU, SHMEM), so that `scripts/config -e` of
 * every name here survives `make olddefconfig`. */
const struct kconfig_option kconfig_options[] = {
    {"64BIT", KCONFIG_REQUIRED, false, NULL,
     "the agent is a 64-bit x86 program (tinyconfig is 32-bit)"},
    {"BINFMT_ELF", KCONFIG_REQUIRED, false, NULL, "the agent is a static ELF binary"},
    {"BLK_DEV_INITRD", KCONFIG_REQUIRED, false, NULL, "the agent arrives in an initramfs"},
    {"PRINTK", KCONFIG_REQUIRED, false, NULL,
     "kernel messages: the console log that boot failures show"},
    {"TTY", KCONFIG_REQUIRED, false, NULL,
     "the serial console and the virtio console depend on it"},
    {"SERIAL_8250", KCONFIG_REQUIRED, false, NULL, "the serial port ttyS0"},
    {"SERIAL_8250_CONSOLE", KCONFIG_REQUIRED, false, NULL,
     "`console=ttyS0`: the console log, and the agent's fatal errors, reach Provium"},
    {"PCI", KCONFIG_REQUIRED, false, NULL, "every virtio device is a PCI device"},
    {"VIRTIO_MENU", KCONFIG_REQUIRED, false, NULL, "VIRTIO_PCI depends on it"},
    {"VIRTIO_PCI", KCONFIG_REQUIRED, true, NULL, "the PCI transport of every virtio device"},
    {"VIRTIO_CONSOLE", KCONFIG_REQUIRED, true, NULL, "the agent's virtio-serial port, and hvc0"},
    {"DEVTMPFS", KCONFIG_REQUIRED, false, NULL,
     "the agent mounts devtmpfs on /dev to open its port"},
    {"PROC_FS", KCONFIG_REQUIRED, false, NULL, "the agent reads /proc/cmdline and /proc/<pid>"},
    {"SYSFS", KCONFIG_REQUIRED, false, NULL, "the agent finds its port in /sys/class/virtio-ports"},
    {"SIGNALFD", KCONFIG_REQUIRED, false, NULL,
     "the agent waits for its processes with signalfd()"},
    {"EVENTFD", KCONFIG_REQUIRED, false, NULL, "the agent's threads signal it with eventfd()"},
    {"FUTEX", KCONFIG_REQUIRED, false, NULL, "the agent's threads (musl's pthreads) need futex()"},
    {"SHMEM", KCONFIG_RECOMMENDED, false, NULL, "TMPFS depends on it"},
    {"TMPFS", KCONFIG_RECOMMENDED, false, NULL, "/tmp, /run and /dev/shm in the guest"},
    {"UNIX98_PTYS", KCONFIG_RECOMMENDED, false, NULL, "/dev/pts: terminals for guest programs"},
    {"EPOLL", KCONFIG_RECOMMENDED, false, NULL,
     "the event loops of most guest programs (the agent itself uses poll)"},
    {"MULTIUSER", KCONFIG_RECOMMENDED, false, NULL,
     "users, groups and capabilities: workers and processes that drop them"},
    {"NET", KCONFIG_RECOMMENDED, false, "workers", "UNIX depends on it"},
    {"UNIX", KCONFIG_RECOMMENDED, false, "workers",
     "a worker talks to the agent over a socketpair"},
    {"ACPI", KCONFIG_RECOMMENDED, false, NULL,
     "power-off: without it a guest's poweroff halts and QEMU keeps running"},
    {"INPUT", KCONFIG_RECOMMENDED, false, NULL, "the power button is an input device"},
    {"ACPI_BUTTON", KCONFIG_RECOMMENDED, true, NULL, "vm:power_button() with no init"},
    {"INPUT_EVDEV", KCONFIG_RECOMMENDED, true, NULL, "the agent reads the power button's events"},
    {"HW_RANDOM", KCONFIG_RECOMMENDED, false, NULL, "HW_RANDOM_VIRTIO depends on it"},
    {"HW_RANDOM_VIRTIO", KCONFIG_RECOMMENDED, true, NULL, "guest entropy from the host"},
    {"HYPERVISOR_GUEST", KCONFIG_RECOMMENDED, false, NULL, "PVH depends on it"},
    {"PVH", KCONFIG_RECOMMENDED, false, NULL,
     "a cold boot enters the kernel directly, without its decompressor"},
    {"IKCONFIG", KCONFIG_RECOMMENDED, false, NULL,
     "`provium kernel check` reads the config in the bzImage itself"},
    {"BLK_DEV", KCONFIG_RECOMMENDED, false, "disks", "VIRTIO_BLK depends on it"},
    {"VIRTIO_BLK", KCONFIG_RECOMMENDED, true, "disks", "`rootfs` and `disks` in profiles"},
    {"EXT4_FS", KCONFIG_RECOMMENDED, false, "disks", "root disks and `mkfs` images are ext4"},
    {"INET", KCONFIG_RECOMMENDED, false, "networks", "IPv4: addresses on a VM's network"},
    {"IPV6", KCONFIG_RECOMMENDED, true, "networks", "IPv6 addresses on a VM's network"},
    {"NETDEVICES", KCONFIG_RECOMMENDED, false, "networks", "VIRTIO_NET depends on it"},
    {"NET_CORE", KCONFIG_RECOMMENDED, false, "networks", "VIRTIO_NET depends on it"},
    {"VIRTIO_NET", KCONFIG_RECOMMENDED, true, "networks", "a VM's network interfaces"},
    {"VSOCKETS", KCONFIG_RECOMMENDED, true, "vsock", "VIRTIO_VSOCKETS depends on it"},
    {"VIRTIO_VSOCKETS", KCONFIG_RECOMMENDED, true, "vsock",
     "the vsock transport (`--transport vsock`)"},
};
const size_t kconfig_noptions = ARRAY_SIZE(kconfig_options);

void kconfig_release(struct kconfig *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->names[i]);
        free(c->values[i]);
    }
    free(c->names);
    free(c->values);
    *c = (struct kconfig){0};
}

void kconfig_parse(const char *text, struct kconfig *ret)
{
    size_t cap = 0;
    *ret = (struct kconfig){0};
    for (const char *line = text; *line;) {
        const char *end = line + strcspn(line, "\n");
        const char *eq = memchr(line, '=', (size_t)(end - line));
        if (!strncmp(line, "CONFIG_", 7) && eq && eq > line + 7) {
            if (ret->n == cap) {
                cap = cap ? cap * 2 : 1024;
                ret->names = xrealloc(ret->names, cap * sizeof(char *));
                ret->values = xrealloc(ret->values, cap * sizeof(char *));
            }
            ret->names[ret->n] = xstrndup(line + 7, (size_t)(eq - line - 7));
            size_t vlen = (size_t)(end - eq - 1);
            if (vlen && eq[vlen] == '\r')
                vlen--;
            ret->values[ret->n++] = xstrndup(eq + 1, vlen);
        }
        line = *end ? end + 1 : end;
    }
}

const char *kconfig_get(const struct kconfig *c, const char *name)
{
    /* the last assignment wins, as in Kconfig */
    for (size_t i = c->n; i-- > 0;)
        if (!strcmp(c->names[i], name))
            return strcmp(c->values[i], "n") ? c->values[i] : NULL;
    return NULL;
}

/* Inflate the gzip stream at p (at most n bytes) into out, up to max
 * bytes: a bzImage's payload, or the IKCONFIG blob (which ends where its
 * stream does). */
static int kconfig_gunzip(const unsigned char *p, size_t n, size_t max, struct buf *out)
{
    z_stream z = {0};
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return -ENOMEM;
    z.next_in = (unsigned char *)p;
    z.avail_in = (uInt)MIN(n, (size_t)UINT32_MAX);
    int zr = Z_OK;
    while (zr == Z_OK && out->len < max) {
        /* room as large as what came so far: a short stream (a .config is
         * tens of KiB) does not take a megabyte, a long one is not copied
         * more than twice over */
        buf_reserve(out, MAX(out->len, (size_t)16384));
        z.next_out = (unsigned char *)out->data + out->len;
        z.avail_out = (uInt)(out->cap - out->len - 1);
        size_t before = z.avail_out;
        zr = inflate(&z, Z_NO_FLUSH);
        out->len += before - z.avail_out;
        out->data[out->len] = 0;
        if (zr == Z_BUF_ERROR && z.avail_out) /* input ended early */
            break;
        if (zr == Z_BUF_ERROR)
            zr = Z_OK;
    }
    inflateEnd(&z);
    return zr == Z_STREAM_END ? 0 : -EINVAL;
}

/* The IKCONFIG blob in img (a vmlinux, or a decompressed payload): the
 * gzip stream after the IKCFG_ST marker. */
static bool kconfig_find_blob(const struct buf *img, struct buf *ret_text)
{
    static const char mark[] = "IKCFG_ST";
    const char *p = img->data, *end = img->data + img->len;
    while (p < end && (p = memmem(p, (size_t)(end - p), mark, 8))) {
        p += 8;
        buf_release(ret_text);
        if (end - p > 2 && (unsigned char)p[0] == 0x1f && (unsigned char)p[1] == 0x8b &&
            kconfig_gunzip((const unsigned char *)p, (size_t)(end - p), 16u << 20, ret_text) == 0)
            return true;
    }
    buf_release(ret_text);
    return false;
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* A bzImage's embedded config into ret_text: the payload (the compressed
 * vmlinux the setup header points at) inflated, then the blob in it. */
static int kconfig_from_bzimage(const char *path, const struct buf *img, struct buf *ret_text,
                                struct pv_err *err)
{
    const unsigned char *h = (const unsigned char *)img->data;
    if (kconfig_find_blob(img, ret_text)) /* an uncompressed vmlinux */
        return 0;
    if (img->len < 0x250 || memcmp(h + 0x202, "HdrS", 4) || (h[0x206] | h[0x207] << 8) < 0x208)
        return pv_err_set(err, EINVAL, "%s: neither a .config nor a bzImage (boot protocol 2.08+)",
                          path);
    size_t setup = ((size_t)(h[0x1f1] ? h[0x1f1] : 4) + 1) * 512;
    size_t off = setup + le32(h + 0x248), len = le32(h + 0x24c);
    if (off >= img->len || len > img->len - off)
        return pv_err_set(err, EINVAL, "%s: its payload lies outside the file", path);
    const unsigned char *pl = h + off;
    if (len < 2 || pl[0] != 0x1f || pl[1] != 0x8b)
        return pv_err_set(err, ENOTSUP,
                          "%s: its kernel is not gzip-compressed; provium reads the embedded "
                          "config of CONFIG_KERNEL_GZIP kernels (or give it the tree's .config)",
                          path);
    struct buf vmlinux = BUF_INIT;
    int r = kconfig_gunzip(pl, len, 1u << 30, &vmlinux);
    bool found = r == 0 && kconfig_find_blob(&vmlinux, ret_text);
    buf_release(&vmlinux);
    if (r < 0)
        return pv_err_set(err, EINVAL, "%s: its gzip payload does not inflate", path);
    if (!found)
        return pv_err_set(err, ENOENT,
                          "%s carries no config (CONFIG_IKCONFIG is off): give provium the "
                          "kernel's .config or /boot/config-<version>",
                          path);
    return 0;
}

int kconfig_read(const char *path, struct kconfig *ret, struct pv_err *err)
{
    struct buf data = BUF_INIT, text = BUF_INIT;
    *ret = (struct kconfig){0};
    int r = read_file(path, 512u << 20, &data);
    if (r < 0) {
        buf_release(&data);
        return pv_err_set(err, -r, "%s: %s", path, strerror(-r));
    }
    const unsigned char *d = (const unsigned char *)data.data;
    if (data.len >= 6 && !memcmp(d,
                                 "\xfd"
                                 "7zXZ",
                                 6)) {
        /* Debian's /usr/src/linux-config-<v>/config.*.xz */
        const char *argv[] = {"xz", "-dc", "--", path, NULL};
        int status = 0;
        r = spawn_run(argv, NULL, &text, 64u << 20, 60000, &status, err);
        if (r == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
            r = pv_err_set(err, EINVAL, "%s: xz -dc failed", path);
    } else if (data.len && memmem(data.data, MIN(data.len, (size_t)65536), "CONFIG_", 7) &&
               !memchr(data.data, 0, MIN(data.len, (size_t)65536))) {
        buf_add(&text, data.data, data.len);
    } else {
        r = kconfig_from_bzimage(path, &data, &text, err);
    }
    buf_release(&data);
    if (r == 0) {
        buf_add(&text, "", 1);
        kconfig_parse(text.data, ret);
    }
    buf_release(&text);
    return r;
}

size_t kconfig_check(const struct kconfig *c, struct kconfig_miss *ret, size_t *ret_required)
{
    size_t n = 0, required = 0;
    bool modules = kconfig_get(c, "MODULES") && !strcmp(kconfig_get(c, "MODULES"), "y");
    for (size_t i = 0; i < kconfig_noptions; i++) {
        const struct kconfig_option *o = &kconfig_options[i];
        const char *v = kconfig_get(c, o->name);
        if (v && (!strcmp(v, "y") || (!strcmp(v, "m") && o->module_ok && modules)))
            continue;
        ret[n++] = (struct kconfig_miss){o, v};
        if (o->need == KCONFIG_REQUIRED)
            required++;
    }
    *ret_required = required;
    return n;
}

void kconfig_markdown(struct buf *out)
{
    buf_adds(out, "| option | value | need | for | why |\n|---|---|---|---|---|\n");
    for (size_t i = 0; i < kconfig_noptions; i++) {
        const struct kconfig_option *o = &kconfig_options[i];
        buf_addf(out, "| `CONFIG_%s` | %s | %s | %s | %s |\n", o->name,
                 o->module_ok ? "`y` or `m`" : "`y`",
                 o->need == KCONFIG_REQUIRED ? "required" : "recommended",
                 o->feature ? o->feature : "every VM", o->why);
    }
}

/* Make and scripts/config of a kernel tree: long, and loud, so only the
 * tail of what they print is kept, for the error. */
#define KCONFIG_CONFIG_MS (15 * 60 * 1000)
#define KCONFIG_BUILD_MS (6 * 3600 * 1000)
#define KCONFIG_OUTPUT_MAX (256 * 1024)

/* Run argv in dir; it must exit 0. ret_out (may be NULL) gets what it
 * printed. */
static int kconfig_run(const char *const argv[], const char *dir, int timeout_ms,
                       struct buf *ret_out, struct pv_err *err)
{
    struct buf local = BUF_INIT;
    struct buf *out = ret_out ? ret_out : &local;
    int status = 0;
    int r = spawn_run(argv, dir, out, KCONFIG_OUTPUT_MAX, timeout_ms, &status, err);
    if (r == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char how[128];
        spawn_describe_status(status, how, sizeof(how));
        size_t keep = MIN(out->len, (size_t)1500);
        r = pv_err_set(err, EIO, "`%s %s` in %s %s:\n%.*s", argv[0], argv[1] ? argv[1] : "", dir,
                       how, (int)keep, out->data ? out->data + out->len - keep : "");
    } else if (r == -ETIMEDOUT) {
        r = pv_err_set(err, ETIMEDOUT, "`%s %s` in %s did not end in time (killed)", argv[0],
                       argv[1] ? argv[1] : "", dir);
    }
    buf_release(&local);
    return r;
}

static int kconfig_read_tree(const char *dir, struct kconfig *ret, struct pv_err *err)
{
    _cleanup_free_ char *path = xasprintf("%s/.config", dir);
    if (access(path, F_OK) < 0) {
        *ret = (struct kconfig){0};
        return 0;
    }
    return kconfig_read(path, ret, err);
}

/* With minimal: what stays out of the fastest build (the quick-start test
 * needs none of it). */
static bool kconfig_skipped(const struct kconfig_option *o, bool minimal)
{
    return minimal && o->feature;
}

/* Turn on, with scripts/config -e, each option of the table c does not
 * satisfy; with minimal, a gzip-compressed kernel too (its config can then
 * be read from the bzImage, and it boots faster under TCG than xz). */
static int kconfig_enable(const char *dir, const struct kconfig *c, bool minimal,
                          struct pv_err *err)
{
    static const char *const gzip[] = {
        "-e", "KERNEL_GZIP", "-d", "KERNEL_XZ",  "-d", "KERNEL_BZIP2", "-d", "KERNEL_LZMA",
        "-d", "KERNEL_LZO",  "-d", "KERNEL_LZ4", "-d", "KERNEL_ZSTD"};
    _cleanup_free_ char *script = xasprintf("%s/scripts/config", dir);
    _cleanup_free_ char *file = xasprintf("%s/.config", dir);
    const char **argv = xcalloc(4 + 2 * kconfig_noptions + ARRAY_SIZE(gzip) + 1, sizeof(char *));
    size_t n = 0;
    argv[n++] = script;
    argv[n++] = "--file";
    argv[n++] = file;
    struct kconfig_miss *miss = xcalloc(kconfig_noptions, sizeof(*miss));
    size_t required, nmiss = kconfig_check(c, miss, &required);
    for (size_t i = 0; i < nmiss; i++) {
        if (kconfig_skipped(miss[i].opt, minimal))
            continue;
        argv[n++] = "-e";
        argv[n++] = miss[i].opt->name;
    }
    for (size_t i = 0; minimal && i < ARRAY_SIZE(gzip); i++)
        argv[n++] = gzip[i];
    int r = n > 3 ? kconfig_run(argv, dir, KCONFIG_CONFIG_MS, NULL, err) : 0;
    free(miss);
    free(argv);
    return r;
}

/* What changed between before and after, for the table's options, and how
 * many others Kconfig changed along. */
static void kconfig_diff(const struct kconfig *before, const struct kconfig *after, struct buf *out)
{
    size_t others = 0;
    for (size_t i = 0; i < after->n; i++) {
        const char *name = after->names[i], *v = after->values[i];
        const char *old = kconfig_get(before, name);
        if (kconfig_get(after, name) != v || (old && !strcmp(old, v)))
            continue; /* a later assignment wins, or unchanged */
        bool listed = false;
        for (size_t k = 0; k < kconfig_noptions && !listed; k++)
            listed = !strcmp(kconfig_options[k].name, name);
        if (listed)
            buf_addf(out, "  CONFIG_%s: %s -> %s\n", name, old ? old : "unset", v);
        else
            others++;
    }
    for (size_t i = 0; i < before->n; i++)
        if (!kconfig_get(after, before->names[i]) &&
            kconfig_get(before, before->names[i]) == before->values[i])
            others++;
    buf_addf(out, "  and %zu other option(s) that Kconfig changed along with them\n", others);
}

int kconfig_configure(const char *dir, bool minimal, struct buf *out, struct pv_err *err)
{
    _cleanup_free_ char *script = xasprintf("%s/scripts/config", dir);
    if (access(script, X_OK) < 0)
        return pv_err_set(err, ENOENT, "%s is not a kernel source tree (no executable %s)", dir,
                          script);
    struct kconfig before = {0}, mid = {0}, after = {0};
    int r = kconfig_read_tree(dir, &before, err);
    if (r < 0)
        return r;
    const char *start = minimal ? "tinyconfig" : before.n ? NULL : "defconfig";
    if (start) {
        buf_addf(out, "provium: make %s\n", start);
        const char *argv[] = {"make", "-s", start, NULL};
        r = kconfig_run(argv, dir, KCONFIG_CONFIG_MS, NULL, err);
    }
    if (r == 0)
        r = kconfig_read_tree(dir, &mid, err);
    if (r == 0)
        r = kconfig_enable(dir, &mid, minimal, err);
    if (r == 0) {
        const char *argv[] = {"make", "-s", "olddefconfig", NULL};
        r = kconfig_run(argv, dir, KCONFIG_CONFIG_MS, NULL, err);
    }
    if (r == 0)
        r = kconfig_read_tree(dir, &after, err);
    if (r < 0)
        goto out;
    buf_addf(out, "provium: %s/.config, changed from %s:\n", dir,
             start ? (minimal ? "`make tinyconfig`" : "`make defconfig`") : "what it was");
    kconfig_diff(&mid, &after, out);
    struct kconfig_miss *miss = xcalloc(kconfig_noptions, sizeof(*miss));
    size_t required, nmiss = kconfig_check(&after, miss, &required);
    struct buf dropped = BUF_INIT;
    for (size_t i = 0; i < nmiss; i++) {
        if (kconfig_skipped(miss[i].opt, minimal))
            buf_addf(out, "  left out (--minimal): CONFIG_%s, for %s\n", miss[i].opt->name,
                     miss[i].opt->feature);
        else
            buf_addf(&dropped, " CONFIG_%s", miss[i].opt->name);
    }
    if (dropped.len)
        r = pv_err_set(err, EINVAL,
                       "%s/.config: `make olddefconfig` turned off%s (a dependency this tree "
                       "lacks, or an architecture other than x86_64?)",
                       dir, dropped.data);
    buf_release(&dropped);
    free(miss);
out:
    kconfig_release(&before);
    kconfig_release(&mid);
    kconfig_release(&after);
    return r;
}

int kconfig_build(const char *dir, int jobs, char **ret_bzimage, char **ret_modules,
                  struct pv_err *err)
{
    *ret_bzimage = *ret_modules = NULL;
    struct kconfig c = {0};
    int r = kconfig_read_tree(dir, &c, err);
    if (r < 0)
        return r;
    bool modules = kconfig_get(&c, "MODULES") && !strcmp(kconfig_get(&c, "MODULES"), "y");
    kconfig_release(&c);
    char j[32];
    snprintf(j, sizeof(j), "-j%d", jobs > 0 ? jobs : 1);
    const char *bz[] = {"make", "-s", j, "bzImage", NULL};
    r = kconfig_run(bz, dir, KCONFIG_BUILD_MS, NULL, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *bzimage = xasprintf("%s/arch/x86/boot/bzImage", dir);
    if (modules) {
        /* beside the bzImage, where the default profile looks for them
         * (arch/x86/boot/lib/modules/<version>, docs/kernels.md) */
        _cleanup_free_ char *dest = xasprintf("INSTALL_MOD_PATH=%s/arch/x86/boot", dir);
        const char *mods[] = {"make", "-s", j, "modules", NULL};
        const char *install[] = {"make", "-s", "modules_install", dest, NULL};
        r = kconfig_run(mods, dir, KCONFIG_BUILD_MS, NULL, err);
        if (r == 0)
            r = kconfig_run(install, dir, KCONFIG_CONFIG_MS, NULL, err);
        if (r < 0)
            return r;
        struct buf rel = BUF_INIT;
        const char *release[] = {"make", "-s", "kernelrelease", NULL};
        r = kconfig_run(release, dir, KCONFIG_CONFIG_MS, &rel, err);
        if (r == 0) {
            buf_add(&rel, "", 1);
            rel.data[strcspn(rel.data, "\n")] = 0;
            *ret_modules = xasprintf("%s/arch/x86/boot/lib/modules/%s", dir, rel.data);
        }
        buf_release(&rel);
        if (r < 0)
            return r;
    }
    *ret_bzimage = steal_pointer(&bzimage);
    return 0;
}
