/* The disks of a file's process (docs/disks.md): each an image file that
 * provium serves to QEMU over NBD, with the faults a test injects.
 *
 * A disk is an image file held open (O_CLOEXEC). QEMU reaches it through
 * a connection: one end of a socketpair(AF_UNIX, SOCK_STREAM) that QEMU
 * inherits or gets by QMP getfd (`-blockdev driver=nbd,server.type=fd`);
 * provium keeps the other end and answers the NBD requests on it (nbd.h).
 * Every guest read, write and flush therefore passes through the code
 * below, which is where faults act: the guest sees them on its next
 * request, and stops seeing them at disk_faults_clear.
 *
 * One thread serves every connection of the process (epoll over their
 * sockets, a timerfd for slowed replies, an eventfd to wake it), like the
 * switch (docs/architecture.md#disks). Disks and connections are small
 * integer handles, never reused while the process lives: a stale handle is
 * -ENOENT, not a use after free. Every function may be called from the
 * Lua thread while the server runs; it waits at most for the request being
 * served. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

#define DISK_SECTOR 512u

enum disk_mode {
    DISK_EIO_READ,
    DISK_EIO_WRITE,
    DISK_EIO_FLUSH,
    DISK_SLOW,
    DISK_TORN_WRITE,
    DISK_NMODES,
};
/* "eio_read", ...: the names the Lua API uses, by enum disk_mode. */
extern const char *const disk_mode_names[DISK_NMODES];

/* A fault: what a mode does to the requests it applies to
 * (docs/disks.md#faults). A request applies when it overlaps sectors
 * [first, first + count); count 0 means the whole disk. FLUSH has no range:
 * a range never spares it. */
struct disk_fault {
    uint64_t first, count; /* sectors */
    uint32_t ms;           /* DISK_SLOW: the delay of each reply */
};
#define DISK_SLOW_MS_DEFAULT 50u
#define DISK_SLOW_MS_MAX 600000u

/* Open the image at path (created sparse at size bytes when it does not
 * exist; an existing one keeps its size); or a scratch image of size bytes
 * in directory dir that no name reaches (O_TMPFILE, or unlinked at once:
 * it goes with the disk). size must be a multiple of DISK_SECTOR. Returns the disk's handle
 * (> 0) or -errno. */
int disk_open(const char *path, uint64_t size, bool readonly, struct pv_err *err);
int disk_open_scratch(const char *dir, uint64_t size, struct pv_err *err);
/* A plain disk (docs/disks.md#plain-disks): the image at path, in format
 * "raw" (created sparse at size when absent, as disk_open; path NULL: a
 * scratch image in dir, as disk_open_scratch) or "qcow2" (which
 * is made by qemu-img when absent), that QEMU opens itself, by the path
 * disk_plain gives: no NBD, no faults, no mediation. The host's
 * disk_read/disk_write work on a raw one. */
int disk_open_plain(const char *path, const char *dir, const char *format, uint64_t size,
                    bool readonly, struct pv_err *err);
/* For a plain disk: 1, with the path QEMU opens it by (/proc/<provium's
 * pid>/fd/<its fd>: the same file, whatever became of its name) in buf and
 * its format in *ret_format. 0 for a disk served over NBD, -ENOENT. */
int disk_plain(int disk, char *buf, size_t n, const char **ret_format);

/* A disk restored from a snapshot (docs/snapshots.md#disks): the frozen
 * file at base, read-only, under a new sparse overlay in directory dir that
 * no name reaches (it goes with the disk). The guest and the host read a
 * sector from the overlay once it was written there, from base before;
 * base never changes. As long as base. */
int disk_open_layered(const char *base, const char *dir, bool readonly, struct pv_err *err);

/* A plain qcow2 disk restored from a snapshot (docs/disks.md#plain-disks):
 * a new qcow2 overlay in directory dir that no name reaches (it goes with
 * the disk), over the frozen qcow2 image at base, which QEMU reads and
 * never writes. */
int disk_open_overlay(const char *base, const char *dir, bool readonly, struct pv_err *err);

/* Freeze the disk as its guest sees it now (its image, or base and
 * overlay, then the writes a mediated disk holds) into a new sparse file
 * at path (0600): what a snapshot keeps of it. A plain disk's image is
 * copied as it is (a reflink where the file system shares blocks), a qcow2
 * one only when it holds the whole disk (no backing or data file: -EXDEV). The server waits
 * meanwhile: call it while the disk's QEMU is stopped. */
struct disk_frozen {
    uint64_t size;
    int64_t mtime_ns; /* the new file's */
    bool readonly, mediated;
    bool qcow2; /* a plain qcow2 disk: the file is its qcow2 image */
};
int disk_freeze(int disk, const char *path, struct disk_frozen *ret, struct pv_err *err);

/* Closes the image. Its connections answer every request with EIO from now
 * on, and end when their QEMU closes them (never before: QEMU's NBD client
 * would reconnect). A stale handle is ignored. */
void disk_close(int disk);

/* A new connection serving the disk: its handle (> 0), and in *ret_qemu_fd
 * the end QEMU gets (O_CLOEXEC; the caller hands it over and closes it).
 * The connection ends when QEMU closes its end (NBD_CMD_DISC, exit), or
 * when the peer breaks the protocol. */
int disk_connect(int disk, int *ret_qemu_fd, struct pv_err *err);

/* The image's size now (fstat), in bytes. */
int disk_size(int disk, uint64_t *ret);

/* Set (replace) or clear one mode's fault; -EINVAL for a mode out of range
 * or ms over DISK_SLOW_MS_MAX. Takes effect from the next request. */
int disk_fault_set(int disk, enum disk_mode mode, const struct disk_fault *f);
int disk_faults_clear(int disk);
/* Bit (1 << mode) set for each active mode. */
int disk_faults(int disk, unsigned *ret_modes);

/* The host's own access to the image, bypassing QEMU, with the same faults
 * as the guest's requests: `slow` sleeps in the caller, then the faults are
 * looked at again (one injected meanwhile still applies), EIO for
 * eio_read/eio_write; a torn write writes the first half of its sectors
 * (docs/disks.md#faults). -EIO with the fault named in err, or the host's
 * error. Offsets and lengths in bytes; the range must be inside the image
 * (-ENOSPC / -EINVAL otherwise). */
int disk_read(int disk, uint64_t off, void *p, size_t len, struct pv_err *err);
int disk_write(int disk, uint64_t off, const void *p, size_t len, struct pv_err *err);

/* Mediated disks (docs/disks.md#mediated-disks-and-power-cuts): the
 * server holds every guest WRITE, WRITE_ZEROES and TRIM in memory, in
 * order, and applies them all to the image (then fdatasync) at the guest's
 * next FLUSH or FUA write. The guest's reads see the held writes; the
 * host's disk_read and disk_write do not (they are the image: what was
 * committed). Past max_bytes held (or DISK_HOLD_MAX_COUNT writes), what is
 * held is committed as if flushed, and counted in overflows.
 * disk_mediate(disk, 0) commits what is held, then turns it off (it stays
 * on, and -errno is returned, when the commit fails). */
#define DISK_HOLD_MAX_DEFAULT (256ull << 20)
#define DISK_HOLD_MAX_COUNT (1u << 18)
int disk_mediate(int disk, uint64_t max_bytes);

struct disk_pending {
    uint64_t count, bytes; /* held writes, and the bytes they cover */
    uint64_t overflows;    /* commits forced by the bound */
};
int disk_pending(int disk, struct disk_pending *ret);

/* Power lost, at once: the disk's connections answer EIO from now on (the
 * VM's QEMU is to be killed next; its next boot makes new ones), and the
 * held writes are dropped, or with reorder, each kept or dropped by a PRNG
 * seeded from seed and the kept ones applied in order (then fdatasync), so
 * that a seed gives the same survivors every time. *ret tells how many
 * were applied and dropped. -ENOENT for a stale handle; -errno of the
 * image when applying failed (the rest are dropped all the same). */
struct disk_cut {
    uint64_t applied, dropped;
};
int disk_power_cut(int disk, bool reorder, uint64_t seed, struct disk_cut *ret);

/* In a child forked without exec (a fixture's build): forget the parent's
 * disks, whose thread does not exist here, close its copies of their fds
 * and free the memory. Call it before any other disk_* function there. */
void disk_forget(void);
