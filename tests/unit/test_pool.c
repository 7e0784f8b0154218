/* The pool arithmetic, the static scan of provium:claim, and the CPU wait
 * of the running files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "host/pool.h"

static int scan(const char *text, struct amount *a, bool *found, struct pv_err *err)
{
    memset(err, 0, sizeof(*err));
    return pool_scan_claim_text(text, strlen(text), "t.test.lua", a, found, err);
}

static void test_claim_forms(void **state)
{
    (void)state;
    struct amount a;
    bool found;
    struct pv_err err;
    assert_int_equal(scan("provium:claim { memory = \"2G\", cpus = 2 }\n", &a, &found, &err), 0);
    assert_true(found);
    assert_int_equal(a.memory, 2ull << 30);
    assert_int_equal(a.cpus, 2);
    assert_int_equal(scan("x = 1\nprovium:claim({memory = 1048576; cpus = 0,})", &a, &found, &err),
                     0);
    assert_true(found);
    assert_int_equal(a.memory, 1 << 20);
    assert_int_equal(a.cpus, 0);
    /* cpus defaults to 0 (docs/running.md) */
    assert_int_equal(scan("provium:claim{memory='512M'}", &a, &found, &err), 0);
    assert_int_equal(a.cpus, 0);
    /* none at all; and none in comments or strings */
    assert_int_equal(scan("test('x', function() end)\n", &a, &found, &err), 0);
    assert_false(found);
    assert_int_equal(scan("-- provium:claim{memory = m}\n--[[ provium:claim{]] ]]\n"
                          "local s = [==[ provium:claim{ ]] ]==] .. \"provium:claim{\"\n"
                          "myprovium:claim{x}\n",
                          &a, &found, &err),
                     0);
    assert_false(found);
}

static void test_claim_errors(void **state)
{
    (void)state;
    struct amount a;
    bool found;
    struct pv_err err;
    assert_int_equal(scan("\n\nprovium:claim { memory = m }", &a, &found, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "t.test.lua:3: provium:claim needs a table of literal"));
    assert_int_equal(scan("provium:claim { mem = \"1G\" }", &a, &found, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "unknown key `mem`"));
    assert_int_equal(scan("provium:claim{memory=\"1G\"}\n--[[\n]]\nprovium:claim{memory=\"1G\"}",
                          &a, &found, &err),
                     -EINVAL);
    assert_non_null(strstr(err.msg, "t.test.lua:4: a second provium:claim"));
    assert_int_equal(scan("provium:claim{memory=\"lots\"}", &a, &found, &err), -EINVAL);
    assert_non_null(strstr(err.msg, "memory must be a size"));
    assert_int_equal(scan("provium:claim{cpus=2}", &a, &found, &err), -EINVAL);
    assert_int_equal(scan("provium:claim{memory=\"1G\", cpus=\"2\"}", &a, &found, &err), -EINVAL);
    assert_int_equal(scan("provium:claim{memory=\"1G\"", &a, &found, &err), -EINVAL);
}

static void test_pool_arithmetic(void **state)
{
    (void)state;
    struct pool p = {.total = {1000ull << 20, 2}};
    struct amount claim = {300ull << 20, 1};
    struct amount r = pool_reservation(&claim);
    assert_int_equal(r.memory, (300ull << 20) + POOL_FILE_OVERHEAD);
    struct amount d = pool_reservation(NULL);
    assert_int_equal(d.memory, POOL_DEFAULT_VM_MEMORY + POOL_VM_OVERHEAD + POOL_FILE_OVERHEAD);
    assert_int_equal(d.cpus, 1);
    assert_true(pool_fits(&p, r));
    pool_take(&p, r);
    assert_true(pool_fits(&p, r));
    pool_take(&p, r);
    assert_false(pool_fits(&p, r)); /* memory left, no vCPU */
    assert_true(pool_could_fit(&p, r));
    pool_give(&p, r);
    pool_give(&p, r);
    assert_int_equal(p.used.memory, 0);
    assert_int_equal(p.used.cpus, 0);
    assert_false(pool_could_fit(&p, (struct amount){2000ull << 20, 0}));
    assert_true(pool_default_memory() > 0);
}

/* A grandchild's CPU time counts: the walk goes through /proc's children
 * lists, and a thread counts from the sample in which it was first seen. */
static void test_cpu_wait_walks_descendants(void **state)
{
    (void)state;
    struct cpu_wait w = {0};
    assert_true(pool_cpu_wait_share(&w) < 0);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        setpgid(0, 0);
        if (fork() == 0) { /* the grandchild spins for 200 ms of CPU time */
            struct timespec t;
            (void)!write(p[1], "s", 1);
            do
                clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
            while (t.tv_sec == 0 && t.tv_nsec < 200000000);
            (void)!write(p[1], "e", 1);
            pause();
        }
        pause();
    }
    char c;
    assert_int_equal(read(p[0], &c, 1), 1);
    pool_cpu_sample(&w, &child, 1, now_ns());
    assert_int_equal(read(p[0], &c, 1), 1);
    pool_cpu_sample(&w, &child, 1, now_ns());
    assert_true(w.nseen >= 2);
    assert_true(w.wanted >= 1.5e8);
    double share = pool_cpu_wait_share(&w);
    assert_true(share >= 0 && share <= 100);
    kill(-child, SIGKILL);
    waitpid(child, NULL, 0);
    pool_cpu_wait_free(&w);
    close(p[0]);
    close(p[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_claim_forms),
        cmocka_unit_test(test_claim_errors),
        cmocka_unit_test(test_pool_arithmetic),
        cmocka_unit_test(test_cpu_wait_walks_descendants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
