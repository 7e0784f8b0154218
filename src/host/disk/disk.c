/* The disks' server: its state and handles, images and their faults, the
 * thread's start, connections made, the host's own sector access, and
 * forgetting it all in a forked child (docs/architecture.md#disks). The
 * thread itself is serve.c's. */
#include "disk/disk_priv.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>

const char *const disk_mode_names[DISK_NMODES] = {"eio_read", "eio_write", "eio_flush", "slow",
                                                  "torn_write"};

static struct dk_state *state;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static bool atfork_done;
static int next_handle = 1;

static void atfork_prepare(void)
{
    if (state)
        pthread_mutex_lock(&state->lock);
}
static void atfork_parent(void)
{
    if (state)
        pthread_mutex_unlock(&state->lock);
}

static struct dk_state *lock_state(void)
{
    struct dk_state *s = state;
    if (s)
        pthread_mutex_lock(&s->lock);
    return s;
}

static void unlock_state(struct dk_state *s)
{
    pthread_mutex_unlock(&s->lock);
}

static struct dk_disk *disk_find(struct dk_state *s, int id)
{
    struct dk_disk *d;
    TAILQ_FOREACH(d, &s->disks, link)
    if (d->id == id)
        return d;
    return NULL;
}

/* ---- faults ---- */

/* Whether mode's fault applies to the byte range [off, off + len); a FLUSH
 * (len 0) meets every active mode. */
bool dk_applies(const struct dk_disk *d, enum disk_mode mode, uint64_t off, uint64_t len)
{
    if (!(d->modes & (1u << mode)))
        return false;
    const struct disk_fault *f = &d->faults[mode];
    if (!f->count || !len)
        return true;
    uint64_t first = off / DISK_SECTOR, last = (off + len - 1) / DISK_SECTOR;
    return last >= f->first && (first <= f->first || first - f->first < f->count);
}

/* A torn write: how many of its bytes land, the first half of its sectors
 * (a one-sector write lands not at all, as a sector is atomic). */
size_t dk_torn_len(uint64_t off, size_t len)
{
    uint64_t first = off / DISK_SECTOR, end = (off + len + DISK_SECTOR - 1) / DISK_SECTOR;
    uint64_t keep_end = (first + (end - first) / 2) * DISK_SECTOR;
    return keep_end <= off ? 0 : (size_t)MIN(keep_end - off, (uint64_t)len);
}

/* ---- image I/O ---- */

int dk_pread_all(int fd, void *p, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, (char *)p + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) { /* the image shrank under us: zeroes, as past its end */
            memset((char *)p + done, 0, len - done);
            break;
        }
        done += (size_t)n;
    }
    return 0;
}

int dk_pwrite_all(int fd, const void *p, size_t len, uint64_t off)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, (const char *)p + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        done += (size_t)n;
    }
    return 0;
}

/* Zeroes over [off, off + len): a hole when allowed, else allocated zeroes. */
int dk_zero_range(int fd, uint64_t off, uint64_t len, bool may_punch)
{
    if (may_punch &&
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    static const unsigned char zeroes[65536];
    for (uint64_t done = 0; done < len;) {
        size_t n = (size_t)MIN(len - done, (uint64_t)sizeof(zeroes));
        int r = dk_pwrite_all(fd, zeroes, n, off + done);
        if (r < 0)
            return r;
        done += n;
    }
    return 0;
}

/* ---- the state ---- */

/* The state, made at the first disk; its thread at the first connection.
 * Every signal is blocked in the thread: they are the Lua thread's. */
static int state_get(bool with_thread, struct dk_state **ret, struct pv_err *err)
{
    int r = 0;
    pthread_mutex_lock(&state_lock);
    if (!state) {
        struct dk_state *s = xcalloc(1, sizeof(*s));
        pthread_mutex_init(&s->lock, NULL);
        TAILQ_INIT(&s->disks);
        TAILQ_INIT(&s->conns);
        if ((r = evloop_open(&s->loop, "the disk server", DK_EV(DK_EV_TIMER, 0),
                             DK_EV(DK_EV_WAKE, 0), err)) < 0) {
            free(s);
            goto out;
        }
        if (!atfork_done)
            pthread_atfork(atfork_prepare, atfork_parent, atfork_parent);
        atfork_done = true;
        s->timer_ns = -1;
        state = s;
    }
    if (with_thread && !state->started) {
        if ((r = evloop_thread(dk_thread, state, "the disk server", err)) < 0)
            goto out;
        state->started = true;
    }
    *ret = state;
out:
    pthread_mutex_unlock(&state_lock);
    return r;
}

/* ---- the calls ---- */

static int open_image(const char *path, uint64_t size, bool readonly, struct pv_err *err)
{
    int fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd >= 0 || errno != ENOENT) {
        if (fd < 0)
            return pv_err_set(err, errno, "disk image %s: %s", path, strerror(errno));
        struct stat st;
        if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
            close(fd);
            return pv_err_set(err, EINVAL, "disk image %s: not a regular file", path);
        }
        return fd;
    }
    fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return pv_err_set(err, errno, "disk image %s: creating it: %s", path, strerror(errno));
    if (ftruncate(fd, (off_t)size) < 0) {
        int e = errno;
        close(fd);
        unlink(path);
        return pv_err_set(err, e, "disk image %s: sizing it to %llu bytes: %s", path,
                          (unsigned long long)size, strerror(e));
    }
    if (readonly) {
        close(fd);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return pv_err_set(err, errno, "disk image %s: %s", path, strerror(errno));
    }
    return fd;
}

static int scratch_image(const char *dir, uint64_t size, struct pv_err *err)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) { /* a file system without O_TMPFILE: a name, at once unlinked */
        _cleanup_free_ char *tmpl = xasprintf("%s/disk-XXXXXX", dir);
        fd = mkostemp(tmpl, O_CLOEXEC);
        if (fd >= 0)
            unlink(tmpl);
    }
    if (fd < 0)
        return pv_err_set(err, errno, "a scratch disk image in %s: %s", dir, strerror(errno));
    if (ftruncate(fd, (off_t)size) < 0) {
        int e = errno;
        close(fd);
        return pv_err_set(err, e, "a scratch disk image of %llu bytes in %s: %s",
                          (unsigned long long)size, dir, strerror(e));
    }
    return fd;
}

/* Called locked, d out of the list: its memory and files. */
static void free_disk(struct dk_disk *d)
{
    dk_drop_held(d);
    dk_chunks_release(d);
    close(d->fd);
    if (d->base_fd >= 0)
        close(d->base_fd);
    free(d->written);
    free(d);
}

static int add_disk(int fd, bool readonly, struct pv_err *err)
{
    struct dk_state *s;
    int r = state_get(false, &s, err);
    if (r < 0) {
        close(fd);
        return r;
    }
    struct dk_disk *d = xcalloc(1, sizeof(*d));
    d->fd = fd;
    d->base_fd = -1;
    d->readonly = readonly;
    TAILQ_INIT(&d->held);
    pthread_mutex_lock(&s->lock);
    d->id = next_handle++;
    TAILQ_INSERT_TAIL(&s->disks, d, link);
    unlock_state(s);
    return d->id;
}

int disk_open(const char *path, uint64_t size, bool readonly, struct pv_err *err)
{
    if (size % DISK_SECTOR)
        return pv_err_set(err, EINVAL, "disk size %llu is not a multiple of %u bytes",
                          (unsigned long long)size, DISK_SECTOR);
    int fd = open_image(path, size, readonly, err);
    return fd < 0 ? fd : add_disk(fd, readonly, err);
}

int disk_open_scratch(const char *dir, uint64_t size, struct pv_err *err)
{
    if (size % DISK_SECTOR)
        return pv_err_set(err, EINVAL, "disk size %llu is not a multiple of %u bytes",
                          (unsigned long long)size, DISK_SECTOR);
    int fd = scratch_image(dir, size, err);
    return fd < 0 ? fd : add_disk(fd, false, err);
}

int disk_open_plain(const char *path, const char *dir, const char *format, uint64_t size,
                    bool readonly, struct pv_err *err)
{
    bool qcow2 = !strcmp(format, "qcow2");
    if (!qcow2 && strcmp(format, "raw"))
        return pv_err_set(err, EINVAL, "disk image %s: format must be raw or qcow2, got %s", path,
                          format);
    if (!path && qcow2)
        return pv_err_set(err, EINVAL, "a qcow2 disk needs an image");
    if (size % DISK_SECTOR)
        return pv_err_set(err, EINVAL, "disk size %llu is not a multiple of %u bytes",
                          (unsigned long long)size, DISK_SECTOR);
    /* as a raw image: one that does not exist is made, at size */
    int r =
        qcow2 && access(path, F_OK) < 0 && errno == ENOENT ? dk_qcow2_create(path, size, err) : 0;
    if (r < 0)
        return r;
    int h = path ? disk_open(path, size, readonly, err) : disk_open_scratch(dir, size, err);
    if (h < 0)
        return h;
    struct dk_state *s = lock_state();
    disk_find(s, h)->plain = qcow2 ? "qcow2" : "raw";
    unlock_state(s);
    return h;
}

int disk_plain(int disk, char *buf, size_t n, const char **ret_format)
{
    struct dk_state *s = lock_state();
    if (!s)
        return -ENOENT;
    struct dk_disk *d = disk_find(s, disk);
    int r = !d ? -ENOENT : d->plain ? 1 : 0;
    if (r == 1) {
        snprintf(buf, n, "/proc/%d/fd/%d", (int)getpid(), d->fd);
        *ret_format = d->plain;
    }
    unlock_state(s);
    return r;
}

int disk_open_layered(const char *base, const char *dir, bool readonly, struct pv_err *err)
{
    int bfd = open(base, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (bfd < 0 || fstat(bfd, &st) < 0) {
        int e = errno;
        if (bfd >= 0)
            close(bfd);
        return pv_err_set(err, e, "disk image %s: %s", base, strerror(e));
    }
    if (!S_ISREG(st.st_mode) || st.st_size % DISK_SECTOR) {
        close(bfd);
        return pv_err_set(err, EINVAL, "disk image %s: not a regular file of whole sectors", base);
    }
    int h = disk_open_scratch(dir, (uint64_t)st.st_size, err);
    if (h < 0) {
        close(bfd);
        return h;
    }
    struct dk_state *s = lock_state();
    struct dk_disk *d = disk_find(s, h);
    uint64_t sectors = (uint64_t)st.st_size / DISK_SECTOR;
    d->base_fd = bfd;
    d->written = xcalloc(sectors / 64 + 1, sizeof(uint64_t));
    unlock_state(s);
    return h;
}

int disk_open_overlay(const char *base, const char *dir, bool readonly, struct pv_err *err)
{
    int fd = dk_qcow2_overlay(base, dir, err);
    int h = fd < 0 ? fd : add_disk(fd, readonly, err);
    if (h < 0)
        return h;
    struct dk_state *s = lock_state();
    disk_find(s, h)->plain = "qcow2";
    disk_find(s, h)->overlay = true;
    unlock_state(s);
    return h;
}

int disk_freeze(int disk, const char *path, struct disk_frozen *ret, struct pv_err *err)
{
    struct dk_state *s = lock_state();
    struct dk_disk *d = s ? disk_find(s, disk) : NULL;
    if (!d) {
        if (s)
            unlock_state(s);
        return pv_err_set(err, ENOENT, "disk %d is closed", disk);
    }
    struct stat st;
    bool qcow2 = d->plain && !strcmp(d->plain, "qcow2");
    /* a restore's overlay is flattened with its frozen base by qemu-img;
     * an image the user gave is copied, if it holds the whole disk */
    bool flatten = qcow2 && d->overlay;
    int r = qcow2 && !flatten ? dk_qcow2_alone(d->fd) : 0;
    if (r == 0 && fstat(d->fd, &st) < 0)
        r = -errno;
    int out = r < 0 ? -1 : open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (r == 0 && out < 0)
        r = -errno;
    /* under the lock: the server waits, and nothing changes the disk meanwhile */
    if (r == 0 && !flatten)
        r = dk_freeze(d, out, (uint64_t)st.st_size);
    *ret =
        (struct disk_frozen){.readonly = d->readonly, .mediated = d->hold_max != 0, .qcow2 = qcow2};
    int fd = d->fd; /* a plain disk's: the server never touches it, nor closes it meanwhile */
    unlock_state(s);
    if (r == 0 && flatten && dk_qcow2_flatten(fd, path, err) < 0)
        r = -EPIPE; /* err says it */
    if (r == 0 && fstat(out, &st) < 0)
        r = -errno;
    if (r == 0) {
        ret->size = (uint64_t)st.st_size;
        ret->mtime_ns = st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
    }
    if (out >= 0)
        close(out);
    if (r < 0 && out >= 0)
        unlink(path);
    if (r == -EPIPE)
        return pv_err_wrap(err, "freezing the disk into %s", path);
    if (r < 0)
        return pv_err_set(err, -r, "freezing the disk into %s: %s", path,
                          r == -EXDEV    ? "its qcow2 image has a backing file or an external "
                                           "data file: only a qcow2 image that holds the whole "
                                           "disk can be snapshotted (docs/disks.md#plain-disks)"
                          : r == -EINVAL ? "its image is no qcow2 image any more"
                                         : strerror(-r));
    return 0;
}

void disk_close(int disk)
{
    struct dk_state *s = lock_state();
    if (!s)
        return;
    struct dk_disk *d = disk_find(s, disk);
    if (d) {
        /* Its connections stay, answering EIO, until their QEMU lets go:
         * QEMU's NBD client would take a connection that ends for a cue to
         * reconnect, to a descriptor number it no longer owns. */
        struct dk_conn *c;
        TAILQ_FOREACH(c, &s->conns, link)
        if (c->disk == d)
            c->disk = NULL;
        TAILQ_REMOVE(&s->disks, d, link);
        free_disk(d); /* unplugged: its volatile cache goes with it */
        evloop_wake(&s->loop);
    }
    unlock_state(s);
}

int disk_connect(int disk, int *ret_qemu_fd, struct pv_err *err)
{
    struct dk_state *s;
    int r = state_get(true, &s, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&s->lock);
    struct dk_disk *d = disk_find(s, disk);
    struct stat st;
    int sv[2] = {-1, -1};
    if (!d) {
        r = pv_err_set(err, ENOENT, "disk %d is closed", disk);
    } else if (d->plain) {
        r = pv_err_set(err, EINVAL, "disk %d is plain: QEMU opens it itself", disk);
    } else if (s->thread_err) {
        r = pv_err_set(err, s->thread_err, "the disk server's thread stopped: %s",
                       strerror(s->thread_err));
    } else if (fstat(d->fd, &st) < 0) {
        r = pv_err_set(err, errno, "disk image: fstat: %m");
    } else if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        r = pv_err_set(err, errno, "a connection for a disk: socketpair: %m");
    }
    if (r < 0)
        goto out;
    fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
    /* Room for a 1 MiB request or reply in flight each way (the kernel caps
     * it at net.core.wmem_max): fewer wake-ups of both ends. Guest reads of
     * 64 MiB by 1 MiB, warm, 1000-1350 MiB/s against 975-1175 without,
     * under TCG here (noisy; docs/disks.md#throughput). */
    int sz = DK_SOCKBUF;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
    struct dk_conn *c = xcalloc(1, sizeof(*c));
    c->id = next_handle++;
    c->disk = d;
    c->fd = sv[0];
    TAILQ_INIT(&c->delayed);
    /* a block device's size is not st_size; images are files here */
    nbd_init(&c->nbd, (uint64_t)st.st_size, d->readonly);
    c->events = EPOLLIN | EPOLLOUT; /* the greeting waits to go */
    struct epoll_event ev = {.events = c->events, .data.u64 = DK_EV(DK_EV_CONN, c->id)};
    if (epoll_ctl(s->loop.epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
        r = pv_err_set(err, errno, "a connection for a disk: epoll_ctl: %m");
        nbd_release(&c->nbd);
        free(c);
        close(sv[0]);
        close(sv[1]);
        goto out;
    }
    TAILQ_INSERT_TAIL(&s->conns, c, link);
    *ret_qemu_fd = sv[1];
    r = c->id;
out:
    unlock_state(s);
    return r;
}

int disk_size(int disk, uint64_t *ret)
{
    struct dk_state *s = lock_state();
    if (!s)
        return -ENOENT;
    struct dk_disk *d = disk_find(s, disk);
    int r = -ENOENT;
    struct stat st;
    if (d && d->plain && !strcmp(d->plain, "qcow2"))
        r = dk_qcow2_size(d->fd, ret); /* the file grows as the guest writes */
    else if (d && (r = fstat(d->fd, &st) < 0 ? -errno : 0) == 0)
        *ret = (uint64_t)st.st_size;
    unlock_state(s);
    return r;
}

int disk_fault_set(int disk, enum disk_mode mode, const struct disk_fault *f)
{
    if ((unsigned)mode >= DISK_NMODES || (f && f->ms > DISK_SLOW_MS_MAX))
        return -EINVAL;
    struct dk_state *s = lock_state();
    if (!s)
        return -ENOENT;
    struct dk_disk *d = disk_find(s, disk);
    if (d && d->plain) {
        unlock_state(s);
        return -EOPNOTSUPP;
    }
    if (d && f) {
        d->faults[mode] = *f;
        d->modes |= 1u << mode;
    } else if (d) {
        d->modes &= ~(1u << mode);
    }
    unlock_state(s);
    return d ? 0 : -ENOENT;
}

int disk_faults_clear(int disk)
{
    struct dk_state *s = lock_state();
    if (!s)
        return -ENOENT;
    struct dk_disk *d = disk_find(s, disk);
    if (d)
        d->modes = 0;
    unlock_state(s);
    return d ? 0 : -ENOENT;
}

int disk_faults(int disk, unsigned *ret_modes)
{
    struct dk_state *s = lock_state();
    if (!s)
        return -ENOENT;
    struct dk_disk *d = disk_find(s, disk);
    if (d)
        *ret_modes = d->modes;
    unlock_state(s);
    return d ? 0 : -ENOENT;
}

/* ---- mediated disks ---- */

int disk_mediate(int disk, uint64_t max_bytes)
{
    struct dk_state *s = lock_state();
    if (!s)
        return -ENOENT;
    struct dk_disk *d = disk_find(s, disk);
    int r = -ENOENT;
    if (d && d->plain && max_bytes) {
        r = -EOPNOTSUPP;
    } else if (d) {
        /* off only once nothing is held: reads would still lay it over */
        r = max_bytes ? 0 : dk_commit(d);
        if (r == 0)
            d->hold_max = max_bytes;
    }
    unlock_state(s);
    return r;
}

int disk_pending(int disk, struct disk_pending *ret)
{
    struct dk_state *s = lock_state();
    if (!s)
        return -ENOENT;
    struct dk_disk *d = disk_find(s, disk);
    if (d)
        *ret = (struct disk_pending){d->held_count, d->held_bytes, d->overflows};
    unlock_state(s);
    return d ? 0 : -ENOENT;
}

int disk_power_cut(int disk, bool reorder, uint64_t seed, struct disk_cut *ret)
{
    struct dk_state *s = lock_state();
    if (!s)
        return -ENOENT;
    struct dk_disk *d = disk_find(s, disk);
    if (!d) {
        unlock_state(s);
        return -ENOENT;
    }
    /* The power is off from here: nothing the dying QEMU still sends
     * reaches the image. */
    struct dk_conn *c;
    TAILQ_FOREACH(c, &s->conns, link)
    if (c->disk == d)
        c->disk = NULL;
    int r = dk_cut(d, reorder, seed, ret);
    unlock_state(s);
    return r;
}

/* What the host's access needs of the disk, looked up under the lock: the
 * faults that apply to [off, off + len). */
struct host_view {
    bool readonly;
    uint64_t size;
    unsigned hits; /* 1 << mode */
    uint32_t slow_ms;
};

static int host_view(int disk, uint64_t off, size_t len, struct host_view *v)
{
    struct dk_state *s = lock_state();
    if (!s)
        return -ENOENT;
    struct dk_disk *d = disk_find(s, disk);
    struct stat st;
    int r = !d                                       ? -ENOENT
            : d->plain && !strcmp(d->plain, "qcow2") ? -EMEDIUMTYPE
            : fstat(d->fd, &st) < 0                  ? -errno
                                                     : 0;
    if (r == 0) {
        *v = (struct host_view){.readonly = d->readonly, .size = (uint64_t)st.st_size};
        for (int m = 0; m < DISK_NMODES; m++)
            if (dk_applies(d, (enum disk_mode)m, off, len))
                v->hits |= 1u << m;
        v->slow_ms = d->faults[DISK_SLOW].ms;
    }
    unlock_state(s);
    return r;
}

/* The faults of the host's access: slow sleeps first, then the disk is
 * looked at again. */
static int host_faults(int disk, uint64_t off, size_t len, struct host_view *v, struct pv_err *err)
{
    int r = host_view(disk, off, len, v);
    if (r == 0 && (v->hits & (1u << DISK_SLOW))) {
        struct timespec ts = {v->slow_ms / 1000, (long)(v->slow_ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
            ;
        r = host_view(disk, off, len, v);
    }
    if (r == -ENOENT)
        return pv_err_set(err, ENOENT, "the disk is closed");
    if (r == -EMEDIUMTYPE)
        return pv_err_set(err, EMEDIUMTYPE,
                          "a qcow2 image: the host's sector access needs a raw one");
    if (r < 0)
        return pv_err_set(err, -r, "fstat: %s", strerror(-r));
    if (off > v->size || len > v->size - off)
        return pv_err_set(
            err, EINVAL, "bytes %llu..%llu are past the end of the image (%llu bytes)",
            (unsigned long long)off, (unsigned long long)(off + len), (unsigned long long)v->size);
    return 0;
}

/* The host's access itself, under the lock: the overlay's bitmap is the
 * server's too. torn: only the first half of a write's sectors land. */
static int host_io(int disk, uint64_t off, void *p, size_t len, bool write)
{
    struct dk_state *s = lock_state();
    if (!s)
        return -ENOENT;
    struct dk_disk *d = disk_find(s, disk);
    int r = !d ? -ENOENT : write ? dk_img_write(d, p, len, off) : dk_img_read(d, p, len, off);
    unlock_state(s);
    return r;
}

int disk_read(int disk, uint64_t off, void *p, size_t len, struct pv_err *err)
{
    struct host_view v;
    int r = host_faults(disk, off, len, &v, err);
    if (r < 0)
        return r;
    if (v.hits & (1u << DISK_EIO_READ))
        return pv_err_set(err, EIO, "EIO (fault_inject)");
    if ((r = host_io(disk, off, p, len, false)) < 0)
        return pv_err_set(err, -r, "%s", strerror(-r));
    return 0;
}

int disk_write(int disk, uint64_t off, const void *p, size_t len, struct pv_err *err)
{
    struct host_view v;
    int r = host_faults(disk, off, len, &v, err);
    if (r < 0)
        return r;
    if (v.readonly)
        return pv_err_set(err, EROFS, "the disk is read-only");
    if (v.hits & (1u << DISK_EIO_WRITE))
        return pv_err_set(err, EIO, "EIO (fault_inject)");
    if (v.hits & (1u << DISK_TORN_WRITE)) {
        host_io(disk, off, (void *)p, dk_torn_len(off, len), true);
        return pv_err_set(err, EIO, "EIO (fault_inject: torn_write)");
    }
    if ((r = host_io(disk, off, (void *)p, len, true)) < 0)
        return pv_err_set(err, -r, "%s", strerror(-r));
    return 0;
}

/* The child's copy of the state is whole (atfork_prepare); its epoll
 * instance is the parent's too, so it is closed before anything that would
 * remove a socket from it. */
void disk_forget(void)
{
    pthread_mutex_init(&state_lock, NULL);
    struct dk_state *s = state;
    state = NULL;
    if (!s)
        return;
    close(s->loop.epfd);
    s->loop.epfd = -1;
    struct dk_conn *c;
    while ((c = TAILQ_FIRST(&s->conns)))
        dk_conn_free(s, c);
    struct dk_disk *d;
    while ((d = TAILQ_FIRST(&s->disks))) {
        TAILQ_REMOVE(&s->disks, d, link);
        free_disk(d);
    }
    evloop_close(&s->loop);
    free(s);
}
