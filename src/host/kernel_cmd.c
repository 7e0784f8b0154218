/* `provium kernel ...`: fetch, list, path, ensure, initrd, options, check,
 * config and build (docs/kernels.md). Returns the exit status. */
#include <stdio.h>

#include "boot.h"
#include "kconfig.h"
#include "kernel.h"
#include "vm.h"

/* The configuration `provium kernel check` reads for a kernel image: its
 * own (IKCONFIG), else a file kept beside it or for its version. */
static int kernel_check_read(const char *image, struct kconfig *ret, char **ret_path,
                             struct pv_err *err)
{
    int r = kconfig_read(image, ret, err);
    _cleanup_free_ char *version = r < 0 ? kernel_image_version(image) : NULL;
    if (!version) {
        *ret_path = xstrdup(image);
        return r;
    }
    char *path = kernel_find_config(image, version);
    if (!path)
        return pv_err_wrap(err,
                           "and no config of %s was found beside it, in /boot or in "
                           "/usr/src/linux-headers-%s; give its .config",
                           version, version);
    *ret_path = path;
    return kconfig_read(path, ret, err);
}

/* provium kernel check [FILE]: 0 when every required option is set, 1
 * when one is missing, 2 when there is nothing to check. */
static int cmd_kernel_check(int argc, char **argv, const char *root)
{
    struct pv_err err = {0};
    struct kernel_info k = {0};
    const char *file = argc > 3 ? argv[3] : NULL;
    if (!file && kernel_find_default(root, &k, &err) < 0) {
        fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
        return 2;
    }
    struct kconfig c = {0};
    _cleanup_free_ char *path = NULL;
    int r = kernel_check_read(file ? file : k.vmlinuz, &c, &path, &err);
    kernel_info_release(&k);
    if (r < 0) {
        fprintf(stderr, "provium: kernel check: %s\n", err.msg);
        return 2;
    }
    struct kconfig_miss *miss = xcalloc(kconfig_noptions, sizeof(*miss));
    size_t required = 0, nmiss = kconfig_check(&c, miss, &required), nreq = 0;
    bool modules = kconfig_get(&c, "MODULES") != NULL;
    for (size_t i = 0; i < kconfig_noptions; i++)
        nreq += kconfig_options[i].need == KCONFIG_REQUIRED;
    printf("%s:\n", path);
    for (int pass = 0; pass < 2; pass++) {
        enum kconfig_need need = pass ? KCONFIG_RECOMMENDED : KCONFIG_REQUIRED;
        bool head = false;
        for (size_t i = 0; i < nmiss; i++) {
            const struct kconfig_option *o = miss[i].opt;
            if (o->need != need)
                continue;
            if (!head)
                printf("%s, missing:\n", pass ? "recommended" : "required");
            head = true;
            _cleanup_free_ char *name = xasprintf("CONFIG_%s", o->name);
            _cleanup_free_ char *have = !miss[i].have ? xstrdup("")
                                        : !strcmp(miss[i].have, "m") && o->module_ok && !modules
                                            ? xstrdup(" (is m, but MODULES is off)")
                                            : xasprintf(" (is %s, needs y)", miss[i].have);
            printf("  %-24s %s%s%s%s\n", name, o->feature ? o->feature : "", o->feature ? ": " : "",
                   o->why, have);
        }
    }
    if (required)
        printf("%zu of the %zu required options missing: this kernel will not reach the agent "
               "(provium kernel config DIR turns them on, docs/kernels.md)\n",
               required, nreq);
    else
        printf("all %zu required options set\n", nreq);
    free(miss);
    kconfig_release(&c);
    return required ? 1 : 0;
}

/* provium kernel config | build [DIR] [--minimal] */
static int cmd_kernel_tree(int argc, char **argv)
{
    bool build = !strcmp(argv[2], "build"), minimal = false;
    const char *dir = ".";
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--minimal"))
            minimal = true;
        else if (argv[i][0] == '-') {
            fprintf(stderr, "provium kernel %s: unknown option %s\n", argv[2], argv[i]);
            return 2;
        } else
            dir = argv[i];
    }
    _cleanup_free_ char *abs = realpath(dir, NULL);
    if (!abs) {
        fprintf(stderr, "provium kernel %s: %s: %s\n", argv[2], dir, strerror(errno));
        return 2;
    }
    struct pv_err err = {0};
    struct buf out = BUF_INIT;
    int64_t start = now_ms();
    int r = kconfig_configure(abs, minimal, &out, &err);
    fwrite(out.data ? out.data : "", 1, out.len, stdout);
    buf_release(&out);
    if (r == 0 && build) {
        long jobs = sysconf(_SC_NPROCESSORS_ONLN);
        printf("provium: make -j%ld bzImage in %s (this takes minutes)\n", jobs, abs);
        fflush(stdout);
        _cleanup_free_ char *bz = NULL, *mods = NULL;
        r = kconfig_build(abs, (int)jobs, &bz, &mods, &err);
        if (r == 0) {
            printf("provium: built in %.0f s; to boot it:\nPROVIUM_KERNEL=%s\n",
                   (double)(now_ms() - start) / 1000, bz);
            if (mods)
                printf("PROVIUM_MODULES=%s\n", mods);
        }
    }
    if (r < 0) {
        fprintf(stderr, "provium: kernel %s: %s\n", argv[2], err.msg);
        return 2;
    }
    return 0;
}

int cmd_kernel(int argc, char **argv)
{
    const char *sub = argc > 2 ? argv[2] : "";
    _cleanup_free_ char *root = NULL;
    struct pv_err err = {0};
    if (!strcmp(sub, "config") || !strcmp(sub, "build"))
        return cmd_kernel_tree(argc, argv);
    if (!strcmp(sub, "options")) {
        struct buf md = BUF_INIT;
        kconfig_markdown(&md);
        fwrite(md.data, 1, md.len, stdout);
        buf_release(&md);
        return 0;
    }
    if (kernel_cache_dir(&root, &err) < 0) {
        fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
        return 2;
    }
    if (!strcmp(sub, "check"))
        return cmd_kernel_check(argc, argv, root);
    if (!strcmp(sub, "initrd")) {
        /* the default profile's, as a boot would make it: a starting
         * point for an initrd of one's own (docs/kernels.md) */
        struct vm_boot b = {0};
        if (boot_plan(NULL, DEFAULT_PROFILE, &(struct boot_opts){0}, &b, &err) < 0) {
            fprintf(stderr, "provium: kernel initrd: %s%s\n", err.msg, pv_err_story(&err));
            return 2;
        }
        printf("%s\n", b.initrd);
        vm_boot_release(&b);
        return 0;
    }
    if (!strcmp(sub, "fetch") || !strcmp(sub, "ensure")) {
        struct kernel_info k = {0};
        if (!strcmp(sub, "ensure") && kernel_find_default(root, &k, &err) == 0) {
            kernel_info_release(&k);
            return 0;
        }
        fprintf(stderr, "provium: fetching Debian's cloud kernel...\n");
        if (kernel_fetch(root, &k, &err) < 0) {
            fprintf(stderr, "provium: kernel fetch: %s%s\n", err.msg, pv_err_story(&err));
            return 2;
        }
        printf("kernel %s\n  vmlinuz %s\n  modules %s\n", k.version, k.vmlinuz,
               k.modules_dir ? k.modules_dir : "(none)");
        kernel_info_release(&k);
        return 0;
    }
    if (!strcmp(sub, "path")) {
        struct kernel_info k = {0};
        if (kernel_find_default(root, &k, &err) < 0) {
            fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
            return 2;
        }
        printf("%s\n%s\n", k.vmlinuz, k.modules_dir ? k.modules_dir : "");
        kernel_info_release(&k);
        return 0;
    }
    if (!strcmp(sub, "list")) {
        struct kernel_info *ks = NULL;
        size_t n = 0;
        if (kernel_list(root, &ks, &n, &err) < 0) {
            fprintf(stderr, "provium: kernel list: %s%s\n", err.msg, pv_err_story(&err));
            return 2;
        }
        if (n == 0)
            printf("no kernels in %s/kernels (run `provium kernel fetch`)\n", root);
        for (size_t i = 0; i < n; i++)
            printf("%s%s\t%s\n", ks[i].version, i == 0 ? " (default)" : "", ks[i].vmlinuz);
        kernel_info_free_array(ks, n);
        return 0;
    }
    fprintf(stderr, "provium kernel: expected fetch, list, path, ensure, initrd, options, check, "
                    "config or build\n");
    return 2;
}
