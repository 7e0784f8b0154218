#include "spawn.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* What the child reports through the CLOEXEC pipe when it fails before
 * execvp() replaces it: at which step, and errno. Nothing arrives (EOF) once
 * the exec succeeded. */
enum spawn_stage {
    SPAWN_SETUP,
    SPAWN_CHDIR,
    SPAWN_EXEC,
};

struct spawn_failure {
    int stage;
    int errnum;
};

/* Without pidfd_open() the parent cannot sleep on the child's exit, so it
 * wakes up this often to try waitpid(). */
#define SPAWN_POLL_MS 20

/* Move *fd to a number >= 3 so that the child's dup2() onto 0, 1 and 2
 * cannot clobber one of its sources (possible when the caller runs with a
 * standard descriptor closed). */
static int spawn_fd_high(int *fd)
{
    if (*fd >= 3)
        return 0;
    int nfd = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (nfd < 0)
        return -errno;
    close(*fd);
    *fd = nfd;
    return 0;
}

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

/* Descriptors the process inherited without FD_CLOEXEC (from a shell, a CI
 * runner, a library) must not reach the child either: mark all of them
 * above 2 close-on-exec. report_fd is among them and closes at the exec,
 * as it should. */
static void spawn_cloexec_from(int first)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return;
#endif
    /* Before Linux 5.11: walk the table (getrlimit and fcntl are
     * async-signal-safe, opendir is not). */
    struct rlimit rl;
    int max = 65536;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 65536)
        max = (int)rl.rlim_cur;
    for (int fd = first; fd < max; fd++)
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* Between fork() and exec only async-signal-safe calls: the parent may have
 * threads. */
__attribute__((noreturn)) static void spawn_child(const char *const argv[], const char *cwd,
                                                  int in_fd, int out_fd, int report_fd,
                                                  pid_t parent)
{
    struct spawn_failure f = {SPAWN_SETUP, 0};

    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        goto fail;
    /* The parent may have died before the prctl() took effect. */
    if (getppid() != parent)
        _exit(127);

    /* Ignored signals and the mask survive exec; the child must not inherit
     * the parent's SIG_IGN for SIGPIPE and the like. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        (void)sigaction(s, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
        goto fail;

    if (cwd && chdir(cwd) < 0) {
        f.stage = SPAWN_CHDIR;
        goto fail;
    }
    /* dup2() clears FD_CLOEXEC on the copies; the sources (>= 3) keep it. */
    if (dup2(in_fd, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(out_fd, 2) < 0)
        goto fail;
    spawn_cloexec_from(3);

    execvp(argv[0], (char *const *)argv);
    f.stage = SPAWN_EXEC;
fail:
    f.errnum = errno;
    (void)!write(report_fd, &f, sizeof(f));
    _exit(127);
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

int spawn_run(const char *const argv[], const char *cwd, struct buf *out, size_t max_out,
              int timeout_ms, int *ret_status, struct pv_err *err)
{
    if (!argv || !argv[0] || !argv[0][0])
        return pv_err_set(err, EINVAL, "spawn: empty argv");
    const char *name = argv[0];

    _cleanup_close_ int null_fd = -1, out_r = -1, out_w = -1, rep_r = -1, rep_w = -1;
    _cleanup_close_ int pidfd = -1;
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
    if ((r = spawn_fd_high(&null_fd)) < 0 || (out && (r = spawn_fd_high(&out_w)) < 0) ||
        (r = spawn_fd_high(&rep_w)) < 0)
        return pv_err_set(err, -r, "cannot run %s: fcntl: %s", name, strerror(-r));

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return pv_err_set(err, errno, "cannot run %s: fork: %s", name, strerror(errno));
    if (pid == 0)
        spawn_child(argv, cwd, null_fd, out ? out_w : null_fd, rep_w, parent);

    close(steal_fd(&rep_w));
    if (out_w >= 0)
        close(steal_fd(&out_w));

    /* EOF means the exec happened (the pipe is CLOEXEC). */
    struct spawn_failure f;
    ssize_t n;
    do
        n = read(rep_r, &f, sizeof(f));
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof(f)) {
        spawn_reap(pid, NULL);
        int e = f.errnum > 0 ? f.errnum : EIO;
        if (f.stage == SPAWN_EXEC && e == ENOENT)
            return pv_err_set(err, e, "cannot run %s: not found (is it installed and in PATH?)",
                              name);
        if (f.stage == SPAWN_EXEC)
            return pv_err_set(err, e, "cannot run %s: %s", name, strerror(e));
        if (f.stage == SPAWN_CHDIR)
            return pv_err_set(err, e, "cannot run %s: chdir %s: %s", name, cwd, strerror(e));
        return pv_err_set(err, e, "cannot run %s: child setup: %s", name, strerror(e));
    }

    pidfd = spawn_pidfd(pid);
    int64_t deadline = timeout_ms > 0 ? now_ms() + timeout_ms : -1;
    size_t kept = 0;
    int status = 0;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno != EINTR) {
            int e = errno;
            kill(pid, SIGKILL);
            return pv_err_set(err, e, "%s: waitpid: %s", name, strerror(e));
        }

        int wait_ms = -1;
        if (deadline >= 0) {
            int64_t left = deadline - now_ms();
            if (left <= 0) {
                kill(pid, SIGKILL);
                spawn_reap(pid, ret_status);
                return pv_err_set(err, ETIMEDOUT, "%s timed out after %d ms (killed)", name,
                                  timeout_ms);
            }
            wait_ms = (int)MIN(left, (int64_t)INT32_MAX);
        }
        if (pidfd < 0 && (wait_ms < 0 || wait_ms > SPAWN_POLL_MS))
            wait_ms = SPAWN_POLL_MS;

        struct pollfd pfd[2];
        nfds_t nfds = 0;
        if (out_r >= 0)
            pfd[nfds++] = (struct pollfd){.fd = out_r, .events = POLLIN};
        if (pidfd >= 0)
            pfd[nfds++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        if (poll(pfd, nfds, wait_ms) < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            kill(pid, SIGKILL);
            spawn_reap(pid, NULL);
            return pv_err_set(err, e, "%s: poll: %s", name, strerror(e));
        }
        if (out_r >= 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            r = spawn_read(out_r, out, &kept, max_out);
            if (r != 0)
                close(steal_fd(&out_r));
        }
    }

    /* The child is gone: everything it wrote is in the pipe. Do not wait for
     * a grandchild that may still hold the write end. */
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
