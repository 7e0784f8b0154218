/* Impairments: the directions between ports (blocks, their own loss,
 * latency and bandwidth, the generator of their loss decisions) and the
 * queue of frames waiting at each destination port for their release time
 * (docs/architecture.md#the-switch). */
#include "net/switch_priv.h"

/* splitmix64: one 64-bit word of state per direction, and every output a
 * full mix of it; loss needs independence between frames, not a
 * cryptographic generator. */
static uint64_t prng_next(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* FNV-1a over a name and its terminating NUL, so "ab"+"c" and "a"+"bc"
 * hash apart. */
static uint64_t fnv(uint64_t h, const char *s)
{
    do {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    } while (*s++);
    return h;
}

/* The direction's generator starts from the seed and the names of the
 * bridge and both VMs, so what it drops depends on nothing else: not on the
 * handles, nor on the traffic of other directions. */
void sw_dir_seed(struct sw_dir *d, const struct sw_port *from)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(h, from->br->name);
    h = fnv(h, from->vm);
    h = fnv(h, d->to->vm);
    uint64_t x = sw_seed_value ^ h;
    d->prng = prng_next(&x);
}

struct sw_dir *sw_dir_get(struct sw_port *from, struct sw_port *to)
{
    for (struct sw_dir *d = from->dirs; d; d = d->next)
        if (d->to == to)
            return d;
    struct sw_dir *d = xcalloc(1, sizeof(*d));
    d->to = to;
    sw_dir_seed(d, from);
    d->next = from->dirs;
    from->dirs = d;
    return d;
}

void sw_dirs_drop_to(struct sw_bridge *br, struct sw_port *to)
{
    struct sw_port *p;
    for (p = TAILQ_FIRST(&br->ports); p; p = TAILQ_NEXT(p, link))
        for (struct sw_dir **pd = &p->dirs; *pd;) {
            struct sw_dir *d = *pd;
            if (d->to == to) {
                *pd = d->next;
                free(d);
            } else {
                pd = &d->next;
            }
        }
}

void sw_dirs_free(struct sw_port *p)
{
    struct sw_dir *d;
    while ((d = p->dirs)) {
        p->dirs = d->next;
        free(d);
    }
}

/* The bridge's values and the direction's together: latencies add, losses
 * compound, the lower bandwidth wins. */
static struct switch_impair combine(const struct switch_impair *a, const struct switch_impair *b)
{
    struct switch_impair r;
    r.latency_ns = a->latency_ns + b->latency_ns;
    uint64_t pass = (uint64_t)(1000000 - a->loss_ppm) * (1000000 - b->loss_ppm) / 1000000;
    r.loss_ppm = (uint32_t)(1000000 - pass);
    r.bps = !a->bps ? b->bps : !b->bps ? a->bps : MIN(a->bps, b->bps);
    return r;
}

bool sw_impair_frame(struct sw_dir *d, uint32_t len, int64_t now, int64_t *ret_release_ns)
{
    struct switch_impair im = combine(&d->to->br->im, &d->im);
    if (im.loss_ppm) {
        /* A uniform draw in [0, 1e6): the top 32 bits, scaled. */
        uint64_t u = ((prng_next(&d->prng) >> 32) * 1000000) >> 32;
        if (u < im.loss_ppm)
            return false;
    }
    int64_t t = now, link_free = d->link_free_ns;
    if (im.bps) {
        /* The frame's serialisation starts when the link is done with the
         * frames before it: a backlog longer than SW_BW_WAIT_MAX_NS is a
         * full buffer, and the frame is dropped. */
        int64_t start = MAX(now, d->link_free_ns);
        if (start - now > SW_BW_WAIT_MAX_NS)
            return false;
        t = link_free = start + (int64_t)((uint64_t)len * 8 * 1000000000ULL / im.bps);
    }
    int64_t release = MAX(t + im.latency_ns, d->last_release_ns);
    d->link_free_ns = link_free;
    d->last_release_ns = release;
    *ret_release_ns = release;
    return true;
}

bool sw_queue_full(const struct sw_port *p, uint32_t len)
{
    return p->queued_frames >= SW_QUEUE_FRAMES || p->queued_bytes + len > SW_QUEUE_BYTES;
}

void sw_queue_add(struct sw_port *p, const void *data, uint32_t len, int64_t release_ns)
{
    struct sw_frame *f = xmalloc(sizeof(*f) + len);
    f->release_ns = release_ns;
    f->len = len;
    memcpy(f->data, data, len);
    /* From the tail: a frame usually leaves after everything queued. Equal
     * times keep their arrival order. */
    struct sw_frame *after = TAILQ_LAST(&p->queue, sw_frames);
    while (after && after->release_ns > release_ns)
        after = TAILQ_PREV(after, sw_frames, link);
    if (after)
        TAILQ_INSERT_AFTER(&p->queue, after, f, link);
    else
        TAILQ_INSERT_HEAD(&p->queue, f, link);
    p->queued_frames++;
    p->queued_bytes += len;
}

void sw_queue_pop(struct sw_port *p)
{
    struct sw_frame *f = TAILQ_FIRST(&p->queue);
    TAILQ_REMOVE(&p->queue, f, link);
    p->queued_frames--;
    p->queued_bytes -= f->len;
    free(f);
}

void sw_queue_clear(struct sw_port *p)
{
    while (!TAILQ_EMPTY(&p->queue))
        sw_queue_pop(p);
}
