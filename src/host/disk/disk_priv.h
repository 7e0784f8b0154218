/* What the files of the disk server share (disk.c, serve.c) and nothing
 * else includes: the state behind the handles of disk.h. Every field is
 * guarded by dk_state.lock, held by the serving thread while it handles an
 * event and by every disk_* call (docs/architecture.md#disks). */
#pragma once

#include "evloop.h"

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

/* A guest write a mediated disk holds until a flush: a WRITE with its
 * bytes, or a WRITE_ZEROES or TRIM (both zeroes when committed). */
struct dk_held {
    TAILQ_ENTRY(dk_held) link;
    uint16_t type; /* enum nbd_cmd */
    bool may_punch;
    bool own_data; /* data is malloc'd (larger than a chunk), else in the disk's chunks */
    uint64_t off;
    uint32_t len;
    unsigned char *data; /* WRITE: len bytes */
};
/* Where held bytes go (mediate.c): chunks of DK_CHUNK bytes in huge pages,
 * filled in order and reused once nothing is held. */
#define DK_CHUNK (8u << 20)
#define DK_CHUNKS_KEPT 8 /* at most this many stay mapped while nothing is held */
TAILQ_HEAD(dk_helds, dk_held);

struct dk_disk {
    int id;
    int fd;            /* the image; over a base, the overlay (layer.c) */
    int base_fd;       /* a restored disk's frozen base, read-only; else -1 */
    uint64_t *written; /* over a base: a bit per sector, set once the overlay has it */
    bool readonly;
    const char *plain; /* QEMU opens the image itself, in this format ("raw", "qcow2"); else NULL */
    bool overlay;      /* plain qcow2: a restore's overlay over a frozen image (qcow2.c) */
    unsigned modes;    /* 1 << enum disk_mode */
    struct disk_fault faults[DISK_NMODES];
    uint64_t hold_max;                    /* mediated when not 0: the most bytes held */
    struct dk_helds held;                 /* in the guest's order */
    unsigned char **chunks;               /* mediate.c: the held bytes' chunks, nchunks mapped */
    size_t nchunks, chunk_at, chunk_used; /* the chunk being filled, and how far */
    uint64_t held_count, held_bytes, overflows;
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
    struct evloop loop;
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

/* layer.c: the disk's view, the image alone or its overlay over the base
 * (docs/snapshots.md#disks). Same results as dk_pread_all and friends. */
int dk_img_read(const struct dk_disk *d, void *p, size_t len, uint64_t off);
int dk_img_write(struct dk_disk *d, const void *p, size_t len, uint64_t off);
int dk_img_zero(struct dk_disk *d, uint64_t off, uint64_t len, bool may_punch);
/* A TRIM: advice, a hole where the file system punches one. */
void dk_img_trim(struct dk_disk *d, uint64_t off, uint64_t len);
/* The disk as the guest sees it (the view, then the held writes), into the
 * new empty file out, size bytes, sparse: only data extents are copied. */
int dk_freeze(struct dk_disk *d, int out, uint64_t size);

/* qcow2.c: qcow2 images by `qemu-img create` (docs/disks.md#plain-disks) */
/* A new qcow2 image at path of size bytes, written into a file beside it
 * that no name reaches (O_TMPFILE; else a hidden temporary name), then
 * linked to path: a failed creation leaves nothing. An image made at path
 * meanwhile by another is kept (0). */
int dk_qcow2_create(const char *path, uint64_t size, struct pv_err *err);
/* A new qcow2 overlay over the qcow2 image base, in directory dir, that no
 * name reaches: its descriptor (O_RDWR | O_CLOEXEC), or -errno. */
int dk_qcow2_overlay(const char *base, const char *dir, struct pv_err *err);
/* The qcow2 image on fd (an overlay of dk_qcow2_overlay) and its backing
 * image, flattened into a new qcow2 image at out (whose file exists). */
int dk_qcow2_flatten(int fd, const char *out, struct pv_err *err);
/* Whether the qcow2 image on fd is the whole disk: 0; -EXDEV when it has
 * a backing file or an external data file, -EINVAL when it is no qcow2. */
int dk_qcow2_alone(int fd);
/* The size of the disk the qcow2 image on fd holds (its header's), not of
 * the file; -EINVAL when it is no qcow2. */
int dk_qcow2_size(int fd, uint64_t *ret);

/* mediate.c (docs/disks.md#mediated-disks-and-power-cuts) */
/* Hold a write of r (WRITE, WRITE_ZEROES, TRIM) of len bytes (data for a
 * WRITE), committing what is held first when the bound would be passed.
 * 0 or -errno (of a forced commit). */
int dk_hold(struct dk_disk *d, uint16_t type, uint16_t flags, uint64_t off, uint32_t len,
            const void *data);
/* Apply every held write to the image in order, then fdatasync. On an
 * error the writes not applied stay held. */
int dk_commit(struct dk_disk *d);
/* Lay the held writes that overlap [off, off + len) over p, the image's
 * bytes there: what the guest reads. */
void dk_overlay(const struct dk_disk *d, uint64_t off, size_t len, unsigned char *p);
/* Apply every held write to the file out (not the disk), keeping them held. */
int dk_apply_held(const struct dk_disk *d, int out);
/* Drop every held write. */
void dk_drop_held(struct dk_disk *d);
/* Unmap the chunks (the disk goes). */
void dk_chunks_release(struct dk_disk *d);
/* A power cut (disk_power_cut): the held writes dropped, or with reorder
 * a seeded random subset of them applied, in order. */
int dk_cut(struct dk_disk *d, bool reorder, uint64_t seed, struct disk_cut *ret);

/* serve.c */
/* The serving thread: epoll over the connections, the timer, the wake-up. */
void *dk_thread(void *arg);
/* Called locked: out of epoll, closed, freed. */
void dk_conn_free(struct dk_state *s, struct dk_conn *c);
