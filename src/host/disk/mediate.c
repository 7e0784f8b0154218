/* Mediated disks: the guest's writes held in memory until it flushes, what
 * its reads see meanwhile, and the commit (docs/disks.md#mediated-disks-and-
 * power-cuts). Called locked, by the serving thread and by disk.c. */
#include "disk/disk_priv.h"

#include <fcntl.h>
#include <sys/mman.h>

/* The held bytes live in chunks of DK_CHUNK bytes, mapped once and asked
 * for huge pages: a malloc per held write touched fresh pages, 256 page
 * faults per MiB held, which was most of a mediated disk's write cost
 * (writes of 64 MiB at 0.23 times a plain disk's speed, under TCG here;
 * docs/disks.md#throughput). They fill in order and start over once
 * nothing is held (a commit, a power cut). */
static unsigned char *chunk_alloc(struct dk_disk *d, size_t n)
{
    if (n > DK_CHUNK)
        return NULL;
    if (d->nchunks && d->chunk_used + n > DK_CHUNK) {
        d->chunk_at++;
        d->chunk_used = 0;
    }
    if (d->chunk_at == d->nchunks) {
        void *p = mmap(NULL, DK_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        madvise(p, DK_CHUNK, MADV_HUGEPAGE);
        d->chunks = xrealloc(d->chunks, (d->nchunks + 1) * sizeof(*d->chunks));
        d->chunks[d->nchunks++] = p;
    }
    unsigned char *p = d->chunks[d->chunk_at] + d->chunk_used;
    d->chunk_used += (n + 63) & ~(size_t)63;
    return p;
}

/* Nothing held: the chunks are free again, past DK_CHUNKS_KEPT unmapped. */
static void chunks_reset(struct dk_disk *d)
{
    while (d->nchunks > DK_CHUNKS_KEPT)
        munmap(d->chunks[--d->nchunks], DK_CHUNK);
    d->chunk_at = d->chunk_used = 0;
}

void dk_chunks_release(struct dk_disk *d)
{
    while (d->nchunks)
        munmap(d->chunks[--d->nchunks], DK_CHUNK);
    free(d->chunks);
    d->chunks = NULL;
    d->chunk_at = d->chunk_used = 0;
}

static void held_free(struct dk_disk *d, struct dk_held *h)
{
    TAILQ_REMOVE(&d->held, h, link);
    d->held_count--;
    d->held_bytes -= h->len;
    if (h->own_data)
        free(h->data);
    free(h);
    if (!d->held_count)
        chunks_reset(d);
}

void dk_drop_held(struct dk_disk *d)
{
    struct dk_held *h;
    while ((h = TAILQ_FIRST(&d->held)))
        held_free(d, h);
}

static int apply(struct dk_disk *d, const struct dk_held *h)
{
    if (h->type == NBD_CMD_WRITE)
        return dk_img_write(d, h->data, h->len, h->off);
    /* A TRIM is zeroes here, not advice: the guest read zeroes while it
     * was held, so it must read them after the commit too. */
    return dk_img_zero(d, h->off, h->len, h->may_punch);
}

int dk_apply_held(const struct dk_disk *d, int out)
{
    const struct dk_held *h;
    TAILQ_FOREACH(h, &d->held, link)
    {
        int r = h->type == NBD_CMD_WRITE ? dk_pwrite_all(out, h->data, h->len, h->off)
                                         : dk_zero_range(out, h->off, h->len, true);
        if (r < 0)
            return r;
    }
    return 0;
}

int dk_commit(struct dk_disk *d)
{
    struct dk_held *h;
    while ((h = TAILQ_FIRST(&d->held))) {
        int r = apply(d, h);
        if (r < 0)
            return r;
        held_free(d, h);
    }
    return fdatasync(d->fd) < 0 ? -errno : 0;
}

int dk_hold(struct dk_disk *d, uint16_t type, uint16_t flags, uint64_t off, uint32_t len,
            const void *data)
{
    /* The bound: a guest that never flushes cannot grow provium's memory
     * past it. Committing is what a disk whose cache is full does. */
    if (d->held_bytes + len > d->hold_max || d->held_count + 1 > DISK_HOLD_MAX_COUNT) {
        d->overflows++;
        int r = dk_commit(d);
        if (r < 0)
            return r;
    }
    size_t n = type == NBD_CMD_WRITE ? len : 0;
    struct dk_held *h = xmalloc(sizeof(*h));
    h->data = n ? chunk_alloc(d, n) : NULL;
    h->own_data = n && !h->data;
    if (h->own_data)
        h->data = xmalloc(n);
    h->type = type;
    h->may_punch = type == NBD_CMD_TRIM || !(flags & NBD_CMD_FLAG_NO_HOLE);
    h->off = off;
    h->len = len;
    if (n)
        memcpy(h->data, data, n);
    TAILQ_INSERT_TAIL(&d->held, h, link);
    d->held_count++;
    d->held_bytes += len;
    return 0;
}

void dk_overlay(const struct dk_disk *d, uint64_t off, size_t len, unsigned char *p)
{
    const struct dk_held *h;
    TAILQ_FOREACH(h, &d->held, link)
    {
        if (h->off >= off + len || h->off + h->len <= off)
            continue;
        uint64_t from = MAX(h->off, off), to = MIN(h->off + h->len, off + len);
        if (h->type == NBD_CMD_WRITE)
            memcpy(p + (from - off), h->data + (from - h->off), to - from);
        else
            memset(p + (from - off), 0, to - from);
    }
}

/* splitmix64: small, and the same sequence for a seed on every machine */
static uint64_t next_random(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int dk_cut(struct dk_disk *d, bool reorder, uint64_t seed, struct disk_cut *ret)
{
    *ret = (struct disk_cut){0};
    struct dk_held *h, *next;
    for (h = TAILQ_FIRST(&d->held); h && reorder; h = next) {
        next = TAILQ_NEXT(h, link);
        if (next_random(&seed) >> 63) { /* kept: applied below, in order */
            ret->applied++;
        } else {
            held_free(d, h);
            ret->dropped++;
        }
    }
    int r = ret->applied ? dk_commit(d) : 0;
    ret->dropped += d->held_count; /* what a failed commit left */
    dk_drop_held(d);
    return r;
}
