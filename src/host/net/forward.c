/* The forwarding thread: epoll over every port, the timer of delayed
 * frames and the wake-up eventfd; reading frames, learning, flooding, the
 * checks of each (source, destination), sending or queueing
 * (docs/architecture.md#the-switch). */
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include "net/switch_priv.h"

/* Frames read from one port per event, so one guest cannot hold the lock
 * (and the other ports) for long. */
#define READ_BATCH 64

static void port_want_out(struct sw_state *s, struct sw_port *p, bool on)
{
    if (p->want_out == on || p->hup)
        return;
    p->want_out = on;
    evloop_set(&s->loop, p->fd, EPOLLIN | (on ? EPOLLOUT : 0), SW_EV(SW_EV_PORT, p->id));
}

/* 0, -EAGAIN when QEMU's socket is full (the frame is the caller's to keep),
 * or another -errno: the frame is lost (QEMU gone), counted. */
static int port_send(struct sw_state *s, struct sw_port *p, const void *data, uint32_t len)
{
    if (send(p->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -EAGAIN;
        p->c.errors++;
        return -errno;
    }
    p->c.rx_packets++;
    p->c.rx_bytes += len;
    sw_capture_frame(s, p, SW_CAP_OUT, data, len);
    return 0;
}

static void port_flush(struct sw_state *s, struct sw_port *p, int64_t now)
{
    struct sw_frame *f;
    while ((f = TAILQ_FIRST(&p->queue)) && f->release_ns <= now) {
        if (port_send(s, p, f->data, f->len) == -EAGAIN) {
            port_want_out(s, p, true);
            return;
        }
        sw_queue_pop(p);
    }
    port_want_out(s, p, false);
}

/* One frame from src to dst: the checks in the order docs/networks.md
 * gives, then sent at once or queued for its release time. */
static void deliver(struct sw_state *s, struct sw_port *src, struct sw_port *dst,
                    const unsigned char *data, uint32_t len, int64_t now)
{
    if ((src->flags | dst->flags) & (SWITCH_DOWN | SWITCH_ISOLATED)) {
        dst->c.dropped++;
        return;
    }
    struct sw_dir *d = sw_dir_get(src, dst);
    if (d->blocked) {
        dst->c.dropped++;
        return;
    }
    /* Before any impairment, so a frame the queue refuses takes neither a
     * loss draw nor bandwidth from its direction. */
    if (sw_queue_full(dst, len)) {
        dst->c.errors++;
        return;
    }
    int64_t release;
    if (!sw_impair_frame(d, len, now, &release)) {
        dst->c.dropped++;
        return;
    }
    if (release <= now && TAILQ_EMPTY(&dst->queue)) {
        if (port_send(s, dst, data, len) != -EAGAIN)
            return;
        sw_queue_add(dst, data, len, now);
        port_want_out(s, dst, true);
        return;
    }
    sw_queue_add(dst, data, len, release);
}

/* A frame the switch read from src: learn its source, then to the port its
 * destination was learned on, or to every other port of the bridge. */
static void forward(struct sw_state *s, struct sw_port *src, const unsigned char *data,
                    uint32_t len, int64_t now)
{
    src->c.tx_packets++;
    src->c.tx_bytes += len;
    if (src->flags & SWITCH_DOWN) {
        src->c.dropped++;
        return;
    }
    sw_capture_frame(s, src, SW_CAP_IN, data, len);
    struct sw_bridge *b = src->br;
    sw_mac_learn(&b->macs, data + 6, src, now);
    if (!(data[0] & 1)) {
        struct sw_port *dst = sw_mac_lookup(&b->macs, data, now);
        if (dst) {
            /* Learned on its own port: the destination has had it. */
            if (dst != src)
                deliver(s, src, dst, data, len, now);
            return;
        }
    }
    struct sw_port *dst;
    for (dst = TAILQ_FIRST(&b->ports); dst; dst = TAILQ_NEXT(dst, link))
        if (dst != src)
            deliver(s, src, dst, data, len, now);
}

static void port_readable(struct sw_state *s, struct sw_port *p, int64_t now)
{
    for (int i = 0; i < READ_BATCH; i++) {
        /* MSG_TRUNC: the datagram's real length, to refuse one too long. */
        ssize_t n = recv(p->fd, s->rxbuf, SW_FRAME_MAX + 1, MSG_DONTWAIT | MSG_TRUNC);
        if (n < 0)
            return;
        if (n < SW_FRAME_MIN || n > SW_FRAME_MAX) {
            p->c.errors++;
            continue;
        }
        forward(s, p, s->rxbuf, (uint32_t)n, now);
        now = now_ns();
    }
}

/* Arm the timer at the earliest frame to release. Ports waiting for
 * EPOLLOUT are left out: their turn comes with it. */
static void timer_update(struct sw_state *s)
{
    int64_t next = 0;
    struct sw_bridge *b;
    struct sw_port *p;
    for (b = TAILQ_FIRST(&s->bridges); b; b = TAILQ_NEXT(b, link))
        for (p = TAILQ_FIRST(&b->ports); p; p = TAILQ_NEXT(p, link)) {
            struct sw_frame *f = TAILQ_FIRST(&p->queue);
            if (f && !p->want_out && (!next || f->release_ns < next))
                next = f->release_ns;
        }
    if (next == s->timer_ns)
        return;
    /* A time already past fires at once; 0 would disarm instead. */
    int64_t at = next ? MAX(next, 1) : 0;
    struct itimerspec its = {.it_value = {at / 1000000000LL, at % 1000000000LL}};
    timerfd_settime(s->loop.timerfd, TFD_TIMER_ABSTIME, &its, NULL);
    s->timer_ns = next;
}

static void port_event(struct sw_state *s, int id, uint32_t events)
{
    struct sw_port *p = sw_port_find(s, id);
    if (!p)
        return; /* deleted since epoll_wait returned */
    if (events & EPOLLERR) {
        int e;
        socklen_t l = sizeof(e);
        getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &e, &l); /* clears it */
    }
    if (events & EPOLLHUP) {
        /* Shut down: it would be reported at every epoll_wait. */
        epoll_ctl(s->loop.epfd, EPOLL_CTL_DEL, p->fd, NULL);
        p->hup = true;
    }
    int64_t now = now_ns();
    if (events & EPOLLOUT)
        port_flush(s, p, now);
    if (events & EPOLLIN)
        port_readable(s, p, now);
}

static void event(struct sw_state *s, const struct epoll_event *ev)
{
    uint64_t v;
    int id = (int)(uint32_t)ev->data.u64;
    switch (ev->data.u64 >> 32) {
    case SW_EV_PORT: port_event(s, id, ev->events); break;
    case SW_EV_CAPTURE: sw_capture_event(s, id, ev->events); break;
    case SW_EV_TIMER:
        if (read(s->loop.timerfd, &v, sizeof(v)) < 0) {
            /* EAGAIN: rearmed since it fired */
        }
        s->timer_ns = 0;
        break;
    case SW_EV_WAKE:
        if (read(s->loop.wakefd, &v, sizeof(v)) < 0) {
            /* EAGAIN: another event took it */
        }
        break;
    }
}

/* After a round of events: what is due leaves, the timer is armed for the
 * rest. */
static void release_due(struct sw_state *s)
{
    int64_t now = now_ns();
    struct sw_bridge *b;
    struct sw_port *p;
    for (b = TAILQ_FIRST(&s->bridges); b; b = TAILQ_NEXT(b, link))
        for (p = TAILQ_FIRST(&b->ports); p; p = TAILQ_NEXT(p, link))
            if (!p->want_out && !TAILQ_EMPTY(&p->queue))
                port_flush(s, p, now);
    timer_update(s);
}

void *sw_thread(void *arg)
{
    struct sw_state *s = arg;
    struct epoll_event ev[32];
    for (;;) {
        int n = epoll_wait(s->loop.epfd, ev, ARRAY_SIZE(ev), -1);
        if (n < 0 && errno != EINTR) {
            int e = errno;
            pthread_mutex_lock(&s->lock);
            s->thread_err = e;
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
        /* The lock is taken per event, so a switch_* call waits for at
         * most one port's batch. */
        for (int i = 0; i < n; i++) {
            pthread_mutex_lock(&s->lock);
            event(s, &ev[i]);
            pthread_mutex_unlock(&s->lock);
        }
        pthread_mutex_lock(&s->lock);
        release_due(s);
        pthread_mutex_unlock(&s->lock);
    }
}
