/* The switch's state and its calls: bridges, ports and their handles, the
 * forwarding thread's start, flags, blocks, impairments, counters, and
 * forgetting it all in a forked child (docs/architecture.md#the-switch). */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include "net/switch_priv.h"

/* One switch per process. state_lock only orders its creation and
 * switch_forget; the forwarding thread never takes it, so a child forked
 * by the Lua thread finds it as the Lua thread left it. */
static struct sw_state *state;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static bool atfork_done;
/* Handles of bridges, ports and captures, from one counter: never reused,
 * and a port's handle given as a bridge's finds nothing. */
static int next_handle = 1;
uint64_t sw_seed_value;

/* fork() of another thread waits for the forwarding thread to finish what it
 * is doing, so the child's copy of the state is whole (switch_forget walks
 * it). The child's only thread is the one that locked: it unlocks. */
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

/* The state, made with its thread at the first bridge. */
static int state_get(struct sw_state **ret, struct pv_err *err)
{
    int r = 0;
    pthread_mutex_lock(&state_lock);
    if (!state) {
        struct sw_state *s = xcalloc(1, sizeof(*s));
        pthread_mutex_init(&s->lock, NULL);
        TAILQ_INIT(&s->bridges);
        TAILQ_INIT(&s->captures);
        s->rxbuf = xmalloc(SW_FRAME_MAX + 1);
        if ((r = evloop_open(&s->loop, "the switch", SW_EV(SW_EV_TIMER, 0), SW_EV(SW_EV_WAKE, 0),
                             err)) < 0 ||
            (r = evloop_thread(sw_thread, s, "the switch", err)) < 0) {
            evloop_close(&s->loop);
            free(s->rxbuf);
            free(s);
            pthread_mutex_unlock(&state_lock);
            return r;
        }
        if (!atfork_done)
            pthread_atfork(atfork_prepare, atfork_parent, atfork_parent);
        atfork_done = true;
        state = s;
    }
    *ret = state;
    pthread_mutex_unlock(&state_lock);
    return 0;
}

struct sw_state *sw_lock(void)
{
    struct sw_state *s = state;
    if (s)
        pthread_mutex_lock(&s->lock);
    return s;
}

void sw_unlock(struct sw_state *s)
{
    pthread_mutex_unlock(&s->lock);
}

int sw_handle_new(void)
{
    return next_handle++;
}

struct sw_bridge *sw_bridge_find(struct sw_state *s, int id)
{
    struct sw_bridge *b;
    for (b = TAILQ_FIRST(&s->bridges); b; b = TAILQ_NEXT(b, link))
        if (b->id == id)
            return b;
    return NULL;
}

struct sw_port *sw_port_find(struct sw_state *s, int id)
{
    struct sw_bridge *b;
    struct sw_port *p;
    for (b = TAILQ_FIRST(&s->bridges); b; b = TAILQ_NEXT(b, link))
        for (p = TAILQ_FIRST(&b->ports); p; p = TAILQ_NEXT(p, link))
            if (p->id == id)
                return p;
    return NULL;
}

void switch_seed(uint64_t seed)
{
    struct sw_state *s = sw_lock();
    sw_seed_value = seed;
    if (!s)
        return;
    /* Directions made before the seed start again from it. */
    struct sw_bridge *b;
    struct sw_port *p;
    for (b = TAILQ_FIRST(&s->bridges); b; b = TAILQ_NEXT(b, link))
        for (p = TAILQ_FIRST(&b->ports); p; p = TAILQ_NEXT(p, link))
            for (struct sw_dir *d = p->dirs; d; d = d->next)
                sw_dir_seed(d, p);
    sw_unlock(s);
}

int switch_bridge_add(const char *name, struct pv_err *err)
{
    struct sw_state *s;
    int r = state_get(&s, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&s->lock);
    struct sw_bridge *b;
    for (b = TAILQ_FIRST(&s->bridges); b; b = TAILQ_NEXT(b, link))
        if (strcmp(b->name, name) == 0) {
            r = pv_err_set(err, EEXIST, "bridge %s exists already", name);
            goto out;
        }
    if (s->thread_err) {
        r = pv_err_set(err, s->thread_err, "the switch's thread stopped: %s",
                       strerror(s->thread_err));
        goto out;
    }
    b = xcalloc(1, sizeof(*b));
    b->id = r = sw_handle_new();
    b->name = xstrdup(name);
    TAILQ_INIT(&b->ports);
    sw_mac_init(&b->macs);
    TAILQ_INSERT_TAIL(&s->bridges, b, link);
out:
    sw_unlock(s);
    return r;
}

/* Called locked; the port's queue, directions, MAC entries, captures, fd. */
static void port_free(struct sw_state *s, struct sw_port *p)
{
    struct sw_bridge *b = p->br;
    sw_captures_end(s, b->id, p->id);
    epoll_ctl(s->loop.epfd, EPOLL_CTL_DEL, p->fd, NULL);
    close(p->fd);
    sw_queue_clear(p);
    sw_dirs_drop_to(b, p);
    sw_dirs_free(p);
    sw_mac_forget_port(&b->macs, p);
    TAILQ_REMOVE(&b->ports, p, link);
    free(p->vm);
    free(p);
}

void switch_bridge_del(int bridge)
{
    struct sw_state *s = sw_lock();
    if (!s)
        return;
    struct sw_bridge *b = sw_bridge_find(s, bridge);
    if (b) {
        struct sw_port *p;
        while ((p = TAILQ_FIRST(&b->ports)))
            port_free(s, p);
        sw_captures_end(s, b->id, -1);
        TAILQ_REMOVE(&s->bridges, b, link);
        free(b->name);
        free(b);
        evloop_wake(&s->loop); /* the timer may wait for frames that are gone */
    }
    sw_unlock(s);
}

int switch_port_add(int bridge, const char *vm, int *ret_qemu_fd, struct pv_err *err)
{
    struct sw_state *s = sw_lock();
    if (!s)
        return pv_err_set(err, ENOENT, "no bridge %d for VM %s", bridge, vm);
    int r;
    struct sw_bridge *b = sw_bridge_find(s, bridge);
    if (!b) {
        r = pv_err_set(err, ENOENT, "no bridge %d for VM %s", bridge, vm);
        goto out;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0) {
        r = pv_err_set(err, errno, "bridge %s: a port for VM %s: socketpair: %m", b->name, vm);
        goto out;
    }
    int fl = fcntl(sv[0], F_GETFL);
    fcntl(sv[0], F_SETFL, fl | O_NONBLOCK);
    struct sw_port *p = xcalloc(1, sizeof(*p));
    p->id = r = sw_handle_new();
    p->br = b;
    p->vm = xstrdup(vm);
    p->fd = sv[0];
    TAILQ_INIT(&p->queue);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = SW_EV(SW_EV_PORT, p->id)};
    if (epoll_ctl(s->loop.epfd, EPOLL_CTL_ADD, p->fd, &ev) < 0) {
        r = pv_err_set(err, errno, "bridge %s: a port for VM %s: epoll_ctl: %m", b->name, vm);
        close(sv[0]);
        close(sv[1]);
        free(p->vm);
        free(p);
        goto out;
    }
    TAILQ_INSERT_TAIL(&b->ports, p, link);
    *ret_qemu_fd = sv[1];
out:
    sw_unlock(s);
    return r;
}

void switch_port_del(int port)
{
    struct sw_state *s = sw_lock();
    if (!s)
        return;
    struct sw_port *p = sw_port_find(s, port);
    if (p) {
        port_free(s, p);
        evloop_wake(&s->loop);
    }
    sw_unlock(s);
}

int switch_port_flags(int port, unsigned flags)
{
    if (flags & ~(unsigned)(SWITCH_DOWN | SWITCH_ISOLATED))
        return -EINVAL;
    struct sw_state *s = sw_lock();
    if (!s)
        return -ENOENT;
    struct sw_port *p = sw_port_find(s, port);
    if (p)
        p->flags = flags;
    sw_unlock(s);
    return p ? 0 : -ENOENT;
}

/* Both ports, of one bridge (and not the same port), or an error. */
static int pair_find(struct sw_state *s, int from, int to, struct sw_port **ret_from,
                     struct sw_port **ret_to)
{
    *ret_from = sw_port_find(s, from);
    *ret_to = sw_port_find(s, to);
    if (!*ret_from || !*ret_to)
        return -ENOENT;
    if ((*ret_from)->br != (*ret_to)->br || from == to)
        return -EINVAL;
    return 0;
}

int switch_block(int from, int to, bool blocked)
{
    struct sw_state *s = sw_lock();
    if (!s)
        return -ENOENT;
    struct sw_port *a, *b;
    int r = pair_find(s, from, to, &a, &b);
    if (r == 0)
        sw_dir_get(a, b)->blocked = blocked;
    sw_unlock(s);
    return r;
}

int switch_impair(int bridge, int from, int to, const struct switch_impair *im)
{
    if (im->latency_ns < 0 || im->latency_ns > SW_LATENCY_MAX_NS || im->loss_ppm > 1000000)
        return -EINVAL;
    if ((from < 0) != (to < 0))
        return -EINVAL;
    struct sw_state *s = sw_lock();
    if (!s)
        return -ENOENT;
    int r = 0;
    struct sw_bridge *b = sw_bridge_find(s, bridge);
    struct sw_port *a, *z;
    if (!b) {
        r = -ENOENT;
    } else if (from < 0) {
        b->im = *im;
    } else {
        r = pair_find(s, from, to, &a, &z);
        if (r == 0 && a->br != b)
            r = -EINVAL;
        if (r == 0)
            sw_dir_get(a, z)->im = *im;
    }
    sw_unlock(s);
    return r;
}

int switch_reset(int bridge)
{
    struct sw_state *s = sw_lock();
    if (!s)
        return -ENOENT;
    struct sw_bridge *b = sw_bridge_find(s, bridge);
    if (b) {
        memset(&b->im, 0, sizeof(b->im));
        struct sw_port *p;
        for (p = TAILQ_FIRST(&b->ports); p; p = TAILQ_NEXT(p, link))
            for (struct sw_dir *d = p->dirs; d; d = d->next) {
                d->blocked = false;
                memset(&d->im, 0, sizeof(d->im));
            }
    }
    sw_unlock(s);
    return b ? 0 : -ENOENT;
}

int switch_counters(int port, struct switch_counters *ret)
{
    struct sw_state *s = sw_lock();
    if (!s)
        return -ENOENT;
    struct sw_port *p = sw_port_find(s, port);
    if (p)
        *ret = p->c;
    sw_unlock(s);
    return p ? 0 : -ENOENT;
}

int switch_queued(int port, uint64_t *ret_frames, uint64_t *ret_bytes)
{
    struct sw_state *s = sw_lock();
    if (!s)
        return -ENOENT;
    struct sw_port *p = sw_port_find(s, port);
    if (p) {
        *ret_frames = p->queued_frames;
        *ret_bytes = p->queued_bytes;
    }
    sw_unlock(s);
    return p ? 0 : -ENOENT;
}

/* The child has no forwarding thread and its own copy of the state, whole
 * (atfork_prepare): free it, close what it holds. The mutex was locked by
 * the thread that forked and unlocked in atfork_parent; it is made anew all
 * the same, in case the fork did not go through fork(). */
void switch_forget(void)
{
    pthread_mutex_init(&state_lock, NULL);
    struct sw_state *s = state;
    state = NULL;
    if (!s)
        return;
    /* The epoll instance is the parent's too: removing a port from it here
     * would remove it there. Closed first, every epoll_ctl below fails. */
    close(s->loop.epfd);
    s->loop.epfd = -1;
    struct sw_bridge *b;
    while ((b = TAILQ_FIRST(&s->bridges))) {
        struct sw_port *p;
        while ((p = TAILQ_FIRST(&b->ports)))
            port_free(s, p);
        TAILQ_REMOVE(&s->bridges, b, link);
        free(b->name);
        free(b);
    }
    sw_captures_close_all(s);
    evloop_close(&s->loop);
    free(s->rxbuf);
    free(s);
}
