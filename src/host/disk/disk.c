/* The disks' server: images and their faults, connections, the thread that
 * answers QEMU's NBD requests, and the host's own sector access
 * (docs/architecture.md#disks). */
#include "disk/disk.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>

#include "disk/nbd.h"

const char *const disk_mode_names[DISK_NMODES] = {"eio_read", "eio_write", "eio_flush", "slow",
                                                  "torn_write"};

/* What a connection may have waiting to go to QEMU (sent or delayed)
 * before the server stops reading its requests: QEMU's client has at most
 * 16 requests in flight, of at most 32 MiB each. */
#define DK_OUT_MAX (64u << 20)
/* Read from a socket at once, at most. */
#define DK_READ_MAX (1u << 20)
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

static struct dk_conn *conn_find(struct dk_state *s, int id)
{
    struct dk_conn *c;
    TAILQ_FOREACH(c, &s->conns, link)
    if (c->id == id)
        return c;
    return NULL;
}

static void wake(struct dk_state *s)
{
    uint64_t one = 1;
    if (write(s->wakefd, &one, sizeof(one)) < 0) {
        /* EAGAIN: a wake-up is pending already */
    }
}

/* ---- faults ---- */

/* Whether mode's fault applies to the byte range [off, off + len); a FLUSH
 * (len 0) meets every active mode. */
static bool applies(const struct dk_disk *d, enum disk_mode mode, uint64_t off, uint64_t len)
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
static size_t torn_len(uint64_t off, size_t len)
{
    uint64_t first = off / DISK_SECTOR, end = (off + len + DISK_SECTOR - 1) / DISK_SECTOR;
    uint64_t keep_end = (first + (end - first) / 2) * DISK_SECTOR;
    return keep_end <= off ? 0 : (size_t)MIN(keep_end - off, (uint64_t)len);
}

/* ---- image I/O ---- */

static int pread_all(int fd, void *p, size_t len, uint64_t off)
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

static int pwrite_all(int fd, const void *p, size_t len, uint64_t off)
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
static int zero_range(int fd, uint64_t off, uint64_t len, bool may_punch)
{
    if (may_punch &&
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    if (fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    static const unsigned char zeroes[65536];
    for (uint64_t done = 0; done < len;) {
        size_t n = (size_t)MIN(len - done, (uint64_t)sizeof(zeroes));
        int r = pwrite_all(fd, zeroes, n, off + done);
        if (r < 0)
            return r;
        done += n;
    }
    return 0;
}

/* ---- serving a request ---- */

/* Carry out r on c's disk; the reply goes into out (header first: a READ's
 * data is read straight into it). Returns the NBD error. */
static uint32_t serve(struct dk_conn *c, const struct nbd_req *r, struct buf *out)
{
    struct dk_disk *d = c->disk;
    int fd = d->fd;
    bool fua = r->flags & NBD_CMD_FLAG_FUA;
    size_t mark = out->len;
    switch (r->type) {
    case NBD_CMD_READ:
        if (applies(d, DISK_EIO_READ, r->offset, r->len))
            return NBD_EIO;
        nbd_reply(out, r->handle, 0, NULL, 0);
        buf_reserve(out, r->len);
        if (pread_all(fd, out->data + out->len, r->len, r->offset) < 0) {
            out->len = mark;
            return NBD_EIO;
        }
        out->len += r->len;
        out->data[out->len] = 0;
        return 0;
    case NBD_CMD_WRITE:
        if (applies(d, DISK_EIO_WRITE, r->offset, r->len))
            return NBD_EIO;
        if (applies(d, DISK_TORN_WRITE, r->offset, r->len)) {
            pwrite_all(fd, r->data, torn_len(r->offset, r->len), r->offset);
            return NBD_EIO;
        }
        if (pwrite_all(fd, r->data, r->len, r->offset) < 0)
            return NBD_EIO;
        break;
    case NBD_CMD_TRIM:
        if (applies(d, DISK_EIO_WRITE, r->offset, r->len))
            return NBD_EIO;
        /* advisory: a file system that cannot punch holes keeps the data */
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)r->offset, (off_t)r->len);
        break;
    case NBD_CMD_WRITE_ZEROES:
        if (applies(d, DISK_EIO_WRITE, r->offset, r->len))
            return NBD_EIO;
        if (zero_range(fd, r->offset, r->len, !(r->flags & NBD_CMD_FLAG_NO_HOLE)) < 0)
            return NBD_EIO;
        break;
    case NBD_CMD_FLUSH:
        if (applies(d, DISK_EIO_FLUSH, 0, 0) || fdatasync(fd) < 0)
            return NBD_EIO;
        return 0;
    default: return NBD_EINVAL;
    }
    /* a write that must be on stable storage before its reply */
    if (fua && (applies(d, DISK_EIO_FLUSH, 0, 0) || fdatasync(fd) < 0))
        return NBD_EIO;
    return 0;
}

static void delay_add(struct dk_conn *c, const struct buf *reply, int64_t release_ns)
{
    struct dk_delayed *x = xmalloc(sizeof(*x) + reply->len);
    x->release_ns = release_ns;
    x->len = reply->len;
    memcpy(x->data, reply->data, reply->len);
    c->delayed_bytes += x->len;
    struct dk_delayed *at;
    TAILQ_FOREACH_REVERSE(at, &c->delayed, dk_delays, link)
    if (at->release_ns <= release_ns)
        break;
    if (at)
        TAILQ_INSERT_AFTER(&c->delayed, at, x, link);
    else
        TAILQ_INSERT_HEAD(&c->delayed, x, link);
}

static void answer(struct dk_conn *c, const struct nbd_req *r)
{
    struct dk_disk *d = c->disk;
    if (!d) { /* the disk was closed under a QEMU that still has it */
        nbd_reply(&c->nbd.out, r->handle, NBD_EIO, NULL, 0);
        return;
    }
    uint64_t len = r->type == NBD_CMD_FLUSH ? 0 : r->len;
    bool slow = applies(d, DISK_SLOW, r->offset, len);
    struct buf tmp = BUF_INIT;
    struct buf *out = slow ? &tmp : &c->nbd.out;
    size_t mark = out->len;
    uint32_t e = serve(c, r, out);
    if (e) {
        out->len = mark;
        nbd_reply(out, r->handle, e, NULL, 0);
    } else if (r->type != NBD_CMD_READ) {
        nbd_reply(out, r->handle, 0, NULL, 0);
    }
    if (slow) {
        delay_add(c, &tmp, now_ns() + (int64_t)d->faults[DISK_SLOW].ms * 1000000);
        buf_release(&tmp);
    }
}

/* ---- connections ---- */

static void conn_watch(struct dk_state *s, struct dk_conn *c, uint32_t events)
{
    if (c->events == events)
        return;
    struct epoll_event ev = {.events = events, .data.u64 = DK_EV(DK_EV_CONN, c->id)};
    epoll_ctl(s->epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

static void conn_free(struct dk_state *s, struct dk_conn *c)
{
    if (s->epfd >= 0)
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    nbd_release(&c->nbd);
    struct dk_delayed *x;
    while ((x = TAILQ_FIRST(&c->delayed))) {
        TAILQ_REMOVE(&c->delayed, x, link);
        free(x);
    }
    TAILQ_REMOVE(&s->conns, c, link);
    free(c);
}

static size_t out_pending(const struct dk_conn *c)
{
    return c->nbd.out.len - c->nbd.out_off + c->delayed_bytes;
}

/* Send what is queued; 0, or -1 when the connection is gone. */
static int conn_flush(struct dk_conn *c)
{
    struct buf *o = &c->nbd.out;
    while (c->nbd.out_off < o->len) {
        ssize_t n = send(c->fd, o->data + c->nbd.out_off, o->len - c->nbd.out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return 0;
        if (n <= 0)
            return -1;
        c->nbd.out_off += (size_t)n;
    }
    if (o->cap > DK_OUT_KEEP)
        buf_release(o);
    o->len = c->nbd.out_off = 0;
    return 0;
}

/* What epoll should watch on c now: its requests unless too much waits to
 * go out, room in its socket while something does. */
static void conn_rewatch(struct dk_state *s, struct dk_conn *c)
{
    uint32_t ev = 0;
    if (out_pending(c) < DK_OUT_MAX && nbd_room(&c->nbd))
        ev |= EPOLLIN;
    if (c->nbd.out_off < c->nbd.out.len)
        ev |= EPOLLOUT;
    conn_watch(s, c, ev);
}

/* Requests from c's socket, answered; -1 when the connection is over. */
static int conn_read(struct dk_conn *c)
{
    size_t room = MIN(nbd_room(&c->nbd), (size_t)DK_READ_MAX);
    if (room) {
        buf_reserve(&c->nbd.in, room);
        ssize_t n = recv(c->fd, c->nbd.in.data + c->nbd.in.len, room, MSG_DONTWAIT);
        if (n == 0)
            return -1;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        if (n > 0)
            c->nbd.in.len += (size_t)n;
    }
    struct nbd_req r;
    int k;
    while ((k = nbd_next(&c->nbd, &r)) > 0)
        answer(c, &r);
    if (k < 0) {
        conn_flush(c); /* the last answers (an abort's ACK) */
        return -1;
    }
    return 0;
}

static void conn_event(struct dk_state *s, int id, uint32_t events)
{
    struct dk_conn *c = conn_find(s, id);
    if (!c)
        return;
    bool over = false;
    if (events & EPOLLIN)
        over = conn_read(c) < 0;
    else if (events & (EPOLLHUP | EPOLLERR))
        over = true;
    if (!over)
        over = conn_flush(c) < 0;
    if (over)
        conn_free(s, c);
    else
        conn_rewatch(s, c);
}

/* Replies whose delay is over go out; the timer is armed for the next. */
static void release_due(struct dk_state *s)
{
    int64_t now = now_ns(), next = 0;
    struct dk_conn *c, *tmp;
    for (c = TAILQ_FIRST(&s->conns); c; c = tmp) {
        tmp = TAILQ_NEXT(c, link);
        struct dk_delayed *x;
        bool moved = false;
        while ((x = TAILQ_FIRST(&c->delayed)) && x->release_ns <= now) {
            TAILQ_REMOVE(&c->delayed, x, link);
            c->delayed_bytes -= x->len;
            buf_add(&c->nbd.out, x->data, x->len);
            free(x);
            moved = true;
        }
        if (x && (!next || x->release_ns < next))
            next = x->release_ns;
        if (moved && conn_flush(c) < 0)
            conn_free(s, c);
        else if (moved)
            conn_rewatch(s, c);
    }
    if (next == s->timer_ns)
        return;
    struct itimerspec its = {0};
    if (next) {
        its.it_value.tv_sec = next / 1000000000LL;
        its.it_value.tv_nsec = next % 1000000000LL;
    }
    timerfd_settime(s->timerfd, TFD_TIMER_ABSTIME, &its, NULL);
    s->timer_ns = next;
}

static void *serve_thread(void *arg)
{
    struct dk_state *s = arg;
    struct epoll_event evs[16];
    for (;;) {
        int n = epoll_wait(s->epfd, evs, ARRAY_SIZE(evs), -1);
        if (n < 0 && errno == EINTR)
            continue;
        pthread_mutex_lock(&s->lock);
        if (n < 0) {
            s->thread_err = errno;
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        for (int i = 0; i < n; i++) {
            uint64_t u = evs[i].data.u64, drain;
            switch ((enum dk_ev)(u >> 32)) {
            case DK_EV_CONN: conn_event(s, (int)(uint32_t)u, evs[i].events); break;
            case DK_EV_TIMER:
                if (read(s->timerfd, &drain, sizeof(drain)) < 0) {
                    /* EAGAIN: re-armed meanwhile */
                }
                s->timer_ns = -1; /* fired: arm it again whatever comes next */
                break;
            case DK_EV_WAKE:
                if (read(s->wakefd, &drain, sizeof(drain)) < 0) {
                    /* EAGAIN: another wake-up took it */
                }
                break;
            }
        }
        release_due(s);
        pthread_mutex_unlock(&s->lock);
    }
}

/* ---- the state ---- */

static void state_close_fds(struct dk_state *s)
{
    int *fds[] = {&s->epfd, &s->timerfd, &s->wakefd};
    for (size_t i = 0; i < ARRAY_SIZE(fds); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}

static int state_open(struct dk_state *s, struct pv_err *err)
{
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->epfd < 0)
        return pv_err_set(err, errno, "the disk server: epoll_create1: %m");
    s->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (s->timerfd < 0)
        return pv_err_set(err, errno, "the disk server: timerfd_create: %m");
    s->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->wakefd < 0)
        return pv_err_set(err, errno, "the disk server: eventfd: %m");
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = DK_EV(DK_EV_TIMER, 0)};
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->timerfd, &ev) < 0)
        return pv_err_set(err, errno, "the disk server: epoll_ctl: %m");
    ev.data.u64 = DK_EV(DK_EV_WAKE, 0);
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &ev) < 0)
        return pv_err_set(err, errno, "the disk server: epoll_ctl: %m");
    return 0;
}

/* The state, made at the first disk; its thread at the first connection.
 * Every signal is blocked in the thread: they are the Lua thread's. */
static int state_get(bool with_thread, struct dk_state **ret, struct pv_err *err)
{
    int r = 0;
    pthread_mutex_lock(&state_lock);
    if (!state) {
        struct dk_state *s = xcalloc(1, sizeof(*s));
        pthread_mutex_init(&s->lock, NULL);
        s->epfd = s->timerfd = s->wakefd = -1;
        TAILQ_INIT(&s->disks);
        TAILQ_INIT(&s->conns);
        if ((r = state_open(s, err)) < 0) {
            state_close_fds(s);
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
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t t;
        int e = pthread_create(&t, NULL, serve_thread, state);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e) {
            r = pv_err_set(err, e, "the disk server: starting its thread: %s", strerror(e));
            goto out;
        }
        pthread_detach(t);
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
    d->readonly = readonly;
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
        close(d->fd);
        free(d);
        wake(s);
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
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
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
    if (d)
        r = fstat(d->fd, &st) < 0 ? -errno : 0;
    if (r == 0)
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

/* What the host's access needs of the disk, looked up under the lock: the
 * fd (only the Lua thread closes it, and it is the caller) and the faults
 * that apply to [off, off + len). */
struct host_view {
    int fd;
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
    int r = !d ? -ENOENT : fstat(d->fd, &st) < 0 ? -errno : 0;
    if (r == 0) {
        *v = (struct host_view){.fd = d->fd, .readonly = d->readonly, .size = (uint64_t)st.st_size};
        for (int m = 0; m < DISK_NMODES; m++)
            if (applies(d, (enum disk_mode)m, off, len))
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
    if (r < 0)
        return pv_err_set(err, -r, "fstat: %s", strerror(-r));
    if (off > v->size || len > v->size - off)
        return pv_err_set(
            err, EINVAL, "bytes %llu..%llu are past the end of the image (%llu bytes)",
            (unsigned long long)off, (unsigned long long)(off + len), (unsigned long long)v->size);
    return 0;
}

int disk_read(int disk, uint64_t off, void *p, size_t len, struct pv_err *err)
{
    struct host_view v;
    int r = host_faults(disk, off, len, &v, err);
    if (r < 0)
        return r;
    if (v.hits & (1u << DISK_EIO_READ))
        return pv_err_set(err, EIO, "EIO (fault_inject)");
    if ((r = pread_all(v.fd, p, len, off)) < 0)
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
        pwrite_all(v.fd, p, torn_len(off, len), off);
        return pv_err_set(err, EIO, "EIO (fault_inject: torn_write)");
    }
    if ((r = pwrite_all(v.fd, p, len, off)) < 0)
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
    close(s->epfd);
    s->epfd = -1;
    struct dk_conn *c;
    while ((c = TAILQ_FIRST(&s->conns)))
        conn_free(s, c);
    struct dk_disk *d;
    while ((d = TAILQ_FIRST(&s->disks))) {
        TAILQ_REMOVE(&s->disks, d, link);
        close(d->fd);
        free(d);
    }
    state_close_fds(s);
    free(s);
}
