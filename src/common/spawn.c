#include "spawn.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "child.h"

/* Without pidfd_open() the parent cannot sleep on the child's exit, so it
 * wakes up this often to look. */
#define SPAWN_POLL_MS 20

static int spawn_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
    /* The kernel always sets O_CLOEXEC on a pidfd. */
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    return -1;
#endif
}

/* The program, in a process group of its own (child.h has the rules). */
__attribute__((noreturn)) static void spawn_child(const char *const argv[], const char *cwd,
                                                  int in_fd, int out_fd, int report_fd,
                                                  pid_t parent)
{
    struct child_opts o = {
        .parent = parent,
        .flags = CHILD_PGRP,
        .cwd = cwd,
        .stdio = {in_fd, out_fd, out_fd},
        .report_fd = report_fd,
    };
    int step = child_setup(&o);
    if (!step) {
        execvp(argv[0], (char *const *)argv);
        step = CHILD_EXEC;
    }
    child_fail(o.report_fd, step);
}

/* The guard: a second child, forked without exec, that joins the
 * program's process group and blocks reading life_r, a pipe whose only
 * write end spawn_run holds. PR_SET_PDEATHSIG reaches the program alone,
 * and the kill-all paths run only on a signal provium can catch; when the
 * caller dies in any way, SIGKILL included, the pipe reads EOF and the
 * guard kills the whole group (a build's compilers, apt's helpers), itself
 * with it. spawn_run SIGKILLs the guard before it reaps the program, so the
 * group's number cannot have been reused meanwhile. Every signal stays
 * blocked: only SIGKILL ends it early. Async-signal-safe calls only. */
static pid_t spawn_guard(pid_t pgid, int life_r, int null_fd)
{
    pid_t pid = child_fork(NULL);
    if (pid != 0)
        return pid;
    (void)setpgid(0, pgid); /* else spawn_run still kills it by pid */
    int fds[3] = {life_r, null_fd, null_fd};
    if (child_stdio(fds, NULL) < 0)
        _exit(1);
    child_close_from(3, false); /* the caller's pipes, and its copy of the write end */
    char c;
    ssize_t n;
    do
        n = read(0, &c, 1);
    while (n > 0 || (n < 0 && errno == EINTR));
    kill(-pgid, SIGKILL);
    _exit(0);
}

static int spawn_reap(pid_t pid, int *ret_status)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    if (ret_status)
        *ret_status = status;
    return 0;
}

/* Kill the program's group, then the guard, then reap the program. */
static void spawn_kill(pid_t pid, pid_t guard, int *ret_status)
{
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    if (guard > 0) {
        kill(guard, SIGKILL);
        spawn_reap(guard, NULL);
    }
    spawn_reap(pid, ret_status);
}

/* The message for a child that failed before exec. */
static int spawn_failed(const char *name, const char *cwd, const struct child_report *f,
                        struct pv_err *err)
{
    int e = f->errnum;
    if (f->step == CHILD_EXEC && e == ENOENT)
        return pv_err_set(err, e, "cannot run %s: not found (is it installed and in PATH?)", name);
    if (f->step == CHILD_EXEC)
        return pv_err_set(err, e, "cannot run %s: %s", name, strerror(e));
    if (f->step == CHILD_CHDIR)
        return pv_err_set(err, e, "cannot run %s: chdir %s: %s", name, cwd, strerror(e));
    return pv_err_set(err, e, "cannot run %s: %s: %s", name, child_step_name(f->step), strerror(e));
}

/* Read one chunk from fd into out (while below limit; the rest is dropped).
 * Returns 0 when there may be more, 1 at EOF or when a non-blocking fd is
 * empty, or -errno. */
static int spawn_read(int fd, struct buf *out, size_t *kept, size_t limit)
{
    char chunk[16384];
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0) {
        if (errno == EINTR)
            return 0;
        return errno == EAGAIN ? 1 : -errno;
    }
    if (n == 0)
        return 1;
    size_t take = MIN((size_t)n, limit - *kept);
    if (take) {
        buf_add(out, chunk, take);
        *kept += take;
    }
    return 0;
}

/* Read the program's output while it runs, until it exits (0; it stays a
 * zombie) or the timeout (the group killed, -ETIMEDOUT). *out_r is closed
 * when its pipe ends. */
static int wait_exit(const char *name, pid_t pid, pid_t guard, int *out_r, int pidfd,
                     struct buf *out, size_t *kept, size_t max_out, int timeout_ms, int *ret_status,
                     struct pv_err *err)
{
    int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : -1;
    for (;;) {
        /* WNOWAIT: the program stays a zombie, so its pid (the group the
         * guard would kill) is not reused before the guard is gone. */
        siginfo_t si = {0};
        int w = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
        if (w == 0 && si.si_pid == pid)
            return 0;
        if (w < 0 && errno != EINTR) {
            int e = errno;
            spawn_kill(pid, guard, NULL);
            return pv_err_set(err, e, "%s: waitid: %s", name, strerror(e));
        }

        int wait_ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0) {
                spawn_kill(pid, guard, ret_status);
                return pv_err_set(err, ETIMEDOUT, "%s timed out after %d ms (killed)", name,
                                  timeout_ms);
            }
            wait_ms = (int)MIN(left, (int64_t)INT32_MAX);
        }
        if (pidfd < 0 && (wait_ms < 0 || wait_ms > SPAWN_POLL_MS))
            wait_ms = SPAWN_POLL_MS;

        struct pollfd pfd[2];
        nfds_t nfds = 0;
        if (*out_r >= 0)
            pfd[nfds++] = (struct pollfd){.fd = *out_r, .events = POLLIN};
        if (pidfd >= 0)
            pfd[nfds++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        if (poll(pfd, nfds, wait_ms) < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            spawn_kill(pid, guard, NULL);
            return pv_err_set(err, e, "%s: poll: %s", name, strerror(e));
        }
        if (*out_r >= 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR)) &&
            spawn_read(*out_r, out, kept, max_out) != 0)
            close(steal_fd(out_r));
    }
}

int spawn_run(const char *const argv[], const char *cwd, struct buf *out, size_t max_out,
              int timeout_ms, int *ret_status, struct pv_err *err)
{
    if (!argv || !argv[0] || !argv[0][0])
        return pv_err_set(err, EINVAL, "spawn: empty argv");
    const char *name = argv[0];

    _cleanup_close_ int null_fd = -1, out_r = -1, out_w = -1, rep_r = -1, rep_w = -1;
    _cleanup_close_ int life_r = -1, life_w = -1, pidfd = -1;
    int p[2], r;

    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0)
        return pv_err_set(err, errno, "cannot run %s: open /dev/null: %s", name, strerror(errno));
    if (out) {
        if (pipe2(p, O_CLOEXEC) < 0)
            return pv_err_set(err, errno, "cannot run %s: pipe: %s", name, strerror(errno));
        out_r = p[0];
        out_w = p[1];
    }
    if (pipe2(p, O_CLOEXEC) < 0)
        return pv_err_set(err, errno, "cannot run %s: pipe: %s", name, strerror(errno));
    rep_r = p[0];
    rep_w = p[1];
    if (pipe2(p, O_CLOEXEC) < 0)
        return pv_err_set(err, errno, "cannot run %s: pipe: %s", name, strerror(errno));
    life_r = p[0];
    life_w = p[1];

    pid_t parent = getpid();
    pid_t pid = child_fork(NULL);
    if (pid < 0)
        return pv_err_set(err, errno, "cannot run %s: fork: %s", name, strerror(errno));
    if (pid == 0)
        spawn_child(argv, cwd, null_fd, out ? out_w : null_fd, rep_w, parent);
    /* Here too, so the group exists before the guard joins it. */
    (void)setpgid(pid, pid);
    close(steal_fd(&rep_w));
    if (out_w >= 0)
        close(steal_fd(&out_w));

    /* Forked after the parent's copies of the write ends are closed: the
     * guard holds none of them, so EOF still means what it should. */
    pid_t guard = spawn_guard(pid, life_r, null_fd);
    if (guard < 0) {
        int e = errno;
        spawn_kill(pid, -1, NULL);
        return pv_err_set(err, e, "cannot run %s: fork: %s", name, strerror(e));
    }
    close(steal_fd(&life_r));

    /* EOF means the exec happened (the pipe is CLOEXEC). */
    struct child_report f;
    r = child_wait_exec(rep_r, &f);
    if (r != 0) {
        spawn_kill(pid, guard, NULL);
        if (r < 0)
            return pv_err_set(err, -r, "cannot run %s: %s", name, strerror(-r));
        return spawn_failed(name, cwd, &f, err);
    }

    pidfd = spawn_pidfd(pid);
    size_t kept = 0;
    r = wait_exit(name, pid, guard, &out_r, pidfd, out, &kept, max_out, timeout_ms, ret_status,
                  err);
    if (r < 0)
        return r;

    /* The program has exited: the guard goes first, then the program is
     * reaped. What it left running in its group stays (not waited for,
     * not killed). */
    kill(guard, SIGKILL);
    spawn_reap(guard, NULL);
    int status = 0;
    spawn_reap(pid, &status);

    /* Everything the program wrote is in the pipe. Do not wait for a
     * grandchild that may still hold the write end. */
    if (out_r >= 0 && fcntl(out_r, F_SETFL, O_NONBLOCK) == 0) {
        while (spawn_read(out_r, out, &kept, max_out) == 0)
            ;
    }
    if (ret_status)
        *ret_status = status;
    return 0;
}

void spawn_describe_status(int status, char *buf, size_t len)
{
    if (!buf || !len)
        return;
    if (WIFEXITED(status))
        snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    else if (WIFSTOPPED(status))
        snprintf(buf, len, "stopped by signal %d (%s)", WSTOPSIG(status),
                 strsignal(WSTOPSIG(status)));
    else
        snprintf(buf, len, "unknown wait status 0x%x", (unsigned)status);
}
