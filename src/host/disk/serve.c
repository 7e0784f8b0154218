/* The disk server's thread: requests read from each connection, carried
 * out on the image with the disk's faults, replies sent now or when `slow`
 * lets them go (docs/architecture.md#disks). */
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include "disk/disk_priv.h"

static struct dk_conn *conn_find(struct dk_state *s, int id)
{
    struct dk_conn *c;
    TAILQ_FOREACH(c, &s->conns, link)
    if (c->id == id)
        return c;
    return NULL;
}

/* ---- serving a request ---- */

/* A write of r's first len bytes (a WRITE's, or zeroes for WRITE_ZEROES
 * and TRIM): held on a mediated disk, onto the image otherwise. */
static int land(struct dk_disk *d, const struct nbd_req *r, uint32_t len)
{
    if (d->hold_max)
        return dk_hold(d, r->type, r->flags, r->offset, len, r->data);
    switch (r->type) {
    case NBD_CMD_WRITE: return dk_img_write(d, r->data, len, r->offset);
    case NBD_CMD_TRIM: dk_img_trim(d, r->offset, len); return 0;
    default: return dk_img_zero(d, r->offset, len, !(r->flags & NBD_CMD_FLAG_NO_HOLE));
    }
}

/* What a flush (or a FUA write) makes durable: the held writes of a
 * mediated disk, then the image. */
static int durable(struct dk_disk *d)
{
    if (d->hold_max)
        return dk_commit(d);
    return fdatasync(d->fd) < 0 ? -errno : 0;
}

/* Carry out r on c's disk; the reply goes into out (header first: a READ's
 * data is read straight into it). Returns the NBD error. */
static uint32_t serve(struct dk_conn *c, const struct nbd_req *r, struct buf *out)
{
    struct dk_disk *d = c->disk;
    bool fua = r->flags & NBD_CMD_FLAG_FUA;
    size_t mark = out->len;
    switch (r->type) {
    case NBD_CMD_READ:
        if (dk_applies(d, DISK_EIO_READ, r->offset, r->len))
            return NBD_EIO;
        nbd_reply(out, r->handle, 0, NULL, 0);
        buf_reserve(out, r->len);
        unsigned char *p = (unsigned char *)out->data + out->len;
        if (dk_img_read(d, p, r->len, r->offset) < 0) {
            out->len = mark;
            return NBD_EIO;
        }
        dk_overlay(d, r->offset, r->len, p);
        out->len += r->len;
        out->data[out->len] = 0;
        return 0;
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
        if (dk_applies(d, DISK_EIO_WRITE, r->offset, r->len))
            return NBD_EIO;
        if (r->type == NBD_CMD_WRITE && dk_applies(d, DISK_TORN_WRITE, r->offset, r->len)) {
            size_t n = dk_torn_len(r->offset, r->len);
            if (n)
                land(d, r, (uint32_t)n);
            return NBD_EIO;
        }
        if (land(d, r, r->len) < 0)
            return NBD_EIO;
        break;
    case NBD_CMD_FLUSH:
        if (dk_applies(d, DISK_EIO_FLUSH, 0, 0) || durable(d) < 0)
            return NBD_EIO;
        return 0;
    default: return NBD_EINVAL;
    }
    /* a write that must be on stable storage before its reply */
    if (fua && (dk_applies(d, DISK_EIO_FLUSH, 0, 0) || durable(d) < 0))
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
    bool slow = dk_applies(d, DISK_SLOW, r->offset, len);
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
    epoll_ctl(s->loop.epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = events;
}

void dk_conn_free(struct dk_state *s, struct dk_conn *c)
{
    if (s->loop.epfd >= 0)
        epoll_ctl(s->loop.epfd, EPOLL_CTL_DEL, c->fd, NULL);
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
    /* The rest of a write, and no more: the buffer then ends where a
     * request does and is emptied, where the start of the next request
     * would have been moved to its front, a memmove of up to 1 MiB per
     * 1 MiB written (27 % of the disk thread's samples in perf, writing). */
    size_t want = nbd_want(&c->nbd);
    if (want)
        room = MIN(room, want);
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
        dk_conn_free(s, c);
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
            dk_conn_free(s, c);
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
    timerfd_settime(s->loop.timerfd, TFD_TIMER_ABSTIME, &its, NULL);
    s->timer_ns = next;
}

void *dk_thread(void *arg)
{
    struct dk_state *s = arg;
    struct epoll_event evs[16];
    for (;;) {
        int n = epoll_wait(s->loop.epfd, evs, ARRAY_SIZE(evs), -1);
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
                if (read(s->loop.timerfd, &drain, sizeof(drain)) < 0) {
                    /* EAGAIN: re-armed meanwhile */
                }
                s->timer_ns = -1; /* fired: arm it again whatever comes next */
                break;
            case DK_EV_WAKE:
                if (read(s->loop.wakefd, &drain, sizeof(drain)) < 0) {
                    /* EAGAIN: another wake-up took it */
                }
                break;
            }
        }
        release_due(s);
        pthread_mutex_unlock(&s->lock);
    }
}
