/* Run a child program to completion and capture what it prints. The child
 * is started with execvp() and an argv array (never a shell) through the
 * one child setup (child.h): default signal dispositions and an empty
 * mask, a process group of its own, no descriptor but 0, 1 and 2 (not
 * even one the caller holds without FD_CLOEXEC). Its whole group dies with
 * SIGKILL at the timeout and when the caller dies: a small guard process
 * watches the caller for the group (spawn.c, docs/architecture.md). No
 * logging here: the caller reports failures with context. */
#pragma once

#include "util.h"

/* Run argv[0] (searched in PATH with execvp) with argv (NULL-terminated) in
 * cwd (NULL: inherit). stdin is /dev/null; stdout and stderr both go into
 * out (appended; NULL: discarded), of which at most max_out bytes are kept
 * (the rest is read and dropped so the child never blocks).
 *
 * timeout_ms > 0: the child's process group (the child and whatever it
 * started that stayed in it) is killed with SIGKILL after that long and the
 * call returns -ETIMEDOUT (*ret_status still gets the wait status). When
 * the caller dies before the child exits, the group is killed too.
 *
 * Returns 0 once the child has exited, with *ret_status (may be NULL) set to
 * its wait status: a child that exits non-zero is not an error here. Returns
 * -errno when it could not be started (-ENOENT: no such program, -EACCES,
 * or the errno of chdir(cwd)), with err naming the program. When the child
 * exits, what it left running in its group is neither waited for (nor its
 * output in the pipe) nor killed. */
int spawn_run(const char *const argv[], const char *cwd, struct buf *out, size_t max_out,
              int timeout_ms, int *ret_status, struct pv_err *err);

/* A printable description of a wait status, written into buf (always
 * NUL-terminated): "exited with status 3", "killed by signal 9 (Killed)". */
void spawn_describe_status(int status, char *buf, size_t len);
