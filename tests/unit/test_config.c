/* Unit tests for provium.toml loading, on real files in a temporary
 * directory (removed at the end of each test). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <sys/stat.h>

#include "host/config.h"
#include "util.h"

/* ---- fixtures ---- */

struct env {
    char *dir;      /* the temporary directory */
    char *old_home; /* restored at the end */
    char *old_xdg;
};

static int setup(void **state)
{
    struct env *e = xcalloc(1, sizeof(*e));
    char tmpl[] = "/tmp/provium-test-config-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    e->dir = xstrdup(tmpl);
    const char *h = getenv("HOME");
    const char *x = getenv("XDG_CACHE_HOME");
    e->old_home = h ? xstrdup(h) : NULL;
    e->old_xdg = x ? xstrdup(x) : NULL;
    _cleanup_free_ char *home = xasprintf("%s/home", e->dir);
    setenv("HOME", home, 1);
    unsetenv("XDG_CACHE_HOME");
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    rm_rf(e->dir);
    if (e->old_home)
        setenv("HOME", e->old_home, 1);
    else
        unsetenv("HOME");
    if (e->old_xdg)
        setenv("XDG_CACHE_HOME", e->old_xdg, 1);
    else
        unsetenv("XDG_CACHE_HOME");
    free(e->dir);
    free(e->old_home);
    free(e->old_xdg);
    free(e);
    return 0;
}

/* Write text to dir/rel, creating parent directories. Returns the path. */
static char *put(const char *dir, const char *rel, const char *text)
{
    char *path = xasprintf("%s/%s", dir, rel);
    _cleanup_free_ char *parent = xstrdup(path);
    *strrchr(parent, '/') = 0;
    assert_int_equal(mkdir_p(parent, 0755), 0);
    assert_int_equal(write_file_atomic(path, text, strlen(text), 0644), 0);
    return path;
}

static struct config *load_ok(const char *path, int line)
{
    struct config *c = NULL;
    struct pv_err err = {0};
    int r = config_load(path, &c, &err);
    if (r != 0 || !c)
        fail_msg("line %d: config_load(%s) = %d: %s", line, path, r, err.msg);
    return c;
}
#define LOAD_OK(path) load_ok((path), __LINE__)

static const struct profile *profile_ok(const struct config *c, const char *name, int line)
{
    const struct profile *p = config_profile(c, name);
    if (!p)
        fail_msg("line %d: no profile `%s`", line, name);
    return p;
}
#define PROFILE(c, name) profile_ok((c), (name), __LINE__)

/* NULL-safe string comparison that prints both sides. */
static void str_eq(const char *got, const char *want, const char *what, int line)
{
    if (!got && !want)
        return;
    if (!got || !want || strcmp(got, want))
        fail_msg("line %d: %s: got %s%s%s, want %s%s%s", line, what, got ? "\"" : "",
                 got ? got : "NULL", got ? "\"" : "", want ? "\"" : "", want ? want : "NULL",
                 want ? "\"" : "");
}
#define STR_EQ(got, want) str_eq((got), (want), #got, __LINE__)

/* Write provium.toml with text, load it, and compare the error message. */
static void load_fails(const char *path, const char *text, int code, const char *want, int line)
{
    if (text)
        assert_int_equal(write_file_atomic(path, text, strlen(text), 0644), 0);
    struct config *c = (struct config *)(uintptr_t)1;
    struct pv_err err = {0};
    int r = config_load(path, &c, &err);
    if (r == 0) {
        config_free(c);
        fail_msg("line %d: config_load succeeded, want error: %s", line, want);
    }
    if (c)
        fail_msg("line %d: *ret not NULL on failure", line);
    if (r != -code || err.code != code || strcmp(err.msg, want))
        fail_msg("line %d:\n got r=%d code=%d: %s\nwant r=%d code=%d: %s", line, r, err.code,
                 err.msg, -code, code, want);
}

/* Expect "invalid config in `<path>`:<rest>". */
static void invalid(const char *path, const char *text, const char *rest, int line)
{
    _cleanup_free_ char *want = xasprintf("invalid config in `%s`:%s", path, rest);
    load_fails(path, text, EINVAL, want, line);
}
#define INVALID(path, text, rest) invalid((path), (text), (rest), __LINE__)

/* ---- tests ---- */

static void test_paths_and_values(void **state)
{
    struct env *e = *state;
    _cleanup_free_ char *path = put(e->dir, "proj/provium.toml",
                                    "[provium]\n"
                                    "roots = [\"tests\", \"/abs/suite\", \"./more/../other\"]\n"
                                    "cache_dir = \"cache\"\n"
                                    "cache_max_size = \"1G\"\n"
                                    "\n"
                                    "[profiles.zeta]\n"
                                    "kernel = \"../kernel/out/bzImage\"\n"
                                    "initrd = \"testdata/rootfs.cpio.gz\"\n"
                                    "rootfs = \"~/images/root.img\"\n"
                                    "modules = \"mods/lib/modules/6.1.0\"\n"
                                    "vmlinux = \"{out}/vmlinux\"\n"
                                    "agent_overlay_path = \"/opt/overlay.cpio.gz\"\n"
                                    "disks = [\"d1.img\", { path = \"{out}/medium.iso\", "
                                    "id = \"medium\", readonly = true }, { path = \"~\" }]\n"
                                    "cmdline = \"  console=ttyS0\\n   quiet  \"\n"
                                    "init = \"/sbin/init\"\n"
                                    "guest_os = \"peios\"\n"
                                    "inject_agent = false\n"
                                    "pvh = false\n"
                                    "agent_boot_timeout = 12.5\n"
                                    "build = \"./build.sh {out}\"\n"
                                    "build_out = \"out\"\n"
                                    "\n"
                                    "[profiles.alpha]\n"
                                    "kernel = \"/boot/vmlinuz\"\n");
    struct config *c = LOAD_OK(path);
    _cleanup_free_ char *proj = xasprintf("%s/proj", e->dir);
    _cleanup_free_ char *home = xasprintf("%s/home", e->dir);

    STR_EQ(c->path, path);
    STR_EQ(c->dir, proj);
    assert_int_equal(c->nroots, 3);
    _cleanup_free_ char *root0 = xasprintf("%s/tests", proj);
    _cleanup_free_ char *root2 = xasprintf("%s/other", proj);
    STR_EQ(c->roots[0], root0);
    STR_EQ(c->roots[1], "/abs/suite");
    STR_EQ(c->roots[2], root2);
    _cleanup_free_ char *cache = xasprintf("%s/cache", proj);
    STR_EQ(c->cache_dir, cache);
    assert_int_equal(c->cache_max_size, 1ULL << 30);

    /* Sorted by name. */
    assert_int_equal(c->nprofiles, 2);
    STR_EQ(c->profiles[0].name, "alpha");
    STR_EQ(c->profiles[1].name, "zeta");
    assert_null(config_profile(c, "nope"));
    assert_null(config_profile(NULL, "zeta"));

    const struct profile *p = PROFILE(c, "zeta");
    _cleanup_free_ char *kernel = xasprintf("%s/kernel/out/bzImage", e->dir);
    _cleanup_free_ char *initrd = xasprintf("%s/testdata/rootfs.cpio.gz", proj);
    _cleanup_free_ char *rootfs = xasprintf("%s/images/root.img", home);
    _cleanup_free_ char *modules = xasprintf("%s/mods/lib/modules/6.1.0", proj);
    _cleanup_free_ char *disk0 = xasprintf("%s/d1.img", proj);
    _cleanup_free_ char *build_out = xasprintf("%s/out", proj);
    STR_EQ(p->source, path);
    assert_int_equal(p->line, 6);
    STR_EQ(p->dir, proj);
    STR_EQ(p->kernel, kernel);
    STR_EQ(p->initrd, initrd);
    STR_EQ(p->rootfs, rootfs);
    STR_EQ(p->modules, modules);
    STR_EQ(p->vmlinux, "{out}/vmlinux"); /* boot.c expands {out} */
    STR_EQ(p->agent_overlay_path, "/opt/overlay.cpio.gz");
    assert_int_equal(p->ndisks, 3);
    STR_EQ(p->disks[0], disk0);
    STR_EQ(p->disks[1], "{out}/medium.iso");
    STR_EQ(p->disks[2], home);
    STR_EQ(p->disk_ids[0], NULL);
    STR_EQ(p->disk_ids[1], "medium");
    assert_false(p->disk_readonly[0]);
    assert_true(p->disk_readonly[1]);
    STR_EQ(p->cmdline, "console=ttyS0 quiet");
    STR_EQ(p->init, "/sbin/init");
    STR_EQ(p->guest_os, "peios");
    assert_false(p->inject_agent);
    assert_false(p->pvh);
    assert_true(p->agent_boot_timeout == 12.5);
    STR_EQ(p->build, "./build.sh {out}");
    STR_EQ(p->build_out, build_out);
    STR_EQ(p->cmdline_file, NULL);

    /* Defaults. */
    p = PROFILE(c, "alpha");
    assert_int_equal(p->line, 23);
    STR_EQ(p->kernel, "/boot/vmlinuz");
    STR_EQ(p->guest_os, "linux");
    assert_true(p->inject_agent);
    assert_true(p->pvh);
    STR_EQ(p->cmdline, NULL);
    STR_EQ(p->initrd, NULL);
    assert_int_equal(p->ndisks, 0);
    assert_true(p->agent_boot_timeout == 0);
    config_free(c);
}

static void test_defaults_and_empty(void **state)
{
    struct env *e = *state;
    _cleanup_free_ char *path = put(e->dir, "provium.toml", "");
    struct config *c = LOAD_OK(path);
    _cleanup_free_ char *cache = xasprintf("%s/home/.cache/provium/fixtures", e->dir);
    STR_EQ(c->cache_dir, cache);
    assert_int_equal(c->cache_max_size, 20ULL << 30);
    assert_int_equal(c->nroots, 0);
    assert_int_equal(c->nprofiles, 0);
    STR_EQ(c->dir, e->dir);
    config_free(c);

    setenv("XDG_CACHE_HOME", "/xdg/cache", 1);
    c = config_empty(e->dir);
    STR_EQ(c->path, NULL);
    STR_EQ(c->dir, e->dir);
    STR_EQ(c->cache_dir, "/xdg/cache/provium/fixtures");
    assert_int_equal(c->cache_max_size, 20ULL << 30);
    assert_int_equal(c->nprofiles, 0);
    config_free(c);

    /* A relative XDG_CACHE_HOME is ignored, as the XDG spec says. */
    setenv("XDG_CACHE_HOME", "relative", 1);
    c = config_empty(NULL);
    STR_EQ(c->cache_dir, cache);
    assert_true(c->dir[0] == '/');
    config_free(c);
    config_free(NULL);

    /* cache_max_size as integer bytes. */
    free(put(e->dir, "provium.toml", "[provium]\ncache_max_size = 1048576\n"));
    c = LOAD_OK(path);
    assert_int_equal(c->cache_max_size, 1048576);
    config_free(c);
}

static void test_legacy_profile(void **state)
{
    struct env *e = *state;
    _cleanup_free_ char *path = put(e->dir, "provium.toml",
                                    "[profile.minimal]\n"
                                    "kernel = \"../kernel/out/bzImage\"\n"
                                    "initrd = \"testdata/rootfs.cpio.gz\"\n"
                                    "init = \"/sbin/init\"\n"
                                    "\n"
                                    "[profile.peinit]\n"
                                    "kernel = \"../kernel/out/bzImage\"\n"
                                    "init = \"/provium/peinit\"\n"
                                    "append = \"loglevel=7\"\n"
                                    "\n"
                                    "[profiles.both]\n"
                                    "kernel = \"k\"\n"
                                    "cmdline = \"console=ttyS0\"\n"
                                    "append = \"  loglevel=7 \"\n");
    struct config *c = LOAD_OK(path);
    assert_int_equal(c->nprofiles, 3);
    const struct profile *p = PROFILE(c, "minimal");
    _cleanup_free_ char *parent = xstrdup(e->dir);
    *strrchr(parent, '/') = 0;
    _cleanup_free_ char *kernel = xasprintf("%s/kernel/out/bzImage", parent);
    STR_EQ(p->kernel, kernel);
    STR_EQ(p->init, "/sbin/init");
    STR_EQ(p->cmdline, NULL);
    p = PROFILE(c, "peinit");
    STR_EQ(p->cmdline, "loglevel=7");
    STR_EQ(p->init, "/provium/peinit");
    p = PROFILE(c, "both");
    STR_EQ(p->cmdline, "console=ttyS0 loglevel=7");
    config_free(c);

    INVALID(path, "[profiles.x]\nkernel = \"k\"\n\n[profile.x]\nkernel = \"k\"\n",
            "4: profile `x` is already defined at line 1");
}

static void test_from_dir(void **state)
{
    struct env *e = *state;
    _cleanup_free_ char *path = put(e->dir, "provium.toml",
                                    "[provium]\n"
                                    "roots = [\"tests\"]\n"
                                    "\n"
                                    "[profiles]\n"
                                    "from_dir = \"profiles\"\n"
                                    "\n"
                                    "[profiles.inline]\n"
                                    "kernel = \"bzImage\"\n");
    _cleanup_free_ char *kfile = put(e->dir, "profiles/kernel-only/profile.provium.toml",
                                     "# comment\n"
                                     "build = \"./build.sh {out}\"\n"
                                     "root = \"{out}/root\"\n"
                                     "initrd = \"{out}/extras.cpio.gz\"\n"
                                     "cmdline = \"console=hvc0 quiet panic=1\"\n");
    _cleanup_free_ char *wfile = put(e->dir, "profiles/withfile/profile.provium.toml",
                                     "kernel = \"bzImage\"\n"
                                     "cmdline_file = \"boot/cmdline\"\n"
                                     "cmdline = \"panic=1 TERM=dumb\"\n"
                                     "agent_boot_timeout = 90.0\n"
                                     "disks = [\"disk.img\"]\n"
                                     "inject_agent = false\n");
    free(put(e->dir, "profiles/withfile/boot/cmdline",
             "console=ttyS0 loglevel=7\n  init=/bin/protoinit \n\n"));
    free(put(e->dir, "profiles/pending/profile.provium.toml",
             "root = \"{out}/image/root\"\n"
             "cmdline_file = \"{out}/image/root/usr/share/live-boot/cmdline\"\n"
             "cmdline = \"console=hvc0\"\n"
             "agent_boot_timeout = \"12s\"\n"));
    /* Not profiles: no profile file, a hidden directory, a plain file. */
    free(put(e->dir, "profiles/notaprofile/README", "hello\n"));
    free(put(e->dir, "profiles/.hidden/profile.provium.toml", "bogus = 1\n"));
    free(put(e->dir, "profiles/file.txt", "x\n"));

    struct config *c = LOAD_OK(path);
    assert_int_equal(c->nprofiles, 4);
    STR_EQ(c->profiles[0].name, "inline");
    STR_EQ(c->profiles[1].name, "kernel-only");
    STR_EQ(c->profiles[2].name, "pending");
    STR_EQ(c->profiles[3].name, "withfile");

    _cleanup_free_ char *kdir = xasprintf("%s/profiles/kernel-only", e->dir);
    const struct profile *p = PROFILE(c, "kernel-only");
    STR_EQ(p->source, kfile);
    STR_EQ(p->dir, kdir);
    assert_int_equal(p->line, 1);
    STR_EQ(p->build, "./build.sh {out}");
    STR_EQ(p->kernel, NULL);
    STR_EQ(p->rootfs, "{out}/root");
    STR_EQ(p->initrd, "{out}/extras.cpio.gz");
    STR_EQ(p->cmdline, "console=hvc0 quiet panic=1");

    _cleanup_free_ char *wdir = xasprintf("%s/profiles/withfile", e->dir);
    _cleanup_free_ char *wkernel = xasprintf("%s/bzImage", wdir);
    _cleanup_free_ char *wcmdfile = xasprintf("%s/boot/cmdline", wdir);
    _cleanup_free_ char *wdisk = xasprintf("%s/disk.img", wdir);
    p = PROFILE(c, "withfile");
    STR_EQ(p->source, wfile);
    STR_EQ(p->kernel, wkernel);
    STR_EQ(p->cmdline_file, wcmdfile);
    assert_false(p->cmdline_file_pending);
    STR_EQ(p->cmdline, "console=ttyS0 loglevel=7 init=/bin/protoinit panic=1 TERM=dumb");
    assert_true(p->agent_boot_timeout == 90.0);
    assert_int_equal(p->ndisks, 1);
    STR_EQ(p->disks[0], wdisk);
    assert_false(p->inject_agent);

    /* cmdline_file under {out} is made by the build: left for the caller. */
    p = PROFILE(c, "pending");
    STR_EQ(p->cmdline_file, "{out}/image/root/usr/share/live-boot/cmdline");
    assert_true(p->cmdline_file_pending);
    STR_EQ(p->cmdline, "console=hvc0");
    assert_true(p->agent_boot_timeout == 12.0);

    _cleanup_free_ char *ikernel = xasprintf("%s/bzImage", e->dir);
    p = PROFILE(c, "inline");
    STR_EQ(p->kernel, ikernel);
    STR_EQ(p->source, path);
    assert_int_equal(p->line, 7);
    config_free(c);
}

static void test_from_dir_errors(void **state)
{
    struct env *e = *state;
    _cleanup_free_ char *path = xasprintf("%s/provium.toml", e->dir);
    _cleanup_free_ char *afile = put(e->dir, "profiles/a/profile.provium.toml", "kernel = \"k\"\n");

    /* Same name inline and discovered: both files are named. */
    _cleanup_free_ char *both = xasprintf("9: profile `a` is defined here and in `%s`", afile);
    INVALID(path, "[profiles]\nfrom_dir = \"profiles\"\n\n\n\n\n\n\n[profiles.a]\nkernel = \"k\"\n",
            both);

    /* Errors inside a profile file name that file. */
    free(put(e->dir, "profiles/a/profile.provium.toml", "kernel = \"k\"\nfoo = 1\n"));
    free(put(e->dir, "provium.toml", "[profiles]\nfrom_dir = \"profiles\"\n"));
    _cleanup_free_ char *unknown =
        xasprintf("invalid config in `%s`:2: unknown key `foo` in profile `a`", afile);
    load_fails(path, NULL, EINVAL, unknown, __LINE__);

    free(put(e->dir, "profiles/a/profile.provium.toml", "kernel = \"k\"\ncmdline = [\n"));
    _cleanup_free_ char *parse = xasprintf("parse `%s`:2:11: unterminated array", afile);
    load_fails(path, NULL, EINVAL, parse, __LINE__);

    free(put(e->dir, "profiles/a/profile.provium.toml",
             "kernel = \"k\"\ncmdline_file = \"missing\"\n"));
    _cleanup_free_ char *missing = xasprintf(
        "invalid config in `%s`:2: cannot read cmdline_file `%s/profiles/a/missing`: No such "
        "file or directory",
        afile, e->dir);
    load_fails(path, NULL, EINVAL, missing, __LINE__);

    /* A from_dir that does not exist, or holds no profile. */
    _cleanup_free_ char *nodir =
        xasprintf("2: from_dir `%s/nope`: No such file or directory", e->dir);
    INVALID(path, "[profiles]\nfrom_dir = \"nope\"\n", nodir);
    free(put(e->dir, "empty/notaprofile/x", ""));
    _cleanup_free_ char *empty = xasprintf("2: from_dir `%s/empty` holds no profile (a profile "
                                           "is a directory containing a profile.provium.toml)",
                                           e->dir);
    INVALID(path, "[profiles]\nfrom_dir = \"empty\"\n", empty);
    INVALID(path, "[profiles]\nfrom_dir = 1\n",
            "2: key `from_dir` in [profiles] must be a string, got integer");
}

static void test_errors(void **state)
{
    struct env *e = *state;
    _cleanup_free_ char *path = xasprintf("%s/provium.toml", e->dir);

    /* Unknown keys, everywhere. */
    INVALID(path, "[profiles.x]\nkernel = \"k\"\nfoo = 1\n",
            "3: unknown key `foo` in [profiles.x]");
    INVALID(path, "[profile.old]\nkernel = \"k\"\n\nmemory = \"1G\"\n",
            "4: unknown key `memory` in [profile.old]");
    INVALID(path, "[provium]\nroots = []\ntimeout = 3\n", "3: unknown key `timeout` in [provium]");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\n[profiles.x.sub]\n",
            "3: unknown key `sub` in [profiles.x]");
    INVALID(path, "name = \"x\"\n",
            "1: unknown top-level key `name` (expected [provium] or [profiles.<name>])");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\ndisks = [{ path = \"d\", size = 1 }]\n",
            "3: unknown key `disks[0].size` in [profiles.x]");

    /* Wrong types name the key, the expected type and the one received. */
    INVALID(path, "[profiles.x]\nkernel = 1\n",
            "2: key `kernel` in [profiles.x] must be a string, got integer");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\ninject_agent = \"yes\"\n",
            "3: key `inject_agent` in [profiles.x] must be a boolean, got string");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\npvh = 0\n",
            "3: key `pvh` in [profiles.x] must be a boolean, got integer");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\ncmdline = [\"a\"]\n",
            "3: key `cmdline` in [profiles.x] must be a string, got array");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\ndisks = \"d.img\"\n",
            "3: key `disks` in [profiles.x] must be an array, got string");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\ndisks = [\"a\", 2]\n",
            "3: key `disks[1]` in [profiles.x] must be a path or a table { path, id, readonly }, "
            "got integer");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\ndisks = [{ id = \"m\" }]\n",
            "3: `disks[0]` in [profiles.x] has no path");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\ndisks = [{ path = \"d\", readonly = 1 }]\n",
            "3: key `disks[0].readonly` in [profiles.x] must be a boolean, got integer");
    INVALID(path, "[provium]\nroots = \"tests\"\n",
            "2: key `roots` in [provium] must be an array, got string");
    INVALID(path, "[provium]\nroots = [\"a\",\n  true]\n",
            "3: key `roots[1]` in [provium] must be a string, got boolean");
    INVALID(path, "[provium]\ncache_max_size = 1.5\n",
            "2: key `cache_max_size` in [provium] must be a string or an integer, got float");
    INVALID(path, "provium = 3\n", "1: key `provium` must be a table, got integer");
    INVALID(path, "[profiles]\nx = 1\n",
            "2: key `x` in [profiles] must be a table (a profile), got integer");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\nagent_boot_timeout = true\n",
            "3: key `agent_boot_timeout` in [profiles.x] must be a number of seconds or a "
            "duration string, got boolean");

    /* Values. */
    INVALID(path, "[profiles.x]\nkernel = \"k\"\ncmdline = \" \\t \"\n",
            "3: profile `x` has empty cmdline");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\ncmdline = \"\"\n",
            "3: profile `x` has empty cmdline");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\nguest_os = \"windows\"\n",
            "3: profile `x` has guest_os = `windows`, expected `linux` or `peios`");
    INVALID(path, "\n[profiles.x]\ninitrd = \"i\"\n",
            "2: profile `x` sets neither `kernel` nor `root`");
    INVALID(path, "[profiles.x]\nroot = \"r\"\nrootfs = \"r\"\n",
            "2: profile `x` sets both `root` and `rootfs`");
    INVALID(path, "[profiles.x]\nkernel = \"\"\n",
            "2: key `kernel` in [profiles.x] must not be empty");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\nagent_boot_timeout = -1\n",
            "3: agent_boot_timeout in [profiles.x] must be a positive number of seconds, at most "
            "1000000000");
    INVALID(path, "[profiles.x]\nkernel = \"k\"\nagent_boot_timeout = \"soon\"\n",
            "3: invalid agent_boot_timeout `soon` in [profiles.x] (expected seconds or a "
            "duration such as \"30s\")");
    INVALID(path, "[provium]\ncache_max_size = \"20X\"\n",
            "2: invalid cache_max_size `20X` in [provium] (expected bytes or a size such as "
            "\"20G\")");
    INVALID(path, "[provium]\ncache_max_size = -1\n",
            "2: cache_max_size in [provium] must not be negative");
    INVALID(path, "[profiles.\"\"]\nkernel = \"k\"\n", "1: empty profile name in [profiles]");

    /* Syntax errors carry line and column. */
    _cleanup_free_ char *p1 =
        xasprintf("parse `%s`:1:12: expected `]` to close the table header, found newline", path);
    load_fails(path, "[profiles.x\nkernel = \"k\"\n", EINVAL, p1, __LINE__);
    _cleanup_free_ char *p2 = xasprintf("parse `%s`:3:1: duplicate key `kernel`", path);
    load_fails(path, "[profiles.x]\nkernel = \"a\"\nkernel = \"b\"\n", EINVAL, p2, __LINE__);
    _cleanup_free_ char *p3 = xasprintf("parse `%s`:2:10: invalid value `bzImage` (strings need "
                                        "quotes)",
                                        path);
    load_fails(path, "[profiles.x]\nkernel = bzImage\n", EINVAL, p3, __LINE__);

    /* Read errors keep the errno. */
    _cleanup_free_ char *nofile = xasprintf("%s/missing.toml", e->dir);
    _cleanup_free_ char *r1 = xasprintf("read `%s`: No such file or directory", nofile);
    load_fails(nofile, NULL, ENOENT, r1, __LINE__);
}

static void test_relative_config_path(void **state)
{
    struct env *e = *state;
    free(put(e->dir, "sub/provium.toml", "[profiles.x]\nkernel = \"k\"\nbogus = 1\n"));
    _cleanup_free_ char *old = getcwd(NULL, 0);
    assert_int_equal(chdir(e->dir), 0);

    /* Messages name the file as the caller gave it; c->path is absolute. */
    struct pv_err err = {0};
    struct config *c = NULL;
    int r = config_load("sub/provium.toml", &c, &err);
    assert_int_equal(r, -EINVAL);
    assert_string_equal(err.msg, "invalid config in `sub/provium.toml`:3: unknown key `bogus` in "
                                 "[profiles.x]");

    free(put(e->dir, "sub/provium.toml", "[profiles.x]\nkernel = \"k\"\n"));
    r = config_load("./sub/../sub/provium.toml", &c, &err);
    assert_int_equal(r, 0);
    _cleanup_free_ char *want_path = xasprintf("%s/sub/provium.toml", e->dir);
    _cleanup_free_ char *want_kernel = xasprintf("%s/sub/k", e->dir);
    STR_EQ(c->path, want_path);
    STR_EQ(PROFILE(c, "x")->kernel, want_kernel);
    config_free(c);

    assert_int_equal(chdir(old), 0);
}

static void test_config_find(void **state)
{
    struct env *e = *state;
    _cleanup_free_ char *deep = xasprintf("%s/a/b/c", e->dir);
    assert_int_equal(mkdir_p(deep, 0755), 0);
    _cleanup_free_ char *cfg = put(e->dir, "a/provium.toml", "");

    char *found = NULL;
    assert_int_equal(config_find(deep, &found), 0);
    STR_EQ(found, cfg);
    free(found);

    _cleanup_free_ char *a = xasprintf("%s/a", e->dir);
    assert_int_equal(config_find(a, &found), 0);
    STR_EQ(found, cfg);
    free(found);

    /* The nearest wins. */
    _cleanup_free_ char *nearer = put(e->dir, "a/b/provium.toml", "");
    assert_int_equal(config_find(deep, &found), 0);
    STR_EQ(found, nearer);
    free(found);

    /* A directory called provium.toml is not a config. */
    _cleanup_free_ char *fake = xasprintf("%s/x/provium.toml", e->dir);
    assert_int_equal(mkdir_p(fake, 0755), 0);
    _cleanup_free_ char *x = xasprintf("%s/x", e->dir);
    struct stat st;
    if (stat("/tmp/provium.toml", &st) < 0 && stat("/provium.toml", &st) < 0) {
        found = NULL;
        assert_int_equal(config_find(x, &found), -ENOENT);
        assert_null(found);
    }

    /* NULL means the current directory. */
    _cleanup_free_ char *old = getcwd(NULL, 0);
    assert_int_equal(chdir(deep), 0);
    assert_int_equal(config_find(NULL, &found), 0);
    STR_EQ(found, nearer);
    free(found);
    assert_int_equal(chdir(old), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_paths_and_values, setup, teardown),
        cmocka_unit_test_setup_teardown(test_defaults_and_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_profile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_dir_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relative_config_path, setup, teardown),
        cmocka_unit_test_setup_teardown(test_config_find, setup, teardown),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
