/* lab:barrier (docs/labs.md): a rendezvous of the files of one run. Each
 * file's process has one end of a SOCK_SEQPACKET socketpair; the runner
 * holds the other, keeps the barriers, and answers each arrival once: when
 * `count` files have arrived, when the run can no longer bring that many
 * (too few files left), or, asked by a file whose wait timed out, with who
 * had arrived. */
#pragma once

#include "util.h"

/* In a file's process: its end of the pair (-1 outside the runner). */
extern int barrier_fd;

/* In a file's process: wait at barrier `name` until count files of the run
 * have arrived (count 1 returns at once), at most timeout seconds. 0, or
 * -errno with err saying why: ETIMEDOUT (naming who arrived), EPIPE (the run
 * cannot complete it, or no runner), EINVAL (a count that differs from the
 * waiting files'). */
int barrier_wait(const char *name, long count, double timeout, struct pv_err *err);

/* In the runner: a packet from the file shown as who, on its end fd. */
void barrier_packet(int fd, const char *who, const char *pkt, size_t len);

/* In the runner: the file on fd ended (its waits end), and left files of
 * the run have not ended yet; barriers that can no longer complete release
 * their waiters with an error. fd -1: only the second part. */
void barrier_file_ended(int fd, size_t left);

/* In the runner: how many files wait at a barrier (they use no CPU, and
 * the files they wait for may not have started). */
size_t barrier_waiting(void);
