#include "boot.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "accel.h"
#include "cache.h"
#include "cpio.h"
#include "hash.h"
#include "kernel.h"
#include "kmod.h"
#include "spawn.h"

#define AGENT_PATH "/provium-agent"
#define DEFAULT_CMDLINE "console=ttyS0 panic=-1"

/* Kernel modules the shim loads from the overlay. The transport's must be
 * there (unless built in) and load before the agent; entropy loads while the
 * agent answers its first Hello; the power button's (the shim powers off on
 * it when no init does) when a test first presses it, or before the
 * profile's init starts. The optional ones are skipped when absent. */
const char *const boot_transport_modules[] = {"virtio_pci", "virtio_console", NULL};
static const char *const button_modules[] = {"button", "evdev", NULL};
static const char *const late_modules[] = {"virtio-rng", NULL};
/* A NIC's, loaded by the agent when asked to configure one (src/agent/net.c),
 * never at boot: a VM without NICs boots as fast as before. Optional: a
 * kernel without them (or with them built in) adds nothing, and the agent's
 * wait for the NIC says what is missing. */
static const char *const net_modules[] = {"virtio_net", "ipv6", NULL};

void boot_opts_release(struct boot_opts *o)
{
    free(o->kernel_cmdline);
    free(o->kernel_cmdline_append);
    for (size_t i = 0; i < o->nfiles; i++) {
        free(o->files[i].path);
        free(o->files[i].content);
    }
    free(o->files);
    memset(o, 0, sizeof(*o));
}

static bool has_param(const char *cmdline, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = cmdline; (p = strstr(p, key)); p += n)
        if ((p == cmdline || p[-1] == ' ') && (p[n] == '=' || p[n] == ' ' || !p[n]))
            return true;
    return false;
}

/* The value of key= (the last one), copied, or NULL. */
static char *param_value(const char *cmdline, const char *key)
{
    char *val = NULL;
    size_t n = strlen(key);
    for (const char *p = cmdline; (p = strstr(p, key)); p += n) {
        if ((p == cmdline || p[-1] == ' ') && p[n] == '=') {
            free(val);
            val = xstrndup(p + n + 1, strcspn(p + n + 1, " "));
        }
    }
    return val;
}

static int write_cached(const char *path, const struct buf *data, struct pv_err *err)
{
    if (access(path, R_OK) == 0)
        return 0;
    _cleanup_free_ char *dir = xstrdup(path);
    *strrchr(dir, '/') = 0;
    int r = mkdir_p(dir, 0755);
    if (r == 0)
        r = write_file_atomic(path, data->data, data->len, 0644);
    if (r < 0)
        return pv_err_set(err, -r, "write %s: %s", path, strerror(-r));
    return 0;
}

/* Add each module of names, dependencies first, under .provium/m/ and its
 * path to list, once (seen holds "\npath\n" of every module added). With
 * optional, a name the modules tree does not have is skipped. */
static int add_modules(struct cpio *c, const char *modules_dir, const char *const *names,
                       bool optional, struct buf *list, struct buf *seen, struct buf *inputs,
                       struct pv_err *err)
{
    for (size_t k = 0; names[k]; k++) {
        char **paths = NULL;
        struct pv_err ignored;
        int r = kmod_order(modules_dir, &names[k], 1, &paths, optional ? &ignored : err);
        if (r < 0 && optional)
            continue;
        if (r < 0)
            return r;
        for (size_t i = 0; paths[i] && r == 0; i++) {
            _cleanup_free_ char *key = xasprintf("\n%s\n", paths[i]);
            if (seen->data && strstr(seen->data, key))
                continue;
            buf_adds(seen, key);
            _cleanup_free_ char *src = xasprintf("%s/%s", modules_dir, paths[i]);
            cache_note_input(inputs, src);
            struct buf ko = BUF_INIT;
            r = read_file(src, 64u << 20, &ko);
            if (r < 0) {
                pv_err_set(err, -r, "module %s: %s", src, strerror(-r));
            } else {
                const char *base = strrchr(paths[i], '/') ? strrchr(paths[i], '/') + 1 : paths[i];
                _cleanup_free_ char *dst = xasprintf(".provium/m/%s", base);
                cpio_add_file(c, dst, 0644, ko.data, ko.len);
                /* "?": the agent goes on without it (src/agent/modules.c) */
                buf_addf(list, "%s/%s\n", optional ? "?" : "", dst);
            }
            buf_release(&ko);
        }
        kmod_free_paths(paths);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The overlay: the agent at /provium-agent, the modules under .provium/m/,
 * and their load order in .provium/modules, .provium/modules.late,
 * .provium/modules.button and .provium/modules.net. */
static int add_overlay(struct cpio *c, const char *modules_dir, bool rootfs, struct buf *inputs,
                       struct pv_err *err)
{
    cpio_add_file(c, &AGENT_PATH[1], 0755, pv_agent_bin, (size_t)(pv_agent_bin_end - pv_agent_bin));
    cpio_add_dir(c, ".provium", 0755);
    if (!modules_dir)
        return 0;
    const char *extra[3] = {NULL, NULL, NULL};
    size_t n = 0;
    if (vm_globals.transport == TRANSPORT_VSOCK)
        extra[n++] = "vmw_vsock_virtio_transport";
    if (rootfs)
        extra[n++] = "virtio_blk";
    cpio_add_dir(c, ".provium/m", 0755);
    for (size_t i = 0; kmod_index_files[i]; i++) {
        _cleanup_free_ char *f = xasprintf("%s/%s", modules_dir, kmod_index_files[i]);
        cache_note_input(inputs, f);
    }
    struct buf early = BUF_INIT, late = BUF_INIT, button = BUF_INIT, net = BUF_INIT,
               seen = BUF_INIT;
    int r = add_modules(c, modules_dir, boot_transport_modules, false, &early, &seen, inputs, err);
    if (r == 0)
        r = add_modules(c, modules_dir, extra, false, &early, &seen, inputs, err);
    if (r == 0)
        r = add_modules(c, modules_dir, button_modules, true, &button, &seen, inputs, err);
    if (r == 0)
        r = add_modules(c, modules_dir, late_modules, true, &late, &seen, inputs, err);
    if (r == 0)
        r = add_modules(c, modules_dir, net_modules, true, &net, &seen, inputs, err);
    if (r == 0) {
        cpio_add_file(c, ".provium/modules", 0644, early.data, early.len);
        cpio_add_file(c, ".provium/modules.late", 0644, late.data, late.len);
        cpio_add_file(c, ".provium/modules.button", 0644, button.data, button.len);
        cpio_add_file(c, ".provium/modules.net", 0644, net.data, net.len);
    }
    buf_release(&early);
    buf_release(&late);
    buf_release(&button);
    buf_release(&net);
    buf_release(&seen);
    return r;
}

/* busybox (the binary bb) with its applet links; no sbin/init, so the agent
 * stays PID 1. */
static int add_busybox(struct cpio *c, const char *bb, struct buf *inputs, struct pv_err *err)
{
    struct buf bin = BUF_INIT, list = BUF_INIT;
    int status = 0;
    cache_note_input(inputs, bb);
    int r = read_file(bb, 16u << 20, &bin);
    const char *argv[] = {bb, "--list-full", NULL};
    if (r == 0)
        r = spawn_run(argv, NULL, &list, 1 << 20, 10000, &status, err);
    if (r == 0 && status != 0)
        r = pv_err_set(err, EINVAL, "%s --list-full failed (is it busybox-static?)", bb);
    if (r < 0)
        goto out;
    static const char *dirs[] = {"bin",  "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root",
                                 "proc", "sys",  "dev", "run",     "tmp",      "var", "mnt"};
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
        cpio_add_dir(c, dirs[i], !strcmp(dirs[i], "tmp") ? 01777 : 0755);
    cpio_add_file(c, "bin/busybox", 0755, bin.data, bin.len);
    for (char *line = list.data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        if (!*line || !strcmp(line, "bin/busybox") || !strcmp(line, "sbin/init") ||
            !strcmp(line, "linuxrc"))
            continue;
        cpio_add_symlink(c, line, "/bin/busybox");
    }
    static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
                                 "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
    static const char group[] = "root:x:0:\nnogroup:x:65534:\n";
    cpio_add_file(c, "etc/passwd", 0644, passwd, sizeof(passwd) - 1);
    cpio_add_file(c, "etc/group", 0644, group, sizeof(group) - 1);
    cpio_add_file(c, "etc/hostname", 0644, "provium\n", 8);
out:
    buf_release(&bin);
    buf_release(&list);
    return r;
}

/* The initrds are cached by content (kind-<hash><suffix>), and found again
 * through a memo keyed by what is not a file (this provium, which writes
 * the agent and the layout; the kind; the modules directory; the transport)
 * and checked against the files read (busybox, modules, the user's
 * initrd): a boot, restores included, does not rebuild one to learn its
 * name (docs/boot-cache.md#the-cold-boot). */
#define INITRD_KEEP 48

static char *initrd_memo(const char *kind, const char *modules_dir, bool rootfs, const char *a,
                         const char *b)
{
    struct sha256 *h = sha256_new();
    sha256_update_str(h, "provium initrd memo 1");
    cache_hash_file(h, "/proc/self/exe");
    const char *parts[] = {
        kind, modules_dir, rootfs ? "rootfs" : "-", transport_name(vm_globals.transport), a, b};
    for (size_t i = 0; i < ARRAY_SIZE(parts); i++)
        sha256_update_str(h, parts[i] ? parts[i] : "");
    char hex[65];
    sha256_final_hex(h, hex);
    _cleanup_free_ char *root = kernel_cache_root();
    return xasprintf("%s/initrd/%.32s.memo", root, hex);
}

/* Store data as root/initrd/<kind>-<hash><suffix>, once, and its memo. */
static int store_initrd(const char *kind, const char *suffix, const struct buf *data,
                        const char *memo, const struct buf *inputs, char **ret, struct pv_err *err)
{
    char hex[65];
    sha256_hex(data->data, data->len, hex);
    _cleanup_free_ char *root = kernel_cache_root();
    char *path = xasprintf("%s/initrd/%s-%.32s%s", root, kind, hex, suffix);
    int r = write_cached(path, data, err);
    if (r < 0) {
        free(path);
        return r;
    }
    cache_memo_put(memo, path, inputs);
    _cleanup_free_ char *dir = xasprintf("%s/initrd", root);
    cache_trim(dir, INITRD_KEEP);
    *ret = path;
    return 0;
}

/* The whole default initrd: busybox, then (with_overlay) the agent and
 * the modules of modules_dir. */
static int default_initrd(const char *modules_dir, bool with_overlay, char **ret,
                          struct pv_err *err)
{
    _cleanup_free_ char *bb = qemu_which("busybox");
    if (!bb)
        return pv_err_set(err, ENOENT,
                          "busybox not found: install busybox-static (make deps does it)");
    const char *kind = with_overlay ? "default" : "busybox";
    _cleanup_free_ char *memo = initrd_memo(kind, modules_dir, false, bb, NULL);
    if ((*ret = cache_memo_get(memo)))
        return 0;
    struct buf inputs = BUF_INIT;
    struct cpio c;
    cpio_init(&c);
    int r = add_busybox(&c, bb, &inputs, err);
    if (r == 0 && with_overlay)
        r = add_overlay(&c, modules_dir, false, &inputs, err);
    if (r == 0) {
        cpio_finish(&c);
        r = store_initrd(kind, ".cpio", &c.out, memo, &inputs, ret, err);
    }
    cpio_release(&c);
    buf_release(&inputs);
    return r;
}

/* A user initrd with the overlay appended (the kernel unpacks concatenated
 * archives in order). */
static int merged_initrd(const char *initrd, const char *overlay, const char *modules_dir,
                         bool rootfs, char **ret, struct pv_err *err)
{
    _cleanup_free_ char *memo = initrd_memo("merged", modules_dir, rootfs, initrd, overlay);
    if ((*ret = cache_memo_get(memo)))
        return 0;
    struct buf inputs = BUF_INIT, user = BUF_INIT;
    struct cpio c;
    cpio_init(&c);
    int r;
    if (overlay) {
        /* agent_overlay_path / PROVIUM_OVERLAY: the user's own overlay */
        cache_note_input(&inputs, overlay);
        r = read_file(overlay, 256u << 20, &c.out);
        if (r < 0)
            r = pv_err_set(err, -r, "agent overlay %s: %s", overlay, strerror(-r));
    } else {
        r = add_overlay(&c, modules_dir, rootfs, &inputs, err);
        if (r == 0)
            cpio_finish(&c);
    }
    if (r == 0 && initrd) {
        cache_note_input(&inputs, initrd);
        if ((r = read_file(initrd, 2u << 30, &user)) < 0)
            pv_err_set(err, -r, "initrd %s: %s", initrd, strerror(-r));
    }
    if (r == 0) {
        /* newc archives must start 4-aligned; compressed ones need no
         * padding but zeros between archives are skipped by the kernel
         * either way. */
        while (user.len % 4)
            buf_add(&user, "", 1);
        buf_add(&user, c.out.data, c.out.len);
        r = store_initrd("merged", ".img", &user, memo, &inputs, ret, err);
    }
    cpio_release(&c);
    buf_release(&user);
    buf_release(&inputs);
    return r;
}

/* boot_opts.files: one more archive after the rest, per VM. */
static int with_files(const char *initrd, const struct boot_opts *o, char **ret, struct pv_err *err)
{
    struct buf img = BUF_INIT;
    int r = initrd ? read_file(initrd, 2u << 30, &img) : 0;
    if (r < 0)
        return pv_err_set(err, -r, "initrd %s: %s", initrd, strerror(-r));
    while (img.len % 4)
        buf_add(&img, "", 1);
    struct cpio c;
    cpio_init(&c);
    for (size_t i = 0; i < o->nfiles; i++) {
        const char *p = o->files[i].path;
        while (*p == '/')
            p++;
        /* parent directories first; existing ones are left alone */
        _cleanup_free_ char *dir = xstrdup(p);
        for (char *s = strchr(dir, '/'); s; s = strchr(s + 1, '/')) {
            *s = 0;
            cpio_add_dir(&c, dir, 0755);
            *s = '/';
        }
        cpio_add_file(&c, p, o->files[i].mode ? o->files[i].mode : 0644, o->files[i].content,
                      o->files[i].len);
    }
    cpio_finish(&c);
    buf_add(&img, c.out.data, c.out.len);
    cpio_release(&c);
    static unsigned n;
    char *path = xasprintf("%s/files-%d-%u.img", vm_globals.rundir, (int)getpid(), n++);
    r = write_file_atomic(path, img.data, img.len, 0600);
    buf_release(&img);
    if (r < 0) {
        pv_err_set(err, -r, "write %s: %s", path, strerror(-r));
        free(path);
        return r;
    }
    *ret = path;
    return 0;
}

int boot_add_files(struct vm_boot *b, const struct boot_opts *o, struct pv_err *err)
{
    if (!o->nfiles)
        return 0;
    char *initrd = NULL;
    int r = with_files(b->initrd, o, &initrd, err);
    if (r < 0)
        return r;
    free(b->initrd);
    b->initrd = initrd;
    return 0;
}

/* The directory a profile's {out} names. */
static char *out_dir(const struct profile *p)
{
    if (p->build_out)
        return xstrdup(p->build_out);
    _cleanup_free_ char *root = kernel_cache_root();
    return xasprintf("%s/profiles/%s", root, p->name);
}

/* A profile path with a leading {out} expanded; NULL stays NULL. */
static char *expand_out(const struct profile *p, const char *path)
{
    if (!path || strncmp(path, "{out}", 5))
        return path ? xstrdup(path) : NULL;
    _cleanup_free_ char *out = out_dir(p);
    return xasprintf("%s%s", out, path + 5);
}

/* A profile's build command runs before its first boot, once per run (file
 * processes coordinate through a lock and a marker in the run directory),
 * with the profile's directory as cwd. Split on blanks; no shell. */
static int run_build(const struct profile *p, struct pv_err *err)
{
    _cleanup_free_ char *lockpath = xasprintf("%s/build-%s.lock", vm_globals.rundir, p->name);
    _cleanup_free_ char *done = xasprintf("%s/build-%s.done", vm_globals.rundir, p->name);
    /* the build, and the wait for another file's, end with the test's
     * deadline (or VM_WAIT_DEFAULT_S outside a test) */
    int64_t deadline = now_ms() + vm_wait_ms(-1);
    _cleanup_close_ int lock = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0)
        return pv_err_set(err, errno, "%s: %s", lockpath, strerror(errno));
    int r = flock_wait(lock, LOCK_EX, (int)MAX(deadline - now_ms(), 0));
    if (r == -ETIMEDOUT)
        return pv_err_set(err, ETIMEDOUT, "profile `%s`: another file's build did not end in time",
                          p->name);
    if (r < 0)
        return pv_err_set(err, -r, "%s: %s", lockpath, strerror(-r));
    if (access(done, F_OK) == 0)
        return 0;
    _cleanup_free_ char *out = out_dir(p);
    mkdir_p(out, 0755);
    char *argv[64];
    size_t argc = 0;
    _cleanup_free_ char *copy = xstrdup(p->build);
    char *save;
    for (char *t = strtok_r(copy, " \t", &save); t && argc < 63; t = strtok_r(NULL, " \t", &save))
        argv[argc++] = !strcmp(t, "{out}") ? out : t;
    argv[argc] = NULL;
    struct buf log = BUF_INIT;
    int status = 0;
    r = spawn_run((const char *const *)argv, p->dir, &log, 64 << 10,
                  (int)MAX(deadline - now_ms(), 1), &status, err);
    if (r == 0 && status != 0) {
        char how[64];
        spawn_describe_status(status, how, sizeof(how));
        r = pv_err_set(err, EINVAL, "profile `%s`: build `%s` %s:\n%s", p->name, p->build, how,
                       log.data ? log.data : "");
    } else if (r == -ETIMEDOUT) { /* spawn_run names only the program */
        r = pv_err_set(err, ETIMEDOUT, "profile `%s`: build `%s` did not end in time (killed)",
                       p->name, p->build);
    }
    buf_release(&log);
    if (r == 0)
        close(open(done, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    return r;
}

/* A profile's kernel, initrd, disks and base cmdline, with {out} expanded
 * and the build run first; or the built-in default profile's. */
struct resolved {
    char *kernel, *initrd, *rootfs, *overlay;
    char **disks;
    bool *disk_ro;
    size_t ndisks;
    struct buf cmdline;
    struct kernel_info k; /* default profile */
};

static void resolved_release(struct resolved *rs)
{
    free(rs->kernel);
    free(rs->initrd);
    free(rs->rootfs);
    free(rs->overlay);
    for (size_t i = 0; i < rs->ndisks; i++)
        free(rs->disks[i]);
    free(rs->disks);
    free(rs->disk_ro);
    buf_release(&rs->cmdline);
    kernel_info_release(&rs->k);
}

static int resolve_profile(const struct profile *p, struct resolved *rs, struct pv_err *err)
{
    int r;
    if (p->build && (r = run_build(p, err)) < 0)
        return r;
    if (!p->kernel)
        return pv_err_set(err, ENOTSUP,
                          "profile `%s` (%s:%d) names no kernel; a kernel found inside a `root` "
                          "directory is not supported yet: set `kernel`",
                          p->name, p->source, p->line);
    rs->kernel = expand_out(p, p->kernel);
    if (access(rs->kernel, R_OK) < 0)
        return pv_err_set(err, errno, "profile `%s` (%s:%d): kernel %s: %s", p->name, p->source,
                          p->line, rs->kernel, strerror(errno));
    rs->initrd = expand_out(p, p->initrd);
    rs->rootfs = expand_out(p, p->rootfs);
    const char *overlay = p->agent_overlay_path ? p->agent_overlay_path : getenv("PROVIUM_OVERLAY");
    rs->overlay = overlay && *overlay ? expand_out(p, overlay) : NULL;
    rs->disks = xcalloc(p->ndisks + 2, sizeof(char *));
    rs->disk_ro = xcalloc(p->ndisks + 2, sizeof(bool));
    if (rs->rootfs)
        rs->disks[rs->ndisks++] = xstrdup(rs->rootfs);
    for (size_t i = 0; i < p->ndisks; i++) {
        rs->disk_ro[rs->ndisks] = p->disk_readonly && p->disk_readonly[i];
        rs->disks[rs->ndisks++] = expand_out(p, p->disks[i]);
    }
    if (p->cmdline_file_pending) {
        /* made by the build: its text first, then cmdline */
        _cleanup_free_ char *path = expand_out(p, p->cmdline_file);
        struct buf text = BUF_INIT;
        r = read_file(path, 1 << 20, &text);
        if (r < 0) {
            buf_release(&text);
            return pv_err_set(err, -r, "profile `%s`: cmdline_file %s: %s", p->name, path,
                              strerror(-r));
        }
        /* one line of words: blanks of any kind become single spaces */
        _cleanup_free_ char *copy = xstrdup(text.data ? text.data : "");
        char *save;
        for (char *w = strtok_r(copy, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save))
            buf_addf(&rs->cmdline, "%s%s", rs->cmdline.len ? " " : "", w);
        buf_release(&text);
    }
    if (p->cmdline && *p->cmdline)
        buf_addf(&rs->cmdline, "%s%s", rs->cmdline.len ? " " : "", p->cmdline);
    return 0;
}

/* The rules provium applies to every cmdline (docs/configuration.md). */
static int finish_cmdline(const char *name, struct buf *cmd, bool inject, const char *init,
                          bool rootfs, struct pv_err *err)
{
    if (inject) {
        _cleanup_free_ char *rd = param_value(cmd->data ? cmd->data : "", "rdinit");
        if (rd && strcmp(rd, AGENT_PATH))
            return pv_err_set(err, EINVAL,
                              "profile `%s`: the cmdline sets rdinit=%s, which conflicts with "
                              "the injected agent (rdinit=" AGENT_PATH
                              "); remove it, or set inject_agent = false if the image starts "
                              "provium-agent itself",
                              name, rd);
    }
    if (!has_param(cmd->data ? cmd->data : "", "console"))
        buf_addf(cmd, "%sconsole=ttyS0", cmd->len ? " " : "");
    if (!has_param(cmd->data, "panic"))
        buf_adds(cmd, " panic=-1");
    /* The console keeps notices, warnings and worse; every message reaches
     * the kernel log through /dev/kmsg anyway. Each byte on the emulated
     * serial port costs the guest, 0.3 s of a TCG boot (docs/configuration.md). */
    if (!has_param(cmd->data, "loglevel") && !has_param(cmd->data, "quiet") &&
        !has_param(cmd->data, "debug") && !has_param(cmd->data, "ignore_loglevel"))
        buf_adds(cmd, " loglevel=6");
    if (inject) {
        if (!has_param(cmd->data, "rdinit"))
            buf_adds(cmd, " rdinit=" AGENT_PATH);
        if (init)
            buf_addf(cmd, " provium.init=%s", init);
        if (rootfs)
            buf_adds(cmd, " provium.root=/dev/vda");
    }
    if (vm_globals.transport == TRANSPORT_VSOCK)
        buf_addf(cmd, " provium.transport=vsock provium.vsock_port=%d", PV_VSOCK_PORT);
    return 0;
}

static int unknown_profile(const struct config *cfg, const char *name, struct pv_err *err)
{
    if (!cfg || !cfg->path)
        return pv_err_set(err, ENOENT,
                          "unknown profile `%s`: there is no provium.toml, so only the built-in "
                          "profile `default` exists",
                          name);
    struct buf names = BUF_INIT;
    for (size_t i = 0; i < cfg->nprofiles; i++)
        buf_addf(&names, "%s`%s`", i ? ", " : "", cfg->profiles[i].name);
    int r = pv_err_set(err, ENOENT, "unknown profile `%s` (%s defines: %s)", name, cfg->path,
                       names.len ? names.data : "none");
    buf_release(&names);
    return r;
}

int boot_plan(const struct config *cfg, const char *name, const struct boot_opts *o,
              struct vm_boot *b, struct pv_err *err)
{
    const struct profile *p = cfg ? config_profile(cfg, name) : NULL;
    struct resolved rs = {0};
    _cleanup_free_ char *base_initrd = NULL, *modules = NULL;
    int r = 0;
    memset(b, 0, sizeof(*b));
    if (!p && strcmp(name, DEFAULT_PROFILE))
        return unknown_profile(cfg, name, err);

    if (p) {
        r = resolve_profile(p, &rs, err);
    } else {
        _cleanup_free_ char *root = kernel_cache_root();
        r = kernel_find_default(root, &rs.k, err);
        if (r == 0) {
            rs.kernel = xstrdup(rs.k.vmlinuz);
            buf_adds(&rs.cmdline, DEFAULT_CMDLINE);
        }
    }
    if (r < 0)
        goto out;
    if (o->kernel_cmdline) {
        buf_consume(&rs.cmdline, rs.cmdline.len);
        buf_adds(&rs.cmdline, o->kernel_cmdline);
    }
    if (o->kernel_cmdline_append)
        buf_addf(&rs.cmdline, "%s%s", rs.cmdline.len ? " " : "", o->kernel_cmdline_append);

    /* a profile without `modules` finds them as the default profile does:
     * beside its bzImage, or the host's for its version */
    if (!p && rs.k.modules_dir)
        modules = xstrdup(rs.k.modules_dir);
    else if (p && p->modules)
        modules = xstrdup(p->modules);
    else if (p && p->inject_agent)
        modules = kernel_modules_for(rs.kernel);
    r = kernel_check_boot(rs.kernel, p && !p->inject_agent ? NULL : modules, err);
    if (r < 0) {
        pv_err_wrap(err, "profile `%s`", name);
        goto out;
    }
    bool inject = p ? p->inject_agent : true;
    bool rootfs = rs.rootfs && !rs.initrd;
    /* A profile without initrd (or root disk) gets the default profile's
     * busybox, so that vm:run("...") finds a shell; initrd = "none" keeps
     * the agent alone (docs/configuration.md). */
    if (p && inject && !rs.initrd && !rs.rootfs && !p->initrd_none) {
        r = default_initrd(NULL, false, &rs.initrd, err);
        if (r < 0) {
            pv_err_wrap(err, "profile `%s`", name);
            goto out;
        }
    }
    r = finish_cmdline(name, &rs.cmdline, inject, p ? p->init : NULL, rootfs, err);
    if (r < 0)
        goto out;

    if (!p)
        r = default_initrd(rs.k.modules_dir, true, &base_initrd, err);
    else if (inject)
        r = merged_initrd(rs.initrd, rs.overlay, modules, rootfs, &base_initrd, err);
    else
        base_initrd = steal_pointer(&rs.initrd);
    if (r < 0) {
        pv_err_wrap(err, "profile `%s`", name);
        goto out;
    }
    b->initrd = steal_pointer(&base_initrd);
    b->kernel = steal_pointer(&rs.kernel);
    b->cmdline = buf_steal(&rs.cmdline);
    if (rs.ndisks) {
        b->disks = steal_pointer(&rs.disks);
        b->disk_ro = steal_pointer(&rs.disk_ro);
        rs.ndisks = 0;
    }
    b->modules_dir = steal_pointer(&modules);
    b->vmlinux = p ? expand_out(p, p->vmlinux) : NULL;
    if (b->vmlinux && access(b->vmlinux, R_OK) < 0) {
        r = pv_err_set(err, errno,
                       "profile `%s`: vmlinux `%s`: %s (the kernel's ELF image with "
                       "debug info, for symbolized stacks: docs/splats.md#symbolized-stacks)",
                       name, b->vmlinux, strerror(errno));
        goto out;
    }
    b->memory = o->memory ? o->memory : 512ull << 20;
    b->cpus = o->cpus ? o->cpus : 1;
    b->agent_timeout = o->agent_timeout > 0             ? o->agent_timeout
                       : p && p->agent_boot_timeout > 0 ? p->agent_boot_timeout
                                                        : 30 * vm_globals.timeout_scale;
    b->has_rng_seed = o->has_rng_seed;
    b->rng_seed = o->rng_seed;
    b->no_pvh = o->has_pvh ? !o->pvh : p && !p->pvh;
out:
    resolved_release(&rs);
    if (r < 0)
        vm_boot_release(b);
    return r;
}
