/* The disks' NBD decoder (src/host/disk/nbd.c): the input is everything
 * "QEMU" sends on a connection, which the guest drives. Its first byte sets
 * the size of the pieces the rest arrives in, so requests split anywhere.
 * Every request that comes out must be one the server may carry out as it
 * is (nbd.h), the decoder never holds more than NBD_IN_MAX bytes, and any
 * input ends in a request stream, a clean end or -EPROTO: never a crash, a
 * leak or a hang. */
#include <stdint.h>
#include <stdlib.h>

#include "host/disk/nbd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define EXPORT_SIZE (1u << 20)

static void check(const struct nbd_conn *c, const struct nbd_req *r)
{
    switch (r->type) {
    case NBD_CMD_FLUSH:
        if (r->flags)
            abort();
        return;
    case NBD_CMD_READ:
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES: break;
    default: abort();
    }
    if (r->len == 0 || r->offset > EXPORT_SIZE || r->len > EXPORT_SIZE - r->offset)
        abort();
    if ((r->type == NBD_CMD_WRITE) != (r->data != NULL))
        abort();
    if (r->type == NBD_CMD_WRITE) {
        const char *d = (const char *)r->data;
        /* the payload lies inside what the decoder holds */
        if (d < c->in.data || d + r->len > c->in.data + c->in.len)
            abort();
        volatile unsigned char sum = 0;
        for (uint32_t i = 0; i < r->len; i++)
            sum ^= r->data[i];
    }
    if (r->type != NBD_CMD_READ && c->readonly)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t piece = 1 + data[0] % 64, at = 1;
    struct nbd_conn c;
    nbd_init(&c, EXPORT_SIZE, data[0] & 0x80);
    int k = 0;
    while (at < size && k >= 0) {
        size_t n = MIN(MIN(piece, size - at), nbd_room(&c));
        buf_add(&c.in, data + at, n);
        at += n;
        if (c.in.len - c.in_off > NBD_IN_MAX)
            abort();
        struct nbd_req r;
        while ((k = nbd_next(&c, &r)) > 0) {
            check(&c, &r);
            nbd_reply(&c.out, r.handle, r.type == NBD_CMD_READ ? 0 : NBD_EIO, data, 0);
        }
        if (k < 0 && k != -EPROTO && k != -ECONNRESET)
            abort();
        if (k == -EPROTO && !c.error)
            abort();
        if (n == 0 && k == 0)
            abort(); /* no room and no progress: the decoder would hang */
    }
    nbd_release(&c);
    return 0;
}
