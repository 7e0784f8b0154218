#include "child.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

pid_t child_fork(sigset_t *ret_old)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = fork();
    if (pid != 0) {
        int e = errno;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        errno = e;
    }
    if (ret_old)
        *ret_old = old;
    return pid;
}

int child_pdeathsig(pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        return -1;
    if (getppid() != parent)
        _exit(127);
    return 0;
}

/* Dispositions first: a signal pending while blocked must meet SIG_DFL,
 * not the parent's handler, once the mask is emptied. */
static int reset_signals(void)
{
    /* The raw calls: libc's sigaction and sigprocmask refuse to touch its
     * own internal signals (32 and 33 under glibc), yet a program inherits
     * them as the real-time signals they are; a parent that had them
     * ignored or blocked (seen under make) would pass that on. The
     * kernel's struct: handler, flags, restorer, mask. */
    struct {
        void (*handler)(int);
        unsigned long flags;
        void (*restorer)(void);
        uint64_t mask;
    } dfl = {SIG_DFL, 0, NULL, 0};
    for (int s = 1; s <= 64; s++)
        (void)syscall(SYS_rt_sigaction, s, &dfl, NULL, sizeof(dfl.mask)); /* EINVAL: KILL, STOP */
    uint64_t none = 0;
    return (int)syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof(none));
}

/* A source below 3 would be overwritten by another's dup2() (a parent
 * that runs with a standard descriptor closed gets its pipes there). The
 * copy above 2 is close-on-exec. */
static int lift(int *fd)
{
    if (*fd < 0 || *fd >= 3)
        return 0;
    int n = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
    if (n < 0)
        return -1;
    *fd = n;
    return 0;
}

int child_stdio(const int stdio[3], int *report_fd)
{
    int src[3] = {stdio[0], stdio[1], stdio[2]};
    if (report_fd && lift(report_fd) < 0)
        return -1;
    for (int i = 0; i < 3; i++) {
        int was = src[i];
        if (lift(&src[i]) < 0)
            return -1;
        for (int j = i + 1; j < 3; j++)
            if (src[j] == was)
                src[j] = src[i];
    }
    /* dup2() clears FD_CLOEXEC on the copy; the sources keep it */
    for (int i = 0; i < 3; i++)
        if (src[i] >= 0 && dup2(src[i], i) < 0)
            return -1;
    return 0;
}

void child_close_from(int first, bool cloexec)
{
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, ~0U, cloexec ? CLOSE_RANGE_CLOEXEC : 0) == 0)
        return;
#endif
    /* Before Linux 5.11 (5.9 without the flag): walk the table. getrlimit
     * and fcntl are system calls; opendir(/proc/self/fd) would allocate. */
    struct rlimit rl;
    long max = 1L << 20;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        max = (long)rl.rlim_cur;
    for (long fd = first; fd < max; fd++) {
        if (cloexec)
            (void)fcntl((int)fd, F_SETFD, FD_CLOEXEC);
        else
            (void)close((int)fd);
    }
}

int child_setup(struct child_opts *o)
{
    if (child_pdeathsig(o->parent) < 0)
        return CHILD_PDEATHSIG;
    if (reset_signals() < 0)
        return CHILD_SIGNALS;
    if (o->flags & CHILD_SESSION) {
        if (setsid() < 0)
            return CHILD_SETSID;
    } else if ((o->flags & CHILD_PGRP) && setpgid(0, 0) < 0) {
        return CHILD_PGID;
    }
    if (o->cwd && *o->cwd && chdir(o->cwd) < 0)
        return CHILD_CHDIR;
    if (child_stdio(o->stdio, &o->report_fd) < 0)
        return CHILD_STDIO;
    if ((o->flags & CHILD_CTTY) && ioctl(0, TIOCSCTTY, 0) < 0)
        return CHILD_TIOCSCTTY;
    /* the report pipe among them: it closes at the exec, as it should */
    child_close_from(3, true);
    return 0;
}

void child_fail(int report_fd, int step)
{
    struct child_report r = {step, errno};
    (void)!write(report_fd, &r, sizeof(r));
    _exit(127);
}

int child_wait_exec(int report_rd, struct child_report *ret)
{
    ssize_t n;
    do
        n = read(report_rd, ret, sizeof(*ret));
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        return 0;
    if (n != (ssize_t)sizeof(*ret))
        return -EIO;
    if (ret->errnum <= 0)
        ret->errnum = EIO;
    return 1;
}

const char *child_step_name(int step)
{
    static const char *const names[] = {
        [CHILD_PDEATHSIG] = "prctl(PR_SET_PDEATHSIG)",
        [CHILD_SIGNALS] = "sigprocmask",
        [CHILD_PGID] = "setpgid",
        [CHILD_SETSID] = "setsid",
        [CHILD_CHDIR] = "chdir",
        [CHILD_STDIO] = "dup2",
        [CHILD_TIOCSCTTY] = "ioctl(TIOCSCTTY)",
        [CHILD_EXEC] = "exec",
        [CHILD_SETGROUPS] = "setgroups",
        [CHILD_SETRESGID] = "setresgid",
        [CHILD_KEEPCAPS] = "prctl(PR_SET_KEEPCAPS)",
        [CHILD_CAPBSET_DROP] = "prctl(PR_CAPBSET_DROP)",
        [CHILD_SETRESUID] = "setresuid",
        [CHILD_CAPSET] = "capset",
        [CHILD_NO_NEW_PRIVS] = "prctl(PR_SET_NO_NEW_PRIVS)",
    };
    if (step > 0 && (size_t)step < sizeof(names) / sizeof(names[0]) && names[step])
        return names[step];
    return "child setup";
}
