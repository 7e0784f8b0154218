/* What the files of the disk server share (disk.c, serve.c) and nothing
 * else includes: the state behind the handles of disk.h. Every field is
 * guarded by dk_state.lock, held by the serving thread while it handles an
 * event and by every disk_* call (docs/architecture.md#disks). */
#pragma once

#include <pthread.h>
#include <sys/queue.h>

#include "disk/disk.h"
#include "disk/nbd.h"

/* What a connection may have waiting to go to QEMU (sent or delayed)
 * before the server stops reading its requests: QEMU's client has at most
 * 16 requests in flight, of at most 32 MiB each. */
#define DK_OUT_MAX (64u << 20)
/* Read from a socket at once, at most. */
#define DK_READ_MAX (1u << 20)
/* Each socket's send buffer (disk_connect says why). */
#define DK_SOCKBUF (2 << 20)
/* An emptied output buffer larger than this is given back. */
#define DK_OUT_KEEP (4u << 20)

enum dk_ev { DK_EV_CONN = 1, DK_EV_TIMER, DK_EV_WAKE };
#define DK_EV(kind, id) (((uint64_t)(kind) << 32) | (uint32_t)(id))

/* A reply held back by `slow`, its bytes encoded. */
struct dk_delayed {
    TAILQ_ENTRY(dk_delayed) link;
    int64_t release_ns;
    size_t len;
    unsigned char data[];
};
TAILQ_HEAD(dk_delays, dk_delayed);

struct dk_disk {
    int id;
    int fd;
    bool readonly;
    unsigned modes; /* 1 << enum disk_mode */
    struct disk_fault faults[DISK_NMODES];
    TAILQ_ENTRY(dk_disk) link;
};

struct dk_conn {
    int id;
    struct dk_disk *disk; /* NULL once the disk is closed */
    int fd;               /* the server's end, O_NONBLOCK */
    struct nbd_conn nbd;
    struct dk_delays delayed; /* by release time */
    size_t delayed_bytes;
    uint32_t events; /* what epoll watches */
    TAILQ_ENTRY(dk_conn) link;
};

struct dk_state {
    pthread_mutex_t lock;
    int epfd, timerfd, wakefd;
    int64_t timer_ns; /* what timerfd is armed at; 0: disarmed, -1: unknown */
    bool started;     /* its thread */
    int thread_err;   /* the thread stopped on this errno */
    TAILQ_HEAD(, dk_disk) disks;
    TAILQ_HEAD(, dk_conn) conns;
};

/* disk.c */
/* Whether mode's fault applies to the byte range [off, off + len); a FLUSH
 * (len 0) meets every active mode. */
bool dk_applies(const struct dk_disk *d, enum disk_mode mode, uint64_t off, uint64_t len);
/* A torn write: how many of its bytes land (the first half of its sectors). */
size_t dk_torn_len(uint64_t off, size_t len);
int dk_pread_all(int fd, void *p, size_t len, uint64_t off);
int dk_pwrite_all(int fd, const void *p, size_t len, uint64_t off);
/* Zeroes over [off, off + len): a hole when allowed, else allocated zeroes. */
int dk_zero_range(int fd, uint64_t off, uint64_t len, bool may_punch);

/* serve.c */
/* The serving thread: epoll over the connections, the timer, the wake-up. */
void *dk_thread(void *arg);
/* Called locked: out of epoll, closed, freed. */
void dk_conn_free(struct dk_state *s, struct dk_conn *c);
