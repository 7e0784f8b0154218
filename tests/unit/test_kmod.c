/* kmod_order on synthetic modules trees (hand-written modules.dep and
 * modules.builtin) and, when one is present, on a real Debian kernel's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "host/kmod.h"

#include <glob.h>
#include <stdio.h>
#include <sys/stat.h>

static char tmp_root[] = "/tmp/test_kmod.XXXXXX";
static int tree_seq;

static int group_setup(void **state)
{
    return mkdtemp(tmp_root) ? 0 : -1;
}

static int group_teardown(void **state)
{
    return rm_rf(tmp_root);
}

/* A fresh lib/modules/<version>-like directory holding these files
 * (builtin NULL: no modules.builtin at all). Caller frees. */
static char *make_tree(const char *dep, const char *builtin)
{
    char *dir = xasprintf("%s/t%d", tmp_root, tree_seq++);
    assert_int_equal(mkdir(dir, 0755), 0);
    _cleanup_free_ char *dep_path = xasprintf("%s/modules.dep", dir);
    if (dep)
        assert_int_equal(write_file_atomic(dep_path, dep, strlen(dep), 0644), 0);
    if (builtin) {
        _cleanup_free_ char *b = xasprintf("%s/modules.builtin", dir);
        assert_int_equal(write_file_atomic(b, builtin, strlen(builtin), 0644), 0);
    }
    return dir;
}

static char *join(char *const *list)
{
    struct buf b = BUF_INIT;
    for (size_t i = 0; list && list[i]; i++)
        buf_addf(&b, "%s%s", i ? " " : "", list[i]);
    /* buf_steal() of an empty buf does not write the NUL. */
    buf_add(&b, "", 0);
    return buf_steal(&b);
}

/* Resolve names (NULL-terminated) and compare with want ("a.ko b.ko"). */
static void expect_order(const char *dir, const char *const *names, const char *want)
{
    size_t n = 0;
    while (names[n])
        n++;
    char **paths = NULL;
    struct pv_err err = {0};
    int r = kmod_order(dir, names, n, &paths, &err);
    if (r < 0)
        fail_msg("kmod_order failed (%d): %s", r, err.msg);
    _cleanup_free_ char *got = join(paths);
    assert_string_equal(got, want);
    kmod_free_paths(paths);
}

/* Expect failure r with a message containing each of the needles. */
static void expect_error(const char *dir, const char *const *names, int want_r, const char *needle1,
                         const char *needle2)
{
    size_t n = 0;
    while (names[n])
        n++;
    char **paths = NULL;
    struct pv_err err = {0};
    int r = kmod_order(dir, names, n, &paths, &err);
    assert_int_equal(r, want_r);
    assert_int_equal(err.code, -want_r);
    assert_null(paths);
    if (needle1 && !strstr(err.msg, needle1))
        fail_msg("\"%s\" not in \"%s\"", needle1, err.msg);
    if (needle2 && !strstr(err.msg, needle2))
        fail_msg("\"%s\" not in \"%s\"", needle2, err.msg);
}

static void test_kmod_order_deps_first(void **state)
{
    /* depmod style: every line lists its dependencies transitively, the
     * deepest last. */
    _cleanup_free_ char *dir = make_tree("k/a.ko: k/b.ko k/c.ko\n"
                                         "k/b.ko: k/c.ko\n"
                                         "k/c.ko:\n"
                                         "k/d.ko: k/c.ko\n",
                                         NULL);
    expect_order(dir, (const char *[]){"a", NULL}, "k/c.ko k/b.ko k/a.ko");
    expect_order(dir, (const char *[]){"d", "a", NULL}, "k/c.ko k/d.ko k/b.ko k/a.ko");
    expect_order(dir, (const char *[]){"c", NULL}, "k/c.ko");
    expect_order(dir, (const char *[]){NULL}, "");
}

static void test_kmod_order_direct_deps_only(void **state)
{
    /* A file listing only direct dependencies is followed through. */
    _cleanup_free_ char *dir = make_tree("x.ko: y.ko\ny.ko: z.ko\nz.ko:\n", NULL);
    expect_order(dir, (const char *[]){"x", NULL}, "z.ko y.ko x.ko");
}

static void test_kmod_order_dedup(void **state)
{
    _cleanup_free_ char *dir = make_tree("a.ko: c.ko\nb.ko: c.ko\nc.ko:\n", NULL);
    expect_order(dir, (const char *[]){"a", "b", "a", "c", "b", NULL}, "c.ko a.ko b.ko");
}

static void test_kmod_order_dash_underscore(void **state)
{
    _cleanup_free_ char *dir =
        make_tree("kernel/drivers/char/hw_random/virtio-rng.ko: kernel/virtio.ko\n"
                  "kernel/drivers/char/virtio_console.ko: kernel/virtio.ko\n"
                  "kernel/virtio.ko:\n",
                  NULL);
    expect_order(dir, (const char *[]){"virtio_rng", "virtio-console", "virtio-rng", NULL},
                 "kernel/virtio.ko kernel/drivers/char/hw_random/virtio-rng.ko "
                 "kernel/drivers/char/virtio_console.ko");
}

static void test_kmod_order_compressed(void **state)
{
    _cleanup_free_ char *dir = make_tree("a.ko.xz: b.ko.zst c.ko.gz\n"
                                         "b.ko.zst: c.ko.gz\n"
                                         "c.ko.gz:\n",
                                         NULL);
    expect_order(dir, (const char *[]){"a", NULL}, "c.ko.gz b.ko.zst a.ko.xz");
}

static void test_kmod_order_builtin(void **state)
{
    _cleanup_free_ char *dir = make_tree("kernel/a.ko: kernel/b.ko\nkernel/b.ko:\n",
                                         "kernel/fs/ext4/ext4.ko\n"
                                         "kernel/drivers/virtio/virtio-pci.ko\n");
    expect_order(dir, (const char *[]){"ext4", "a", "virtio_pci", NULL}, "kernel/b.ko kernel/a.ko");
    expect_order(dir, (const char *[]){"ext4", NULL}, "");
}

static void test_kmod_order_unknown(void **state)
{
    _cleanup_free_ char *dir = make_tree("a.ko:\n", "kernel/fs/ext4/ext4.ko\n");
    expect_error(dir, (const char *[]){"a", "no_such_mod", NULL}, -ENOENT, "no_such_mod", dir);
    expect_error(dir, (const char *[]){"", NULL}, -ENOENT, dir, NULL);
    /* The suffix is not part of a name. */
    expect_error(dir, (const char *[]){"a.ko", NULL}, -ENOENT, "a.ko", NULL);

    _cleanup_free_ char *empty = make_tree("", NULL);
    expect_error(empty, (const char *[]){"a", NULL}, -ENOENT, "a", empty);

    _cleanup_free_ char *nodep = make_tree(NULL, NULL);
    expect_error(nodep, (const char *[]){"a", NULL}, -ENOENT, "modules.dep", "depmod");
}

static void test_kmod_order_cycle(void **state)
{
    _cleanup_free_ char *dir = make_tree("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n"
                                         "s.ko: s.ko\n"
                                         "ok.ko:\n",
                                         NULL);
    expect_error(dir, (const char *[]){"a", NULL}, -ELOOP, "a -> b -> c -> a", NULL);
    expect_error(dir, (const char *[]){"ok", "b", NULL}, -ELOOP, "b -> c -> a -> b", NULL);
    expect_error(dir, (const char *[]){"s", NULL}, -ELOOP, "s -> s", NULL);
    expect_order(dir, (const char *[]){"ok", NULL}, "ok.ko");
}

static void test_kmod_order_malformed(void **state)
{
    static const struct {
        const char *dep;
        const char *where;
    } cases[] = {
        {"a.ko:\nb.ko:\nthis line has no colon\n", "modules.dep:3:"},
        {"a.ko:\nnot-a-module.txt: a.ko\n", "modules.dep:2:"},
        {"a.ko: b.txt\n", "modules.dep:1:"},
        {": a.ko\n", "modules.dep:1:"},
        {"a.ko:\n\n/abs/b.ko:\n", "modules.dep:3:"},
        {"../evil.ko:\n", "modules.dep:1:"},
        {"a.ko: k/../../evil.ko\n", "modules.dep:1:"},
        {"a b.ko: c.ko\n", "modules.dep:1:"},
        {"a.ko: b.ko: c.ko\n", "modules.dep:1:"},
        {"a.ko:\n.ko:\n", "modules.dep:2:"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        _cleanup_free_ char *dir = make_tree(cases[i].dep, NULL);
        expect_error(dir, (const char *[]){"a", NULL}, -EINVAL, cases[i].where, "malformed");
    }
}

static void test_kmod_order_nul_byte(void **state)
{
    _cleanup_free_ char *dir = make_tree(NULL, NULL);
    _cleanup_free_ char *dep = xasprintf("%s/modules.dep", dir);
    static const char data[] = "a.ko:\nb.ko\0x.ko: a.ko\n";
    assert_int_equal(write_file_atomic(dep, data, sizeof(data) - 1, 0644), 0);
    expect_error(dir, (const char *[]){"a", NULL}, -EINVAL, "modules.dep:2:", "NUL");
}

static void test_kmod_order_lenient_whitespace(void **state)
{
    /* Blank lines, CRLF, tabs, a missing final newline, names with dots in
     * directories ("..foo" is not ".."). */
    _cleanup_free_ char *dir =
        make_tree("\n  \na.ko:\tb.ko  c..d/c.ko\r\n\r\nb.ko:\nc..d/c.ko:", NULL);
    expect_order(dir, (const char *[]){"a", NULL}, "c..d/c.ko b.ko a.ko");
}

static void test_kmod_order_duplicates_and_dep_only(void **state)
{
    /* The first line for a name wins; a dependency without a line of its own
     * is loaded with no dependencies. */
    _cleanup_free_ char *dir = make_tree("a.ko: orphan.ko\n"
                                         "x/b.ko: c.ko\n"
                                         "y/b.ko: d.ko\n"
                                         "c.ko:\n",
                                         NULL);
    expect_order(dir, (const char *[]){"a", "b", NULL}, "orphan.ko a.ko c.ko x/b.ko");
    expect_order(dir, (const char *[]){"orphan", NULL}, "orphan.ko");
}

static void test_kmod_order_long_chain(void **state)
{
    /* Deep enough that a recursive walk would be a risk under ASan. */
    enum { N = 20000 };
    struct buf b = BUF_INIT;
    for (int i = 0; i < N; i++)
        buf_addf(&b, "m%d.ko: m%d.ko\n", i, i + 1);
    buf_addf(&b, "m%d.ko:\n", N);
    _cleanup_free_ char *dir = make_tree(b.data, NULL);
    buf_release(&b);
    char **paths = NULL;
    struct pv_err err = {0};
    const char *names[] = {"m0"};
    assert_int_equal(kmod_order(dir, names, 1, &paths, &err), 0);
    size_t n = 0;
    while (paths[n])
        n++;
    assert_int_equal(n, N + 1);
    assert_string_equal(paths[0], "m20000.ko");
    assert_string_equal(paths[N], "m0.ko");
    kmod_free_paths(paths);
}

static size_t index_of(char **paths, const char *suffix)
{
    size_t sl = strlen(suffix);
    for (size_t i = 0; paths[i]; i++) {
        size_t l = strlen(paths[i]);
        if (l >= sl && !strcmp(paths[i] + l - sl, suffix))
            return i;
    }
    return SIZE_MAX;
}

static void test_kmod_order_real_tree(void **state)
{
    glob_t g;
    /* the kernel `make check` fetched, in the running user's cache */
    const char *home = getenv("HOME");
    char *cached =
        xasprintf("%s/.cache/provium/kernels/*/lib/modules/*/modules.dep", home ? home : "/");
    char *dir = NULL;
    if (glob(cached, 0, NULL, &g) == 0) {
        dir = xstrndup(g.gl_pathv[0], strlen(g.gl_pathv[0]) - strlen("/modules.dep"));
        globfree(&g);
    }
    free(cached);
    if (!dir) {
        skip(); /* no real kernel tree on this machine (skip() does not return) */
        return;
    }
    print_message("using %s\n", dir);
    const char *names[] = {"virtio_pci", "virtio_console", "virtio-rng"};
    char **paths = NULL;
    struct pv_err err = {0};
    int r = kmod_order(dir, names, ARRAY_SIZE(names), &paths, &err);
    if (r < 0)
        fail_msg("%s", err.msg);
    _cleanup_free_ char *got = join(paths);
    print_message("order: %s\n", got);
    size_t virtio = index_of(paths, "/virtio.ko");
    size_t ring = index_of(paths, "/virtio_ring.ko");
    size_t pci = index_of(paths, "/virtio_pci.ko");
    size_t console = index_of(paths, "/virtio_console.ko");
    size_t rng = index_of(paths, "/virtio-rng.ko");
    if (virtio == SIZE_MAX || pci == SIZE_MAX || console == SIZE_MAX || rng == SIZE_MAX)
        fail_msg("missing modules in: %s", got);
    assert_true(virtio < pci);
    assert_true(virtio < console);
    assert_true(virtio < rng);
    if (ring != SIZE_MAX)
        assert_true(ring < virtio);
    /* Each once. */
    for (size_t i = 0; paths[i]; i++)
        for (size_t j = i + 1; paths[j]; j++)
            if (!strcmp(paths[i], paths[j]))
                fail_msg("%s twice in: %s", paths[i], got);
    /* Every path is a file in the tree. */
    for (size_t i = 0; paths[i]; i++) {
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, paths[i]);
        if (access(p, R_OK) < 0)
            fail_msg("%s: %s", p, strerror(errno));
    }
    kmod_free_paths(paths);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kmod_order_deps_first),
        cmocka_unit_test(test_kmod_order_direct_deps_only),
        cmocka_unit_test(test_kmod_order_dedup),
        cmocka_unit_test(test_kmod_order_dash_underscore),
        cmocka_unit_test(test_kmod_order_compressed),
        cmocka_unit_test(test_kmod_order_builtin),
        cmocka_unit_test(test_kmod_order_unknown),
        cmocka_unit_test(test_kmod_order_cycle),
        cmocka_unit_test(test_kmod_order_malformed),
        cmocka_unit_test(test_kmod_order_nul_byte),
        cmocka_unit_test(test_kmod_order_lenient_whitespace),
        cmocka_unit_test(test_kmod_order_duplicates_and_dep_only),
        cmocka_unit_test(test_kmod_order_long_chain),
        cmocka_unit_test(test_kmod_order_real_tree),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
