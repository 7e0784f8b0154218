/* The Kconfig table and reader (src/host/kconfig.c) against Debian's own
 * configs (the linux-headers package's .config, linux-config-6.1's, and
 * /boot/config-* when there are any), edited copies of them missing each
 * required option, a bzImage-shaped file carrying its config (IKCONFIG),
 * and docs/kernels.md's table. With the checks before a boot
 * (kernel_check_boot) on the cached kernel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "host/kconfig.h"
#include "host/kernel.h"
#include "spawn.h"

#include <glob.h>
#include <stdio.h>
#include <sys/stat.h>
#include <zlib.h>

static char tmp_root[] = "/tmp/test_kconfig.XXXXXX";

static int group_setup(void **state)
{
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int group_teardown(void **state)
{
    return rm_rf(tmp_root);
}

static void write_text(const char *path, const void *p, size_t n)
{
    assert_int_equal(write_file_atomic(path, p, n, 0644), 0);
}

static void test_parse_and_get(void **state)
{
    struct kconfig c;
    kconfig_parse("# comment\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n"
                  "CONFIG_S=\"x y\"\r\nCONFIG_A=n\nCONFIG_=y\nnot a line\nCONFIG_N=12",
                  &c);
    assert_null(kconfig_get(&c, "A")); /* the last assignment wins; n is unset */
    assert_string_equal(kconfig_get(&c, "B"), "m");
    assert_null(kconfig_get(&c, "C"));
    assert_string_equal(kconfig_get(&c, "S"), "\"x y\"");
    assert_string_equal(kconfig_get(&c, "N"), "12");
    kconfig_release(&c);
}

/* Every required option named, and a module where one is allowed only
 * with MODULES=y. */
static void test_check_rules(void **state)
{
    struct buf text = BUF_INIT;
    for (size_t i = 0; i < kconfig_noptions; i++)
        buf_addf(&text, "CONFIG_%s=y\n", kconfig_options[i].name);
    buf_adds(&text, "CONFIG_VIRTIO_CONSOLE=m\n");
    struct kconfig c;
    kconfig_parse(text.data, &c);
    struct kconfig_miss miss[64];
    assert_true(kconfig_noptions <= ARRAY_SIZE(miss));
    size_t required;
    /* m without MODULES */
    assert_int_equal(kconfig_check(&c, miss, &required), 1);
    assert_int_equal(required, 1);
    assert_string_equal(miss[0].opt->name, "VIRTIO_CONSOLE");
    assert_string_equal(miss[0].have, "m");
    kconfig_release(&c);
    buf_adds(&text, "CONFIG_MODULES=y\n");
    kconfig_parse(text.data, &c);
    assert_int_equal(kconfig_check(&c, miss, &required), 0);
    kconfig_release(&c);
    /* m where only y will do */
    buf_adds(&text, "CONFIG_SIGNALFD=m\n");
    kconfig_parse(text.data, &c);
    assert_int_equal(kconfig_check(&c, miss, &required), 1);
    assert_string_equal(miss[0].opt->name, "SIGNALFD");
    kconfig_release(&c);
    buf_release(&text);
    /* the list, at least */
    static const char *const must[] = {"64BIT",
                                       "PRINTK",
                                       "TTY",
                                       "SERIAL_8250",
                                       "SERIAL_8250_CONSOLE",
                                       "VIRTIO_MENU",
                                       "VIRTIO_PCI",
                                       "VIRTIO_CONSOLE",
                                       "DEVTMPFS",
                                       "PROC_FS",
                                       "SYSFS",
                                       "BLK_DEV_INITRD",
                                       "SIGNALFD",
                                       "EVENTFD",
                                       "FUTEX",
                                       "EPOLL",
                                       "SHMEM",
                                       "TMPFS",
                                       "VIRTIO_NET",
                                       "VIRTIO_BLK",
                                       "INET"};
    for (size_t i = 0; i < ARRAY_SIZE(must); i++) {
        bool found = false;
        for (size_t k = 0; k < kconfig_noptions && !found; k++)
            found = !strcmp(kconfig_options[k].name, must[i]);
        if (!found)
            fail_msg("CONFIG_%s is not in the table", must[i]);
    }
}

/* Debian's configs, as shipped: every required option set. Each edited
 * copy without one required option: exactly that one missing. */
static void check_debian_config(const char *path)
{
    struct kconfig c;
    struct pv_err err = {0};
    if (kconfig_read(path, &c, &err) < 0)
        fail_msg("%s: %s", path, err.msg);
    struct kconfig_miss miss[64];
    size_t required;
    kconfig_check(&c, miss, &required);
    if (required)
        fail_msg("%s lacks CONFIG_%s", path, miss[0].opt->name);
    kconfig_release(&c);

    struct buf text = BUF_INIT;
    if (strstr(path, ".xz")) {
        const char *argv[] = {"xz", "-dc", "--", path, NULL};
        int status = -1;
        assert_int_equal(spawn_run(argv, NULL, &text, 64u << 20, 60000, &status, NULL), 0);
        assert_int_equal(status, 0);
    } else {
        assert_int_equal(read_file(path, 64u << 20, &text), 0);
    }
    buf_add(&text, "", 1);
    for (size_t i = 0; i < kconfig_noptions; i++) {
        const struct kconfig_option *o = &kconfig_options[i];
        if (o->need != KCONFIG_REQUIRED)
            continue;
        /* the option's line turned into "# CONFIG_X is not set" */
        _cleanup_free_ char *line = xasprintf("\nCONFIG_%s=", o->name);
        char *at = strstr(text.data, line);
        if (!at)
            fail_msg("%s has no line CONFIG_%s=", path, o->name);
        struct buf edited = BUF_INIT;
        buf_add(&edited, text.data, (size_t)(at - text.data));
        buf_addf(&edited, "\n# CONFIG_%s is not set", o->name);
        buf_adds(&edited, at + strcspn(at + 1, "\n") + 1);
        _cleanup_free_ char *copy = xasprintf("%s/without-%s.config", tmp_root, o->name);
        write_text(copy, edited.data, edited.len);
        buf_release(&edited);
        assert_int_equal(kconfig_read(copy, &c, &err), 0);
        size_t n = kconfig_check(&c, miss, &required);
        if (n < 1 || required != 1 || strcmp(miss[0].opt->name, o->name))
            fail_msg("%s without CONFIG_%s: %zu required missing, the first %s", path, o->name,
                     required, n ? miss[0].opt->name : "none");
        kconfig_release(&c);
    }
    buf_release(&text);
}

static void test_debian_configs(void **state)
{
    glob_t g = {0};
    int flags = 0;
    static const char *const pats[] = {"/boot/config-*", "/usr/src/linux-headers-*/.config",
                                       "/usr/src/linux-config-*/config.*.xz"};
    for (size_t i = 0; i < ARRAY_SIZE(pats); i++) {
        glob(pats[i], flags, NULL, &g);
        flags = GLOB_APPEND;
    }
    if (!g.gl_pathc) {
        globfree(&g);
        skip(); /* tools/deps installs linux-headers-cloud-amd64 */
    }
    for (size_t i = 0; i < g.gl_pathc; i++)
        check_debian_config(g.gl_pathv[i]);
    globfree(&g);
}

/* gzip data in *out (appended). */
static void gzip_into(const void *p, size_t n, struct buf *out)
{
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    buf_reserve(out, deflateBound(&z, n) + 64);
    z.next_in = (unsigned char *)p;
    z.avail_in = (uInt)n;
    z.next_out = (unsigned char *)out->data + out->len;
    z.avail_out = (uInt)(out->cap - out->len);
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    out->len += z.total_out;
    deflateEnd(&z);
}

static void put32(struct buf *b, size_t off, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b->data[off + i] = (char)(v >> (8 * i));
}

/* A file shaped like a bzImage (the setup header's fields the reader
 * uses) whose gzip payload holds IKCFG_ST, the gzipped config, IKCFG_ED. */
static char *make_bzimage(const char *config, bool with_config)
{
    struct buf vmlinux = BUF_INIT, img = BUF_INIT;
    buf_adds(&vmlinux, "\x7f"
                       "ELF...code...IKCFG_ST-not-gzip...");
    if (with_config) {
        buf_adds(&vmlinux, "IKCFG_ST");
        gzip_into(config, strlen(config), &vmlinux);
        buf_adds(&vmlinux, "IKCFG_ED...more code");
    }
    unsigned setup_sects = 4;
    size_t pm = (setup_sects + 1) * 512;
    buf_reserve(&img, pm + 64);
    memset(img.data, 0, pm + 64);
    img.len = pm + 64; /* 64 bytes of code before the payload */
    img.data[0x1f1] = (char)setup_sects;
    img.data[0x1fe] = 0x55;
    img.data[0x1ff] = (char)0xaa;
    memcpy(img.data + 0x202, "HdrS", 4);
    img.data[0x206] = 0x0f; /* protocol 2.15 */
    img.data[0x207] = 0x02;
    memcpy(img.data + 0x300, "6.1.99-test (you@host) #1", 26);
    img.data[0x20e] = 0x00; /* kernel_version: 0x300 - 0x200 */
    img.data[0x20f] = 0x01;
    size_t before = img.len;
    gzip_into(vmlinux.data, vmlinux.len, &img);
    put32(&img, 0x248, 64);
    put32(&img, 0x24c, (uint32_t)(img.len - before));
    char *path = xasprintf("%s/bzImage-%d", tmp_root, with_config);
    write_text(path, img.data, img.len);
    buf_release(&vmlinux);
    buf_release(&img);
    return path;
}

static void test_bzimage_ikconfig(void **state)
{
    _cleanup_free_ char *bz = make_bzimage("CONFIG_64BIT=y\nCONFIG_IKCONFIG=y\n", true);
    struct kconfig c;
    struct pv_err err = {0};
    if (kconfig_read(bz, &c, &err) < 0)
        fail_msg("%s", err.msg);
    assert_string_equal(kconfig_get(&c, "IKCONFIG"), "y");
    assert_null(kconfig_get(&c, "SIGNALFD"));
    kconfig_release(&c);
    _cleanup_free_ char *version = kernel_image_version(bz);
    assert_string_equal(version, "6.1.99-test");
    assert_null(kernel_not_bzimage(bz));

    _cleanup_free_ char *none = make_bzimage("", false);
    assert_int_equal(kconfig_read(none, &c, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "CONFIG_IKCONFIG is off"));

    _cleanup_free_ char *elf = xasprintf("%s/vmlinux", tmp_root);
    write_text(elf,
               "\x7f"
               "ELF\2\1\1",
               7);
    assert_non_null(strstr(kernel_not_bzimage(elf), "use arch/x86/boot/bzImage"));
    assert_non_null(strstr(kernel_not_bzimage(elf), "ELF"));
    _cleanup_free_ char *junk = xasprintf("%s/junk", tmp_root);
    write_text(junk, "hello", 5);
    assert_non_null(strstr(kernel_not_bzimage(junk), "not a bzImage"));
}

/* Before a boot: modules of another version, and the parent of the
 * versioned folder. */
static void test_check_boot(void **state)
{
    _cleanup_free_ char *bz = make_bzimage("", false);
    struct pv_err err = {0};
    _cleanup_free_ char *mods = xasprintf("%s/lib/modules", tmp_root);
    _cleanup_free_ char *other = xasprintf("%s/6.1.0-other", mods);
    _cleanup_free_ char *mine = xasprintf("%s/6.1.99-test", mods);
    assert_int_equal(mkdir_p(other, 0755), 0);
    _cleanup_free_ char *dep = xasprintf("%s/modules.dep", other);
    write_text(dep, "", 0);
    assert_int_equal(kernel_check_boot(bz, other, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "is of kernel 6.1.0-other"));
    assert_non_null(strstr(err.msg, "is 6.1.99-test"));
    /* the parent: the folder of any version, this one's first */
    assert_int_equal(kernel_check_boot(bz, mods, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "use /tmp/test_kconfig."));
    assert_non_null(strstr(err.msg, "/lib/modules/6.1.0-other"));
    assert_int_equal(mkdir_p(mine, 0755), 0);
    free(dep);
    dep = xasprintf("%s/modules.dep", mine);
    write_text(dep, "", 0);
    assert_int_equal(kernel_check_boot(bz, mods, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "/lib/modules/6.1.99-test"));
    assert_int_equal(kernel_check_boot(bz, mine, &err), 0);
    assert_int_equal(kernel_check_boot(bz, NULL, &err), 0);
    _cleanup_free_ char *elf = xasprintf("%s/vmlinux", tmp_root);
    write_text(elf,
               "\x7f"
               "ELF\2\1\1",
               7);
    assert_int_equal(kernel_check_boot(elf, NULL, &err), -ENOEXEC);
    assert_non_null(strstr(err.msg, "use arch/x86/boot/bzImage"));
}

/* docs/kernels.md shows the table as `provium kernel options` prints it. */
static void test_docs_table(void **state)
{
    struct buf doc = BUF_INIT, md = BUF_INIT;
    /* the tests run from the source tree (tests/check); PV_AGENT_BIN is
     * <tree>/build[/...]/provium-agent otherwise */
    if (read_file("docs/kernels.md", 1 << 20, &doc) < 0) {
        _cleanup_free_ char *root = xstrdup(PV_AGENT_BIN);
        *strstr(root, "/build/") = 0;
        _cleanup_free_ char *path = xasprintf("%s/docs/kernels.md", root);
        assert_int_equal(read_file(path, 1 << 20, &doc), 0);
    }
    buf_add(&doc, "", 1);
    kconfig_markdown(&md);
    buf_add(&md, "", 1);
    if (!strstr(doc.data, md.data))
        fail_msg("docs/kernels.md does not hold the table `provium kernel options` prints:\n%s",
                 md.data);
    buf_release(&doc);
    buf_release(&md);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_get),  cmocka_unit_test(test_check_rules),
        cmocka_unit_test(test_debian_configs), cmocka_unit_test(test_bzimage_ikconfig),
        cmocka_unit_test(test_check_boot),     cmocka_unit_test(test_docs_table),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
