/* A thread that copies one descriptor to another through zstd: a migration
 * stream from QEMU compressed into a snapshot file, or a snapshot file
 * decompressed into QEMU, without a temporary copy either way. */
#pragma once

#include <pthread.h>

#include "util.h"

struct zpipe {
    pthread_t thread;
    int in, out; /* owned: closed when the copy ends */
    bool compress;
    int64_t deadline_ns; /* the copy gives up then (-ETIMEDOUT): a join never hangs */
    int result;          /* 0, or -errno (-EBADMSG: not a valid zstd stream) */
    char why[128];
    uint64_t bytes_in, bytes_out;
};

/* Start copying in to out (compressing at zstd level 1, or decompressing),
 * until deadline_ns at most. Returns 0, or -errno with both fds closed. */
int zpipe_start(struct zpipe *z, int in, int out, bool compress, int64_t deadline_ns,
                struct pv_err *err);
/* Wait for the copy to end: 0, or -errno with err saying why. */
int zpipe_join(struct zpipe *z, const char *what, struct pv_err *err);
