/* A bridge's MAC learning table: which port a source address was last seen
 * on. Fixed size (SW_MAC_ENTRIES), so a guest sending from random
 * addresses cannot grow it: when it is full and nothing has aged out, new
 * addresses are not learned and frames to them are flooded. */
#include "net/switch_priv.h"

void sw_mac_init(struct sw_macs *t)
{
    memset(t, 0, sizeof(*t));
    for (int i = 0; i < SW_MAC_BUCKETS; i++)
        t->bucket[i] = -1;
    for (int i = 0; i < SW_MAC_ENTRIES; i++)
        t->e[i].next = (int16_t)(i + 1 < SW_MAC_ENTRIES ? i + 1 : -1);
    t->free = 0;
}

static unsigned hash(const unsigned char *a)
{
    /* The low bytes vary most (the high ones are a vendor's prefix). */
    return (a[5] ^ (a[4] << 3) ^ (a[3] << 5) ^ a[2] ^ a[1] ^ a[0]) % SW_MAC_BUCKETS;
}

/* Unlink entry i, found behind *prev, into the free list. */
static void entry_free(struct sw_macs *t, int16_t *prev, int16_t i)
{
    *prev = t->e[i].next;
    t->e[i].next = t->free;
    t->e[i].port = NULL;
    t->free = i;
}

/* Free every entry that aged out (or, with p, that points at p). */
static void sweep(struct sw_macs *t, const struct sw_port *p, int64_t now)
{
    for (int b = 0; b < SW_MAC_BUCKETS; b++) {
        int16_t *prev = &t->bucket[b];
        while (*prev >= 0) {
            int16_t i = *prev;
            if (p ? t->e[i].port == p : now - t->e[i].seen_ns > SW_MAC_AGE_NS)
                entry_free(t, prev, i);
            else
                prev = &t->e[i].next;
        }
    }
}

/* The entry of addr, or -1; an aged-out entry is freed on the way. */
static int16_t find(struct sw_macs *t, const unsigned char *addr, int64_t now)
{
    int16_t *prev = &t->bucket[hash(addr)];
    while (*prev >= 0) {
        int16_t i = *prev;
        if (memcmp(t->e[i].addr, addr, 6) == 0) {
            if (now - t->e[i].seen_ns <= SW_MAC_AGE_NS)
                return i;
            entry_free(t, prev, i);
            return -1;
        }
        prev = &t->e[i].next;
    }
    return -1;
}

void sw_mac_learn(struct sw_macs *t, const unsigned char *addr, struct sw_port *p, int64_t now)
{
    if (addr[0] & 1)
        return; /* a group address is never a source */
    int16_t i = find(t, addr, now);
    if (i >= 0) {
        t->e[i].port = p; /* a MAC that moved is learned where it is now */
        t->e[i].seen_ns = now;
        return;
    }
    /* Full: look for aged-out entries, at most once a second, so a flood
     * of new addresses does not scan the table at every frame. */
    if (t->free < 0 && now - t->full_scan_ns >= 1000000000LL) {
        t->full_scan_ns = now;
        sweep(t, NULL, now);
    }
    if (t->free < 0)
        return;
    i = t->free;
    t->free = t->e[i].next;
    memcpy(t->e[i].addr, addr, 6);
    t->e[i].port = p;
    t->e[i].seen_ns = now;
    unsigned b = hash(addr);
    t->e[i].next = t->bucket[b];
    t->bucket[b] = i;
}

struct sw_port *sw_mac_lookup(struct sw_macs *t, const unsigned char *addr, int64_t now)
{
    int16_t i = find(t, addr, now);
    return i >= 0 ? t->e[i].port : NULL;
}

void sw_mac_forget_port(struct sw_macs *t, const struct sw_port *p)
{
    sweep(t, p, 0);
}
