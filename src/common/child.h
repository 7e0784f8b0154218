/* The one child setup for fork/exec, shared by the host (spawn.c, qemu.c,
 * fixture.c) and the agent (proc.c, worker.c): this file is linked into
 * both binaries. The rules, for every child (docs/architecture.md,
 * "Processes"):
 *
 * - child_fork() blocks every signal across fork(), so that no handler of
 *   the parent (runner.c's, which kills the parent's VMs) runs in the child
 *   before its dispositions are reset.
 * - From fork to exec, async-signal-safe calls only: the parent may have
 *   threads (the agent's syscall pool, provium's compression thread). No
 *   malloc, no stdio, no string formatting; the steps below are syscalls.
 * - PR_SET_PDEATHSIG(SIGKILL), then the getppid() check: the parent may
 *   have died before the prctl() took effect.
 * - Every signal disposition back to SIG_DFL, then an empty mask (ignored
 *   signals and the mask survive exec).
 * - Its own process group, or its own session: a timeout, a cancel or a
 *   kill-all signals the group (kill(-pid)) and so reaches what the program
 *   started too.
 * - stdin, stdout and stderr from the fds given; every other descriptor
 *   close-on-exec, even one the parent holds without FD_CLOEXEC.
 * - A failure before exec is written to the parent as a struct
 *   child_report (a step and errno) on a CLOEXEC pipe, whose EOF means the
 *   exec happened. The parent formats the message. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

enum {
    CHILD_PGRP = 1 << 0,    /* setpgid(0, 0): a process group of its own */
    CHILD_SESSION = 1 << 1, /* setsid(): a session (and group) of its own */
    CHILD_CTTY = 1 << 2,    /* with CHILD_SESSION: stdin (a terminal) its controlling tty */
};

/* Where a child failed. 0 is no failure. */
enum child_step {
    CHILD_PDEATHSIG = 1,
    CHILD_SIGNALS,
    CHILD_PGID,
    CHILD_SETSID,
    CHILD_CHDIR,
    CHILD_STDIO,
    CHILD_TIOCSCTTY,
    CHILD_EXEC,
    /* a worker's credentials (src/agent/worker.c), set before the rest */
    CHILD_SETGROUPS,
    CHILD_SETRESGID,
    CHILD_KEEPCAPS,
    CHILD_CAPBSET_DROP,
    CHILD_SETRESUID,
    CHILD_CAPSET,
    CHILD_NO_NEW_PRIVS,
};

struct child_report {
    int32_t step;
    int32_t errnum;
};

struct child_opts {
    pid_t parent;    /* getpid() before the fork, for the getppid() check */
    unsigned flags;  /* CHILD_PGRP or CHILD_SESSION (a session is a group too) */
    const char *cwd; /* NULL or "": the parent's */
    int stdio[3];    /* dup2'ed onto 0, 1, 2 (without FD_CLOEXEC); -1: left as is */
    int report_fd;   /* the report pipe's write end; moved above 2 if it was below */
};

/* fork() with every signal blocked across it. In the parent the mask is
 * restored; the child starts with every signal blocked, until
 * child_setup() (or the caller) sets its own. *ret_old (may be NULL) gets
 * the mask from before. Returns as fork() does. */
pid_t child_fork(sigset_t *ret_old);

/* In the child: PR_SET_PDEATHSIG(SIGKILL), and _exit(127) at once when the
 * parent is already gone. Returns 0, or -1 with errno. */
int child_pdeathsig(pid_t parent);

/* In the child, in this order: child_pdeathsig(), signals reset, process
 * group or session, chdir, stdio, the controlling terminal, every fd above 2
 * close-on-exec. Returns 0,
 * or the step that failed with errno set (then call child_fail()). */
int child_setup(struct child_opts *o);

/* In the child: dup2() stdio[i] onto i (-1: leave it), first copying any
 * source, and *report_fd (may be NULL), that sits below 3 to a number above
 * 2, where no other dup2() overwrites it. Returns 0, or -1 with errno. */
int child_stdio(const int stdio[3], int *report_fd);

/* In the child: mark (cloexec) or close every descriptor from first up.
 * close_range() where the kernel has it, else a walk up to RLIMIT_NOFILE. */
void child_close_from(int first, bool cloexec);

/* In the child: write {step, errno} to report_fd and _exit(127). */
__attribute__((noreturn)) void child_fail(int report_fd, int step);

/* In the parent, once it has closed its copy of the write end: wait for
 * the child's exec. Returns 0 when it happened (EOF), 1 with *ret filled
 * when the child failed (it then exits 127: reap it), or -errno. */
int child_wait_exec(int report_rd, struct child_report *ret);

/* "chdir", "setresuid", "exec": the name of a step, for messages. */
const char *child_step_name(int step);
