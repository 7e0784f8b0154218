/* Plain disks (src/host/disk/qcow2.c, disk.c): a qcow2 image made when it
 * does not exist, and nothing left when that fails; plain disks frozen for
 * a snapshot, a qcow2 one restored under an overlay and flattened at the
 * next freeze. Real files, the real qemu-img (Debian's qemu-utils). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "disk/disk.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

static char dir[64];

static int setup(void **st)
{
    snprintf(dir, sizeof(dir), "/tmp/test_disk_plain.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

/* The names in dir, one per line, sorted by readdir's order. */
static void names(char *out, size_t n)
{
    out[0] = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            snprintf(out + strlen(out), n - strlen(out), "%s\n", e->d_name);
    closedir(d);
}

static int teardown(void **st)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        char p[384];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            unlink(p);
    }
    closedir(d);
    return rmdir(dir);
}

/* The first 16 bytes of the qcow2 header at path: its magic, and whether a
 * backing file is named. */
static bool qcow2_at(const char *path, bool *ret_backing)
{
    unsigned char h[16];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && pread(fd, h, sizeof(h), 0) == (ssize_t)sizeof(h);
    if (fd >= 0)
        close(fd);
    uint64_t off = 0;
    for (int i = 8; i < 16; i++)
        off = off << 8 | h[i];
    *ret_backing = off != 0;
    return ok && !memcmp(h, "QFI\xfb", 4);
}

static void test_qcow2_created(void **st)
{
    struct pv_err err = {0};
    char path[96], frozen[96], flat[96], list[512];
    snprintf(path, sizeof(path), "%s/new.qcow2", dir);
    int h = disk_open_plain(path, dir, "qcow2", 8 << 20, false, &err);
    assert_true(h > 0);
    bool backing;
    assert_true(qcow2_at(path, &backing));
    assert_false(backing);
    names(list, sizeof(list));
    assert_string_equal(list, "new.qcow2\n"); /* no temporary name left */
    char via[64];
    const char *format = NULL;
    assert_int_equal(disk_plain(h, via, sizeof(via), &format), 1);
    assert_string_equal(format, "qcow2");
    uint64_t size = 0; /* the disk's, not the file's (a header and tables) */
    assert_int_equal(disk_size(h, &size), 0);
    assert_int_equal(size, 8 << 20);

    /* frozen: a copy of the image; restored: an overlay with no name */
    snprintf(frozen, sizeof(frozen), "%s/frozen", dir);
    struct disk_frozen f;
    assert_int_equal(disk_freeze(h, frozen, &f, &err), 0);
    assert_true(f.qcow2);
    assert_true(qcow2_at(frozen, &backing));
    disk_close(h);
    int o = disk_open_overlay(frozen, dir, false, &err);
    assert_true(o > 0);
    assert_int_equal(disk_size(o, &size), 0);
    assert_int_equal(size, 8 << 20);
    names(list, sizeof(list));
    assert_true(strstr(list, "new.qcow2\n") && strstr(list, "frozen\n"));
    assert_int_equal(strlen(list), strlen("new.qcow2\nfrozen\n"));
    /* its freeze: one image, no backing file */
    snprintf(flat, sizeof(flat), "%s/flat", dir);
    assert_int_equal(disk_freeze(o, flat, &f, &err), 0);
    assert_true(qcow2_at(flat, &backing));
    assert_false(backing);
    struct stat s;
    assert_int_equal(stat(flat, &s), 0);
    assert_int_equal(f.size, (uint64_t)s.st_size);
    assert_int_equal(s.st_mode & 0777, 0600);
    disk_close(o);
}

static void test_qcow2_not_created(void **st)
{
    struct pv_err err = {0};
    char path[96], list[512];
    snprintf(path, sizeof(path), "%s/no/such.qcow2", dir);
    assert_int_equal(disk_open_plain(path, dir, "qcow2", 8 << 20, false, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "creating it: No such file or directory"));
    /* a size qcow2 cannot hold: qemu-img's words, and no file */
    snprintf(path, sizeof(path), "%s/big.qcow2", dir);
    assert_true(disk_open_plain(path, dir, "qcow2", 10000ull << 40, false, &err) < 0);
    assert_non_null(strstr(err.msg, "qemu-img create exited with status 1 saying: The image "
                                    "size is too large"));
    assert_null(strstr(err.msg, ".provium-qcow2"));
    names(list, sizeof(list));
    assert_string_equal(list, "");
    assert_true(disk_open_plain(path, dir, "qcow2", 1000, false, &err) < 0); /* not sectors */
}

static void test_raw_plain_frozen(void **st)
{
    struct pv_err err = {0};
    char path[96], frozen[96];
    snprintf(path, sizeof(path), "%s/r.img", dir);
    snprintf(frozen, sizeof(frozen), "%s/frozen", dir);
    int h = disk_open_plain(path, dir, "raw", 1 << 20, false, &err);
    assert_true(h > 0);
    assert_int_equal(disk_write(h, 4096, "plain", 5, &err), 0);
    struct disk_frozen f;
    assert_int_equal(disk_freeze(h, frozen, &f, &err), 0);
    assert_false(f.qcow2);
    assert_int_equal(f.size, 1 << 20);
    disk_close(h);
    /* restored as a served disk over the frozen copy */
    h = disk_open_layered(frozen, dir, false, &err);
    assert_true(h > 0);
    char buf[5];
    assert_int_equal(disk_read(h, 4096, buf, 5, &err), 0);
    assert_memory_equal(buf, "plain", 5);
    disk_close(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qcow2_created, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_not_created, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_plain_frozen, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
