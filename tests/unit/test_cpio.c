/* cpio.c against GNU cpio: archives written here are extracted with the
 * real tool and compared file by file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "host/cpio.h"
#include "spawn.h"

#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

struct fixture {
    char dir[32]; /* the temp dir: archive.cpio and out/ */
    char out[48];
};

static int setup(void **state)
{
    struct fixture *f = xcalloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/test_cpio.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->out, sizeof(f->out), "%s/out", f->dir);
    if (mkdir(f->out, 0755) < 0)
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    int r = rm_rf(f->dir);
    free(f);
    return r;
}

/* 13 bytes with its NUL: the data padding is exercised. */
static const char odd_data[] = "odd-length\n!";
static char big_data[70001];

static void build(struct cpio *c)
{
    for (size_t i = 0; i < sizeof(big_data); i++)
        big_data[i] = (char)(i * 7 + i / 251);
    cpio_init(c);
    cpio_add_dir(c, "/sbin", 0755);
    cpio_add_dir(c, "etc", 0700);
    cpio_add_dir(c, "dev", 0755);
    cpio_add_file(c, "/sbin/provium-agent", 0755, big_data, sizeof(big_data));
    cpio_add_file(c, "etc/empty", 0644, "", 0);
    cpio_add_file(c, "etc/odd", 0600, odd_data, 13);
    cpio_add_file(c, "etc/four", 0640, "four", 4);
    cpio_add_symlink(c, "init", "sbin/provium-agent");
    cpio_add_node(c, "dev/console", S_IFCHR | 0600, 5, 1);
    cpio_finish(c);
}

/* The header of the entry at off, as numbers; returns the offset of the
 * next entry. Checks the magic and the 4-byte alignment on the way. */
static size_t parse_entry(const struct buf *a, size_t off, uint32_t fields[13], char **name)
{
    assert_true(off + 110 <= a->len);
    assert_memory_equal(a->data + off, "070701", 6);
    for (int i = 0; i < 13; i++) {
        char hex[9];
        memcpy(hex, a->data + off + 6 + 8 * i, 8);
        hex[8] = 0;
        fields[i] = (uint32_t)strtoul(hex, NULL, 16);
    }
    *name = a->data + off + 110;
    size_t namesize = fields[11];
    assert_int_equal((*name)[namesize - 1], 0);
    size_t data = (off + 110 + namesize + 3) & ~(size_t)3;
    size_t next = (data + fields[6] + 3) & ~(size_t)3;
    for (size_t i = off + 110 + namesize; i < data; i++)
        assert_int_equal(a->data[i], 0);
    return next;
}

static void test_cpio_layout(void **state)
{
    struct cpio c;
    build(&c);
    const struct buf *a = &c.out;
    assert_int_equal(a->len % 512, 0);

    size_t off = 0;
    uint32_t h[13];
    char *name;
    uint32_t last_ino = 0;
    int entries = 0;
    for (;;) {
        size_t next = parse_entry(a, off, h, &name);
        assert_int_equal(off % 4, 0);
        entries++;
        if (!strcmp(name, "TRAILER!!!"))
            break;
        assert_true(name[0] != '/');
        assert_int_equal(h[2], 0);    /* uid */
        assert_int_equal(h[3], 0);    /* gid */
        assert_int_equal(h[5], 0);    /* mtime */
        assert_true(h[0] > last_ino); /* unique inode numbers */
        last_ino = h[0];
        assert_int_equal(h[4], S_ISDIR(h[1]) ? 2 : 1);
        if (!strcmp(name, "dev/console")) {
            assert_int_equal(h[1], S_IFCHR | 0600);
            assert_int_equal(h[9], 5);
            assert_int_equal(h[10], 1);
        }
        if (!strcmp(name, "init")) {
            assert_int_equal(h[1], S_IFLNK | 0777);
            assert_int_equal(h[6], strlen("sbin/provium-agent"));
        }
        off = next;
    }
    assert_int_equal(entries, 10);
    /* After the trailer: only the zero padding to 512. */
    for (size_t i = off + 110 + 11; i < a->len; i++)
        if (a->data[i])
            fail_msg("non-zero byte 0x%02x at %zu after the trailer", (unsigned char)a->data[i], i);
    cpio_release(&c);
}

static void test_cpio_deterministic(void **state)
{
    struct cpio a, b;
    build(&a);
    build(&b);
    assert_int_equal(a.out.len, b.out.len);
    assert_memory_equal(a.out.data, b.out.data, a.out.len);
    cpio_release(&a);
    cpio_release(&b);

    /* An empty archive is just the trailer, padded. */
    struct cpio e;
    cpio_init(&e);
    cpio_finish(&e);
    assert_int_equal(e.out.len, 512);
    assert_memory_equal(e.out.data + 110, "TRAILER!!!", 11);
    cpio_release(&e);
}

static void check_file(const char *root, const char *rel, const void *data, size_t len, mode_t mode)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", root, rel);
    struct stat st;
    if (lstat(path, &st) < 0)
        fail_msg("%s: %s", path, strerror(errno));
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, mode);
    assert_int_equal(st.st_mtime, 0);
    struct buf b = BUF_INIT;
    assert_int_equal(read_file(path, 1 << 20, &b), 0);
    assert_int_equal(b.len, len);
    if (len)
        assert_memory_equal(b.data, data, len);
    buf_release(&b);
}

static void test_cpio_extract(void **state)
{
    struct fixture *f = *state;
    struct cpio c;
    build(&c);
    char archive[64];
    snprintf(archive, sizeof(archive), "%s/archive.cpio", f->dir);
    assert_int_equal(write_file_atomic(archive, c.out.data, c.out.len, 0644), 0);
    cpio_release(&c);

    /* Extraction as root would chown to 0 anyway; the umask must not hide
     * the modes we check. */
    mode_t old = umask(0);
    const char *argv[] = {"cpio", "-idm", "--no-absolute-filenames", "-F", archive, NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    int status = -1;
    int r = spawn_run(argv, f->out, &out, 65536, 30000, &status, &err);
    umask(old);
    if (r < 0)
        fail_msg("%s", err.msg);
    /* Only root may create dev/console; the rest must still extract. */
    buf_add(&out, "", 0); /* data non-NULL for the messages below */
    if (status != 0 && !(geteuid() != 0 && strstr(out.data, "mknod")))
        fail_msg("cpio: status 0x%x: %s", status, out.data);
    buf_release(&out);

    check_file(f->out, "sbin/provium-agent", big_data, sizeof(big_data), 0755);
    check_file(f->out, "etc/empty", "", 0, 0644);
    check_file(f->out, "etc/odd", odd_data, 13, 0600);
    check_file(f->out, "etc/four", "four", 4, 0640);

    char path[256], target[256];
    snprintf(path, sizeof(path), "%s/init", f->out);
    ssize_t n = readlink(path, target, sizeof(target) - 1);
    assert_true(n > 0);
    target[n] = 0;
    assert_string_equal(target, "sbin/provium-agent");

    struct stat st;
    snprintf(path, sizeof(path), "%s/etc", f->out);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);

    snprintf(path, sizeof(path), "%s/dev/console", f->out);
    if (geteuid() == 0) {
        assert_int_equal(lstat(path, &st), 0);
        assert_true(S_ISCHR(st.st_mode));
        assert_int_equal(major(st.st_rdev), 5);
        assert_int_equal(minor(st.st_rdev), 1);
        assert_int_equal(st.st_mode & 07777, 0600);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpio_layout),
        cmocka_unit_test(test_cpio_deterministic),
        cmocka_unit_test_setup_teardown(test_cpio_extract, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
