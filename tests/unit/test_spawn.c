/* spawn_run against real programs: sh, ls, true, sleep. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "qemu.h"
#include "spawn.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <poll.h>
#include <sys/wait.h>

/* True once pid is gone (or a zombie waiting for its reaper) within ms. */
static bool pid_gone(pid_t pid, int ms)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    for (int64_t end = now_ms() + ms;; poll(NULL, 0, 10)) {
        struct buf st = BUF_INIT;
        bool dead = read_file(path, 4096, &st) < 0;
        const char *paren = st.data ? strrchr(st.data, ')') : NULL;
        if (paren && paren[1] == ' ' && paren[2] == 'Z')
            dead = true;
        buf_release(&st);
        if (dead)
            return true;
        if (now_ms() >= end)
            return false;
    }
}

/* The first decimal number in s, or 0. */
static pid_t first_pid(const char *s)
{
    while (s && *s && (*s < '0' || *s > '9'))
        s++;
    return s ? (pid_t)atoi(s) : 0;
}

/* A field of /proc/<pid>/status text ("SigIgn"): its value as a number in
 * base (16 for the masks, 10 for ids); fails when absent. */
static unsigned long long status_field(const char *status, const char *name, int base)
{
    char key[32];
    snprintf(key, sizeof(key), "\n%s:", name);
    const char *p = strstr(status, key);
    if (!p)
        fail_msg("no %s in:\n%s", name, status);
    return strtoull(p + strlen(key), NULL, base);
}

static void test_spawn_capture(void **state)
{
    const char *argv[] = {"sh", "-c", "echo out; echo err >&2; printf tail", NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    int status = -1;
    int r = spawn_run(argv, NULL, &out, 4096, 5000, &status, &err);
    assert_int_equal(r, 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* Both streams share one pipe, so the order of writes is kept. */
    assert_string_equal(out.data, "out\nerr\ntail");
    buf_release(&out);
}

static void test_spawn_exit_status(void **state)
{
    const char *argv[] = {"sh", "-c", "exit 3", NULL};
    struct pv_err err = {0};
    int status = -1;
    assert_int_equal(spawn_run(argv, NULL, NULL, 0, 5000, &status, &err), 0);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 3);
    char desc[64];
    spawn_describe_status(status, desc, sizeof(desc));
    assert_string_equal(desc, "exited with status 3");
}

static void test_spawn_signal_status(void **state)
{
    const char *argv[] = {"sh", "-c", "kill -9 $$", NULL};
    struct pv_err err = {0};
    int status = -1;
    assert_int_equal(spawn_run(argv, NULL, NULL, 0, 5000, &status, &err), 0);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    char desc[64];
    spawn_describe_status(status, desc, sizeof(desc));
    assert_string_equal(desc, "killed by signal 9 (Killed)");
}

static void test_spawn_missing_program(void **state)
{
    const char *argv[] = {"provium-no-such-program-xyz", "arg", NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    int status = -1;
    int r = spawn_run(argv, NULL, &out, 4096, 5000, &status, &err);
    assert_int_equal(r, -ENOENT);
    assert_int_equal(err.code, ENOENT);
    assert_non_null(strstr(err.msg, "provium-no-such-program-xyz"));
    assert_int_equal(status, -1); /* untouched: there was no run */
    buf_release(&out);

    const char *abs[] = {"/nonexistent/dir/prog", NULL};
    assert_int_equal(spawn_run(abs, NULL, NULL, 0, 5000, NULL, &err), -ENOENT);
}

static void test_spawn_not_executable(void **state)
{
    char dir[] = "/tmp/test_spawn.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/plain", dir);
    assert_int_equal(write_file_atomic(path, "#!/bin/sh\n", 10, 0644), 0);
    const char *argv[] = {path, NULL};
    struct pv_err err = {0};
    int r = spawn_run(argv, NULL, NULL, 0, 5000, NULL, &err);
    assert_int_equal(r, -EACCES);
    assert_non_null(strstr(err.msg, path));
    assert_int_equal(rm_rf(dir), 0);
}

static void test_spawn_timeout(void **state)
{
    const char *argv[] = {"sleep", "30", NULL};
    struct pv_err err = {0};
    int status = -1;
    int64_t t0 = now_ms();
    int r = spawn_run(argv, NULL, NULL, 0, 200, &status, &err);
    int64_t took = now_ms() - t0;
    assert_int_equal(r, -ETIMEDOUT);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    assert_non_null(strstr(err.msg, "sleep"));
    /* Not a timing assertion: it proves the child did not run to its end. */
    if (took >= 30000)
        fail_msg("spawn_run returned after %lld ms: the child was not killed", (long long)took);
}

static void test_spawn_timeout_with_output(void **state)
{
    /* The child keeps the pipe open and busy; the deadline still holds. */
    const char *argv[] = {"sh", "-c", "while :; do echo spam; done", NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    int r = spawn_run(argv, NULL, &out, 100, 300, NULL, &err);
    assert_int_equal(r, -ETIMEDOUT);
    assert_int_equal(out.len, 100);
    buf_release(&out);
}

static void test_spawn_cwd(void **state)
{
    char dir[] = "/tmp/test_spawn.XXXXXX";
    assert_non_null(mkdtemp(dir));
    const char *argv[] = {"pwd", NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    int status = -1;
    assert_int_equal(spawn_run(argv, dir, &out, 4096, 5000, &status, &err), 0);
    assert_int_equal(status, 0);
    char want[64];
    snprintf(want, sizeof(want), "%s\n", dir);
    assert_string_equal(out.data, want);
    buf_release(&out);

    char missing[80];
    snprintf(missing, sizeof(missing), "%s/missing", dir);
    int r = spawn_run(argv, missing, NULL, 0, 5000, NULL, &err);
    assert_int_equal(r, -ENOENT);
    assert_non_null(strstr(err.msg, "chdir"));
    assert_int_equal(rm_rf(dir), 0);
}

static void test_spawn_no_fd_leak(void **state)
{
    /* ls opens /proc/self/fd as 3 to list it; anything else leaked. An fd
     * this process holds without FD_CLOEXEC must not reach the child. */
    int inherited = open("/dev/null", O_RDONLY);
    assert_true(inherited >= 3);
    const char *argv[] = {"ls", "/proc/self/fd", NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    int status = -1;
    assert_int_equal(spawn_run(argv, NULL, &out, 4096, 5000, &status, &err), 0);
    assert_int_equal(status, 0);
    assert_string_equal(out.data, "0\n1\n2\n3\n");
    buf_release(&out);
    /* The mark is the child's own: the caller's fd is still inheritable. */
    assert_int_equal(fcntl(inherited, F_GETFD), 0);
    close(inherited);
}

static void test_spawn_stdin_is_devnull(void **state)
{
    const char *argv[] = {"wc", "-c", NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    assert_int_equal(spawn_run(argv, NULL, &out, 4096, 5000, NULL, &err), 0);
    assert_string_equal(out.data, "0\n");
    buf_release(&out);
}

static void test_spawn_truncates_output(void **state)
{
    /* 1 MiB of output, far above a pipe's capacity: the child must not
     * block, and only max_out bytes are kept. */
    const char *argv[] = {"head", "-c", "1048576", "/dev/zero", NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    int status = -1;
    assert_int_equal(spawn_run(argv, NULL, &out, 1000, 10000, &status, &err), 0);
    assert_int_equal(status, 0);
    assert_int_equal(out.len, 1000);
    buf_release(&out);

    assert_int_equal(spawn_run(argv, NULL, &out, 4 << 20, 10000, &status, &err), 0);
    assert_int_equal(out.len, 1048576);
    buf_release(&out);
}

static void test_spawn_grandchild_keeps_pipe(void **state)
{
    /* The child exits at once but leaves a background process holding the
     * output pipe: spawn_run returns when the child exits, with its output. */
    const char *argv[] = {"sh", "-c", "echo before; sleep 30 & exit 0", NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    int status = -1;
    int64_t t0 = now_ms();
    assert_int_equal(spawn_run(argv, NULL, &out, 4096, 20000, &status, &err), 0);
    int64_t took = now_ms() - t0;
    assert_int_equal(status, 0);
    assert_string_equal(out.data, "before\n");
    if (took >= 20000)
        fail_msg("spawn_run waited %lld ms for a grandchild", (long long)took);
    buf_release(&out);
}

static void test_spawn_sigpipe_default(void **state)
{
    /* Even when the parent ignores SIGPIPE, the child gets the default. */
    signal(SIGPIPE, SIG_IGN);
    const char *argv[] = {"sh", "-c", "grep SigIgn /proc/self/status", NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    assert_int_equal(spawn_run(argv, NULL, &out, 4096, 5000, NULL, &err), 0);
    signal(SIGPIPE, SIG_DFL);
    /* sh itself may ignore nothing at this point: no SIGPIPE bit (13 -> 0x1000). */
    unsigned long long mask = strtoull(strchr(out.data, ':') + 1, NULL, 16);
    if (mask & (1ull << (SIGPIPE - 1)))
        fail_msg("child ignores SIGPIPE: %s", out.data);
    buf_release(&out);
}

/* A timeout kills the program's whole process group: a grandchild (the
 * compilers of a `make`) does not outlive it. */
static void test_spawn_timeout_kills_group(void **state)
{
    const char *argv[] = {"sh", "-c", "sleep 100 & echo $!; wait", NULL};
    struct buf out = BUF_INIT;
    struct pv_err err = {0};
    int r = spawn_run(argv, NULL, &out, 4096, 1500, NULL, &err);
    pid_t grandchild = first_pid(out.data);
    buf_release(&out);
    assert_int_equal(r, -ETIMEDOUT);
    assert_in_range(grandchild, 2, INT32_MAX);
    bool gone = pid_gone(grandchild, 5000);
    if (!gone) {
        kill(grandchild, SIGKILL);
        fail_msg("the grandchild %d outlived the timeout", (int)grandchild);
    }
}

/* When the caller dies (SIGKILL: no handler runs), the program's group dies
 * with it, not only the program. */
static void test_spawn_caller_death_kills_group(void **state)
{
    char dir[] = "/tmp/test_spawn.XXXXXX";
    assert_non_null(mkdtemp(dir));
    char pidfile[96], script[512];
    snprintf(pidfile, sizeof(pidfile), "%s/pid", dir);
    snprintf(script, sizeof(script), "sleep 100 & echo $! > %s.tmp; mv %s.tmp %s; wait", pidfile,
             pidfile, pidfile);
    pid_t caller = fork();
    assert_true(caller >= 0);
    if (caller == 0) {
        const char *argv[] = {"sh", "-c", script, NULL};
        _exit(spawn_run(argv, NULL, NULL, 0, 0, NULL, NULL) == 0 ? 0 : 1);
    }
    pid_t grandchild = 0;
    for (int64_t end = now_ms() + 10000; !grandchild && now_ms() < end; poll(NULL, 0, 10)) {
        struct buf b = BUF_INIT;
        if (read_file(pidfile, 64, &b) == 0)
            grandchild = first_pid(b.data);
        buf_release(&b);
    }
    kill(caller, SIGKILL);
    waitpid(caller, NULL, 0);
    assert_int_equal(rm_rf(dir), 0);
    assert_in_range(grandchild, 2, INT32_MAX);
    bool gone = pid_gone(grandchild, 5000);
    if (!gone) {
        kill(grandchild, SIGKILL);
        fail_msg("the grandchild %d outlived its caller", (int)grandchild);
    }
}

/* Whatever the caller's signal state and descriptors, the program starts
 * clean: no blocked or ignored signal, its own process group, nothing
 * above 2 (ls lists its own /proc/self/fd as 3). */
static void test_spawn_clean_child(void **state)
{
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &old);
    signal(SIGUSR2, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    int inherited = open("/dev/null", O_RDONLY);
    assert_true(inherited >= 3);

    const char *status_argv[] = {"cat", "/proc/self/status", NULL};
    const char *fd_argv[] = {"ls", "/proc/self/fd", NULL};
    struct buf status = BUF_INIT, fds = BUF_INIT;
    struct pv_err err = {0};
    int r1 = spawn_run(status_argv, NULL, &status, 1 << 16, 5000, NULL, &err);
    int r2 = spawn_run(fd_argv, NULL, &fds, 4096, 5000, NULL, &err);
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR2, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    close(inherited);
    assert_int_equal(r1, 0);
    assert_int_equal(r2, 0);
    unsigned long long blocked = status_field(status.data, "SigBlk", 16);
    unsigned long long ignored = status_field(status.data, "SigIgn", 16);
    unsigned long long pgid = status_field(status.data, "NSpgid", 10);
    unsigned long long pid = status_field(status.data, "Pid", 10);
    char listed[64];
    snprintf(listed, sizeof(listed), "%s", fds.data ? fds.data : "");
    buf_release(&status);
    buf_release(&fds);
    assert_int_equal(blocked, 0);
    assert_int_equal(ignored, 0);
    assert_int_equal(pgid, pid);
    assert_string_equal(listed, "0\n1\n2\n3\n");
}

/* qemu_start goes through the same child setup: a clean start in its own
 * group (here with cat for QEMU, its output in qemu.log), and a program
 * that cannot be executed is an error at once, named, not a QEMU that
 * exits 127 later. */
static void test_qemu_start_child(void **state)
{
    char dir[] = "/tmp/test_spawn.XXXXXX";
    assert_non_null(mkdtemp(dir));
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &old);
    signal(SIGUSR2, SIG_IGN);
    const char *cat[] = {"cat", "/proc/self/status", NULL};
    pid_t pid = 0;
    int pidfd = -1, status = -1;
    struct pv_err err = {0};
    int r = qemu_start(cat, dir, NULL, 0, &pid, &pidfd, &err);
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR2, SIG_DFL);
    assert_int_equal(r, 0);
    waitpid(pid, &status, 0);
    close(pidfd);
    assert_int_equal(status, 0);
    char log[64];
    snprintf(log, sizeof(log), "%s/qemu.log", dir);
    struct buf text = BUF_INIT;
    assert_int_equal(read_file(log, 1 << 16, &text), 0);
    unsigned long long blocked = status_field(text.data, "SigBlk", 16);
    unsigned long long ignored = status_field(text.data, "SigIgn", 16);
    unsigned long long pgid = status_field(text.data, "NSpgid", 10);
    buf_release(&text);
    assert_int_equal(blocked, 0);
    assert_int_equal(ignored, 0);
    assert_int_equal(pgid, pid);

    /* a directory passes qemu_which's access(X_OK), and execve refuses it */
    const char *notexe[] = {dir, NULL};
    r = qemu_start(notexe, dir, NULL, 0, &pid, &pidfd, &err);
    assert_int_equal(r, -EACCES);
    assert_non_null(strstr(err.msg, "cannot exec"));
    assert_non_null(strstr(err.msg, dir));
    assert_int_equal(rm_rf(dir), 0);
}

static void test_spawn_describe(void **state)
{
    char desc[64];
    spawn_describe_status(0, desc, sizeof(desc));
    assert_string_equal(desc, "exited with status 0");
    spawn_describe_status(SIGTERM, desc, sizeof(desc));
    assert_string_equal(desc, "killed by signal 15 (Terminated)");
    char tiny[8];
    spawn_describe_status(3 << 8, tiny, sizeof(tiny));
    assert_string_equal(tiny, "exited ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spawn_capture),
        cmocka_unit_test(test_spawn_exit_status),
        cmocka_unit_test(test_spawn_signal_status),
        cmocka_unit_test(test_spawn_missing_program),
        cmocka_unit_test(test_spawn_not_executable),
        cmocka_unit_test(test_spawn_timeout),
        cmocka_unit_test(test_spawn_timeout_with_output),
        cmocka_unit_test(test_spawn_cwd),
        cmocka_unit_test(test_spawn_no_fd_leak),
        cmocka_unit_test(test_spawn_stdin_is_devnull),
        cmocka_unit_test(test_spawn_truncates_output),
        cmocka_unit_test(test_spawn_grandchild_keeps_pipe),
        cmocka_unit_test(test_spawn_sigpipe_default),
        cmocka_unit_test(test_spawn_timeout_kills_group),
        cmocka_unit_test(test_spawn_caller_death_kills_group),
        cmocka_unit_test(test_spawn_clean_child),
        cmocka_unit_test(test_qemu_start_child),
        cmocka_unit_test(test_spawn_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
