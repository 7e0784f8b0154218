#include "kernel.h"

#include "spawn.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#define KERNEL_META_PKG "linux-image-cloud-amd64"
#define KERNEL_PKG_PREFIX "linux-image-"
#define KERNEL_PKG_SUFFIX "-cloud-amd64"

/* Generous: the .deb is about 25 MB and mirrors can be slow. */
#define KERNEL_APT_CACHE_MS (2 * 60 * 1000)
#define KERNEL_DOWNLOAD_MS (20 * 60 * 1000)
#define KERNEL_UNPACK_MS (5 * 60 * 1000)
#define KERNEL_OUTPUT_MAX (256 * 1024)

int kernel_cache_dir(char **ret, struct pv_err *err)
{
    /* resolved and checked once: main does it before anything runs, so
     * the callers of kernel_cache_root after it cannot fail */
    static char *root;
    const char *s = getenv("PROVIUM_CACHE");
    *ret = NULL;
    if (!root && s && *s)
        root = xstrdup(s); /* the user's own choice, taken as it is */
    if (!root) {
        int r = user_cache_dir(USER_DIR_MAKE, &root, err);
        if (r < 0)
            return r;
    }
    *ret = xstrdup(root);
    return 0;
}

char *kernel_cache_root(void)
{
    char *root;
    return kernel_cache_dir(&root, NULL) == 0 ? root : NULL;
}

void kernel_info_release(struct kernel_info *k)
{
    if (!k)
        return;
    free(k->version);
    free(k->vmlinuz);
    free(k->modules_dir);
    k->version = k->vmlinuz = k->modules_dir = NULL;
}

void kernel_info_free_array(struct kernel_info *k, size_t n)
{
    if (!k)
        return;
    for (size_t i = 0; i < n; i++)
        kernel_info_release(&k[i]);
    free(k);
}

static bool kernel_is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, R_OK) == 0;
}

/* The last few lines of a command's output, for an error message. */
static const char *kernel_tail(struct buf *out)
{
    if (!out->len)
        return "(no output)";
    while (out->len && (out->data[out->len - 1] == '\n' || out->data[out->len - 1] == ' '))
        out->data[--out->len] = 0;
    const char *p = out->data + out->len;
    for (int lines = 0; p > out->data && lines < 3;) {
        p--;
        if (*p == '\n')
            lines++;
    }
    if (*p == '\n')
        p++;
    if (out->data + out->len - p > 600)
        p = out->data + out->len - 600;
    return p;
}

/* Run a command that must exit 0; out (optional) gets its output. */
static int kernel_run(const char *const argv[], const char *cwd, int timeout_ms,
                      struct buf *ret_out, struct pv_err *err)
{
    struct buf local = BUF_INIT;
    struct buf *out = ret_out ? ret_out : &local;
    int status = 0;
    int r = spawn_run(argv, cwd, out, KERNEL_OUTPUT_MAX, timeout_ms, &status, err);
    if (r == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char desc[128];
        spawn_describe_status(status, desc, sizeof(desc));
        r = pv_err_set(err, EIO, "%s %s %s: %s", argv[0], argv[1] ? argv[1] : "", desc,
                       kernel_tail(out));
    }
    buf_release(&local);
    return r;
}

static bool kernel_version_ok(const char *v)
{
    if (!*v || *v == '.')
        return false;
    for (const char *p = v; *p; p++)
        if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') || ('0' <= *p && *p <= '9') ||
              strchr(".+_-~", *p)))
            return false;
    return true;
}

/* The versioned package the meta package currently depends on, from the
 * candidate's record (raw Packages fields, so no translated labels):
 *   Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2) */
static int kernel_find_package(char **ret_pkg, struct pv_err *err)
{
    const char *argv[] = {"apt-cache", "show", "--no-all-versions", KERNEL_META_PKG, NULL};
    struct buf out = BUF_INIT;
    int r = kernel_run(argv, NULL, KERNEL_APT_CACHE_MS, &out, err);
    if (r < 0) {
        buf_release(&out);
        if (r == -ENOENT)
            return pv_err_wrap(err, "fetching a kernel needs Debian's apt");
        return pv_err_wrap(err, "cannot find %s (try `apt-get update`)", KERNEL_META_PKG);
    }
    buf_add(&out, "", 0); /* data non-NULL even without output */
    char *save = NULL;
    for (char *line = strtok_r(out.data, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "Depends:", 8))
            continue;
        /* "a (>= 1), b | c": alternatives count as well. */
        char *save2 = NULL;
        for (char *pkg = strtok_r(line + 8, ",|", &save2); pkg;
             pkg = strtok_r(NULL, ",|", &save2)) {
            pkg += strspn(pkg, " \t");
            pkg[strcspn(pkg, " \t\r(:")] = 0;
            size_t len = strlen(pkg), pl = strlen(KERNEL_PKG_PREFIX);
            size_t sl = strlen(KERNEL_PKG_SUFFIX);
            if (strcmp(pkg, KERNEL_META_PKG) && len > pl + sl &&
                !strncmp(pkg, KERNEL_PKG_PREFIX, pl) &&
                !strcmp(pkg + len - sl, KERNEL_PKG_SUFFIX) && kernel_version_ok(pkg + pl)) {
                *ret_pkg = xstrdup(pkg);
                buf_release(&out);
                return 0;
            }
        }
        break;
    }
    buf_release(&out);
    return pv_err_set(err, ENOENT,
                      "the candidate %s depends on no linux-image-*%s package (try `apt-get "
                      "update`)",
                      KERNEL_META_PKG, KERNEL_PKG_SUFFIX);
}

/* dir (malloc'd, taken) if it is a modules tree (it has a modules.dep),
 * else NULL. */
static char *modules_tree(char *dir)
{
    _cleanup_free_ char *dep = xasprintf("%s/modules.dep", dir);
    if (kernel_is_file(dep))
        return dir;
    free(dir);
    return NULL;
}

/* Fill ret from a complete cache directory <kdir>/<version>. */
static int kernel_from_cache(const char *kdir, const char *version, struct kernel_info *ret)
{
    _cleanup_free_ char *vmlinuz = xasprintf("%s/%s/vmlinuz", kdir, version);
    if (!kernel_is_file(vmlinuz))
        return -ENOENT;
    /* with links resolved: a suite's cache links a kernel of the user's
     * cache in (tests/lib/suite_cache.sh), and what reads the paths (a
     * copy for another user, say) wants the files */
    _cleanup_free_ char *dir = xasprintf("%s/%s", kdir, version);
    char *real = realpath(dir, NULL);
    if (!real)
        return -errno;
    ret->version = xstrdup(version);
    ret->vmlinuz = xasprintf("%s/vmlinuz", real);
    ret->modules_dir = modules_tree(xasprintf("%s/lib/modules/%s", real, version));
    free(real);
    return 0;
}

/* <cache_root>/kernels, created, as an absolute path. */
static int kernel_dir(const char *cache_root, bool create, char **ret, struct pv_err *err)
{
    _cleanup_free_ char *kdir = xasprintf("%s/kernels", cache_root);
    if (create) {
        int r = mkdir_p(kdir, 0755);
        if (r < 0)
            return pv_err_set(err, -r, "cannot create %s: %s", kdir, strerror(-r));
    }
    char *abs = realpath(kdir, NULL);
    if (!abs)
        return pv_err_set(err, errno, "%s: %s", kdir, strerror(errno));
    *ret = abs;
    return 0;
}

static char *kernel_find_deb(const char *dir, const char *pkg)
{
    DIR *d = opendir(dir);
    if (!d)
        return NULL;
    char *found = NULL;
    size_t pl = strlen(pkg);
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (len > pl + 5 && !strncmp(de->d_name, pkg, pl) && de->d_name[pl] == '_' &&
            !strcmp(de->d_name + len - 4, ".deb"))
            found = xasprintf("%s/%s", dir, de->d_name);
    }
    closedir(d);
    return found;
}

static int kernel_depmod(const char *base, const char *version, struct pv_err *err)
{
    /* A non-root PATH often lacks the sbin directories. */
    static const char *const progs[] = {"depmod", "/usr/sbin/depmod", "/sbin/depmod"};
    int r = -ENOENT;
    for (size_t i = 0; i < ARRAY_SIZE(progs) && r == -ENOENT; i++) {
        const char *argv[] = {progs[i], "-b", base, version, NULL};
        r = kernel_run(argv, NULL, KERNEL_UNPACK_MS, NULL, err);
    }
    if (r == -ENOENT)
        return pv_err_set(err, ENOENT, "depmod not found (install kmod)");
    return r;
}

/* Turn the unpacked package in tmp/x into the cache layout in tmp. */
static int kernel_build_tree(const char *tmp, const char *deb, const char *version,
                             struct pv_err *err)
{
    _cleanup_free_ char *x = xasprintf("%s/x", tmp);
    const char *unpack[] = {"dpkg-deb", "-x", deb, x, NULL};
    int r = kernel_run(unpack, NULL, KERNEL_UNPACK_MS, NULL, err);
    if (r < 0)
        return pv_err_wrap(err, "cannot unpack %s", deb);
    unlink(deb);

    _cleanup_free_ char *src_vmlinuz = xasprintf("%s/boot/vmlinuz-%s", x, version);
    _cleanup_free_ char *vmlinuz = xasprintf("%s/vmlinuz", tmp);
    if (rename(src_vmlinuz, vmlinuz) < 0)
        return pv_err_set(err, errno, "%s: no boot/vmlinuz-%s in it: %s", deb, version,
                          strerror(errno));

    /* its config, for `provium kernel check` (optional: nothing needs it) */
    _cleanup_free_ char *src_config = xasprintf("%s/boot/config-%s", x, version);
    _cleanup_free_ char *config = xasprintf("%s/config", tmp);
    (void)rename(src_config, config);

    /* Debian 12 ships lib/modules, merged-/usr releases usr/lib/modules. */
    _cleanup_free_ char *src_mods = xasprintf("%s/lib/modules/%s", x, version);
    struct stat st;
    if (lstat(src_mods, &st) < 0 || !S_ISDIR(st.st_mode)) {
        free(src_mods);
        src_mods = xasprintf("%s/usr/lib/modules/%s", x, version);
    }
    _cleanup_free_ char *mods_parent = xasprintf("%s/lib/modules", tmp);
    _cleanup_free_ char *mods = xasprintf("%s/%s", mods_parent, version);
    r = mkdir_p(mods_parent, 0755);
    if (r < 0)
        return pv_err_set(err, -r, "cannot create %s: %s", mods_parent, strerror(-r));
    if (rename(src_mods, mods) < 0)
        return pv_err_set(err, errno, "%s: no lib/modules/%s in it: %s", deb, version,
                          strerror(errno));
    rm_rf(x);
    /* Links to headers this cache does not have. */
    _cleanup_free_ char *build = xasprintf("%s/build", mods);
    _cleanup_free_ char *source = xasprintf("%s/source", mods);
    unlink(build);
    unlink(source);

    r = kernel_depmod(tmp, version, err);
    if (r < 0)
        return pv_err_wrap(err, "depmod for %s", version);
    _cleanup_free_ char *dep = xasprintf("%s/modules.dep", mods);
    if (!kernel_is_file(dep))
        return pv_err_set(err, EIO, "depmod -b %s %s wrote no %s", tmp, version, dep);
    return 0;
}

int kernel_fetch(const char *cache_root, struct kernel_info *ret, struct pv_err *err)
{
    _cleanup_free_ char *pkg = NULL, *kdir = NULL, *tmp = NULL, *deb = NULL, *dest = NULL;
    int r = kernel_find_package(&pkg, err);
    if (r < 0)
        return r;
    const char *version = pkg + strlen(KERNEL_PKG_PREFIX);

    r = kernel_dir(cache_root, true, &kdir, err);
    if (r < 0)
        return r;
    if (kernel_from_cache(kdir, version, ret) == 0)
        return 0;

    /* Inside kernels/ so the final rename stays on one filesystem; the dot
     * keeps it out of kernel_list(). */
    tmp = xasprintf("%s/.fetch-XXXXXX", kdir);
    if (!mkdtemp(tmp))
        return pv_err_set(err, errno, "cannot create a directory in %s: %s", kdir, strerror(errno));
    /* apt hands the download to its unprivileged _apt user, which needs to
     * reach the directory (it warns and downloads as root otherwise). */
    chmod(tmp, 0755);

    const char *download[] = {"apt-get", "download", pkg, NULL};
    r = kernel_run(download, tmp, KERNEL_DOWNLOAD_MS, NULL, err);
    if (r < 0) {
        pv_err_wrap(err,
                    "cannot download %s (the package lists may be stale: try `apt-get "
                    "update`)",
                    pkg);
        goto out;
    }
    deb = kernel_find_deb(tmp, pkg);
    if (!deb) {
        r = pv_err_set(err, ENOENT, "apt-get download %s left no %s_*.deb in %s", pkg, pkg, tmp);
        goto out;
    }
    r = kernel_build_tree(tmp, deb, version, err);
    if (r < 0)
        goto out;

    dest = xasprintf("%s/%s", kdir, version);
    if (rename(tmp, dest) < 0) {
        /* A concurrent fetch won the race: use its copy. */
        if (errno != EEXIST && errno != ENOTEMPTY) {
            r = pv_err_set(err, errno, "cannot rename %s to %s: %s", tmp, dest, strerror(errno));
            goto out;
        }
    } else {
        free(steal_pointer(&tmp));
    }
    r = kernel_from_cache(kdir, version, ret);
    if (r < 0)
        pv_err_set(err, -r, "%s is incomplete: remove it and fetch again", dest);
out:
    if (tmp)
        rm_rf(tmp);
    return r;
}

static int kernel_cmp_newest(const void *a, const void *b)
{
    const struct kernel_info *x = a, *y = b;
    return strverscmp(y->version, x->version);
}

int kernel_list(const char *cache_root, struct kernel_info **ret, size_t *ret_n, struct pv_err *err)
{
    *ret = NULL;
    *ret_n = 0;
    _cleanup_free_ char *kdir = NULL;
    struct pv_err ignored;
    if (kernel_dir(cache_root, false, &kdir, &ignored) < 0) {
        if (ignored.code == ENOENT)
            return 0;
        return pv_err_set(err, ignored.code, "%s", ignored.msg);
    }
    DIR *d = opendir(kdir);
    if (!d)
        return errno == ENOENT ? 0 : pv_err_set(err, errno, "%s: %s", kdir, strerror(errno));
    struct kernel_info *list = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        struct kernel_info k = {0};
        if (kernel_from_cache(kdir, de->d_name, &k) < 0)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            list = xrealloc(list, cap * sizeof(*list));
        }
        list[n++] = k;
    }
    closedir(d);
    if (n)
        qsort(list, n, sizeof(*list), kernel_cmp_newest);
    *ret = list;
    *ret_n = n;
    return 0;
}

char *kernel_image_version(const char *path)
{
    unsigned char h[65536];
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = pread(fd, h, sizeof(h), 0);
    if (n < 0x210 || h[0x1fe] != 0x55 || h[0x1ff] != 0xaa || memcmp(h + 0x202, "HdrS", 4))
        return NULL;
    size_t off = (size_t)(h[0x20e] | h[0x20f] << 8) + 0x200;
    if (off >= (size_t)n)
        return NULL;
    size_t len = 0;
    while (off + len < (size_t)n && h[off + len] > ' ' && h[off + len] < 0x7f)
        len++;
    if (!len || off + len == (size_t)n)
        return NULL;
    return xstrndup((const char *)h + off, len);
}

const char *kernel_not_bzimage(const char *path)
{
    unsigned char h[0x210];
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL; /* the caller's open names the error */
    ssize_t n = pread(fd, h, sizeof(h), 0);
    if (n >= 4 && !memcmp(h,
                          "\x7f"
                          "ELF",
                          4))
        return "is an ELF file (a vmlinux?), not a bzImage: use arch/x86/boot/bzImage";
    if (n < (ssize_t)sizeof(h) || h[0x1fe] != 0x55 || h[0x1ff] != 0xaa ||
        memcmp(h + 0x202, "HdrS", 4))
        return "is not a bzImage (no x86 boot header): use arch/x86/boot/bzImage of a kernel "
               "tree";
    return NULL;
}

char *kernel_find_config(const char *vmlinuz, const char *version)
{
    _cleanup_free_ char *dir = xstrdup(vmlinuz);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    size_t len = strlen(vmlinuz), tl = strlen("/arch/x86/boot/bzImage");
    char *cands[6] = {0};
    size_t n = 0;
    cands[n++] = xasprintf("%s/config", dir); /* a fetched kernel's */
    if (version) {
        cands[n++] = xasprintf("%s/config-%s", dir, version);
        cands[n++] = xasprintf("/boot/config-%s", version);
        cands[n++] = xasprintf("/usr/src/linux-headers-%s/.config", version);
    }
    if (len > tl && !strcmp(vmlinuz + len - tl, "/arch/x86/boot/bzImage"))
        cands[n++] = xasprintf("%.*s/.config", (int)(len - tl), vmlinuz);
    char *found = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!found && kernel_is_file(cands[i]))
            found = steal_pointer(&cands[i]);
        free(cands[i]);
    }
    return found;
}

/* A versioned folder under dir that has a modules.dep (the one named
 * version first), or NULL. */
static char *kernel_versioned_child(const char *dir, const char *version)
{
    char *want = version ? modules_tree(xasprintf("%s/%s", dir, version)) : NULL;
    if (want)
        return want;
    DIR *d = opendir(dir);
    char *found = NULL;
    struct dirent *de;
    while (d && !found && (de = readdir(d)))
        if (de->d_name[0] != '.')
            found = modules_tree(xasprintf("%s/%s", dir, de->d_name));
    if (d)
        closedir(d);
    return found;
}

int kernel_check_boot(const char *vmlinuz, const char *modules_dir, struct pv_err *err)
{
    const char *why = kernel_not_bzimage(vmlinuz);
    if (why)
        return pv_err_set(err, ENOEXEC, "kernel %s %s", vmlinuz, why);
    if (!modules_dir)
        return 0;
    _cleanup_free_ char *version = kernel_image_version(vmlinuz);
    _cleanup_free_ char *dep = xasprintf("%s/modules.dep", modules_dir);
    if (!kernel_is_file(dep)) {
        _cleanup_free_ char *child = kernel_versioned_child(modules_dir, version);
        if (child)
            return pv_err_set(err, ENOENT,
                              "modules directory %s holds the modules of each version in a "
                              "folder of its own: use %s",
                              modules_dir, child);
        return 0; /* kmod_order names what is missing */
    }
    const char *base = strrchr(modules_dir, '/') ? strrchr(modules_dir, '/') + 1 : modules_dir;
    /* only a folder named like a release says which one it is */
    if (version && *base >= '0' && *base <= '9' && strcmp(base, version))
        return pv_err_set(err, EINVAL,
                          "modules directory %s is of kernel %s, but %s is %s: install this "
                          "kernel's modules (`make modules_install INSTALL_MOD_PATH=DIR`) and "
                          "use DIR/lib/modules/%s (docs/kernels.md)",
                          modules_dir, base, vmlinuz, version, version);
    return 0;
}

static char *kernel_basename_dup(const char *path)
{
    const char *b = strrchr(path, '/');
    return xstrdup(b ? b + 1 : path);
}

/* The modules of the kernel at vmlinuz, of this version, where an installed
 * kernel keeps them: beside it (provium's cache, an INSTALL_MOD_PATH tree
 * that holds the bzImage too), then the host's /lib/modules. NULL if
 * neither has a modules.dep. */
static char *modules_for(const char *vmlinuz, const char *version)
{
    const char *slash = strrchr(vmlinuz, '/');
    char *beside =
        modules_tree(xasprintf("%.*s/lib/modules/%s", (int)(slash - vmlinuz), vmlinuz, version));
    return beside ? beside : modules_tree(xasprintf("/lib/modules/%s", version));
}

char *kernel_modules_for(const char *vmlinuz)
{
    _cleanup_free_ char *abs = realpath(vmlinuz, NULL);
    _cleanup_free_ char *version = abs ? kernel_image_version(abs) : NULL;
    return version ? modules_for(abs, version) : NULL;
}

static int kernel_from_env(const char *kpath, struct kernel_info *ret, struct pv_err *err)
{
    _cleanup_free_ char *vmlinuz = realpath(kpath, NULL);
    if (!vmlinuz)
        return pv_err_set(err, errno, "PROVIUM_KERNEL=%s: %s", kpath, strerror(errno));
    if (!kernel_is_file(vmlinuz))
        return pv_err_set(err, EACCES, "PROVIUM_KERNEL=%s: not a readable file", kpath);
    _cleanup_free_ char *mdir = NULL;
    const char *m = getenv("PROVIUM_MODULES");
    if (m && *m) {
        mdir = realpath(m, NULL);
        if (!mdir)
            return pv_err_set(err, errno, "PROVIUM_MODULES=%s: %s", m, strerror(errno));
    }
    char *version = kernel_image_version(vmlinuz);
    if (!mdir && version)
        mdir = modules_for(vmlinuz, version);
    if (!version)
        version = kernel_basename_dup(mdir ? mdir : vmlinuz);
    ret->version = version;
    ret->vmlinuz = steal_pointer(&vmlinuz);
    ret->modules_dir = steal_pointer(&mdir);
    return 0;
}

int kernel_find_default(const char *cache_root, struct kernel_info *ret, struct pv_err *err)
{
    *ret = (struct kernel_info){0};
    const char *k = getenv("PROVIUM_KERNEL");
    if (k && *k)
        return kernel_from_env(k, ret, err);

    struct kernel_info *list = NULL;
    size_t n = 0;
    int r = kernel_list(cache_root, &list, &n, err);
    if (r < 0)
        return r;
    if (n) {
        *ret = list[0];
        list[0] = (struct kernel_info){0};
        kernel_info_free_array(list, n);
        return 0;
    }

    struct utsname u;
    if (uname(&u) == 0) {
        _cleanup_free_ char *vmlinuz = xasprintf("/boot/vmlinuz-%s", u.release);
        if (kernel_is_file(vmlinuz)) {
            ret->version = xstrdup(u.release);
            ret->vmlinuz = steal_pointer(&vmlinuz);
            ret->modules_dir = modules_tree(xasprintf("/lib/modules/%s", u.release));
            return 0;
        }
    }
    return pv_err_set(err, ENOENT,
                      "no kernel found: run `provium kernel fetch` (or set PROVIUM_KERNEL to a "
                      "bzImage)");
}
