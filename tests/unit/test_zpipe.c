/* src/host/zpipe.c: the compressing thread of snapshots, and its deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>

#include "host/zpipe.h"

/* What goes in compressed comes out the same. */
static void test_zpipe_round_trip(void **state)
{
    (void)state;
    int a[2], b[2], c[2];
    assert_int_equal(pipe2(a, O_CLOEXEC), 0);
    assert_int_equal(pipe2(b, O_CLOEXEC), 0);
    assert_int_equal(pipe2(c, O_CLOEXEC), 0);
    struct zpipe zc, zd;
    struct pv_err err = {0};
    int64_t d = now_ns() + 10 * 1000000000LL;
    assert_int_equal(zpipe_start(&zc, a[0], b[1], true, d, &err), 0);
    assert_int_equal(zpipe_start(&zd, b[0], c[1], false, d, &err), 0);
    const char msg[] = "a migration stream, or something like it";
    assert_int_equal(write_all(a[1], msg, sizeof(msg)), 0);
    close(a[1]);
    char got[sizeof(msg)] = {0};
    size_t n = 0;
    for (ssize_t r; n < sizeof(got) && (r = read(c[0], got + n, sizeof(got) - n)) > 0;)
        n += (size_t)r;
    close(c[0]);
    assert_int_equal(zpipe_join(&zc, "compressing", &err), 0);
    assert_int_equal(zpipe_join(&zd, "decompressing", &err), 0);
    assert_memory_equal(got, msg, sizeof(msg));
}

/* A writer that neither writes nor closes (a stuck QEMU) cannot hold the
 * thread, nor its join, past the deadline. */
static void test_zpipe_deadline(void **state)
{
    (void)state;
    int in[2], out[2];
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    struct zpipe z;
    struct pv_err err = {0};
    int64_t t0 = now_ns();
    assert_int_equal(zpipe_start(&z, in[0], out[1], true, t0 + 200 * 1000000LL, &err), 0);
    assert_int_equal(zpipe_join(&z, "compressing", &err), -ETIMEDOUT);
    assert_non_null(strstr(err.msg, "stalled past its deadline"));
    close(in[1]);
    close(out[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zpipe_round_trip),
        cmocka_unit_test(test_zpipe_deadline),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
