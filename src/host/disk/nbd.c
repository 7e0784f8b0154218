/* The NBD protocol's server side, decoding and encoding only (nbd.h). The
 * numbers are the public protocol's (fixed newstyle negotiation, simple
 * replies); every integer on the wire is big-endian. */
#include "disk/nbd.h"

#include <endian.h>

#define NBD_MAGIC 0x4e42444d41474943ull    /* "NBDMAGIC" */
#define NBD_IHAVEOPT 0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_OPT_REPLY_MAGIC 0x3e889045565a9ull
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u

/* Handshake flags (server), client flags. */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES (1u << 1)

/* Transmission flags. */
#define NBD_FLAG_HAS_FLAGS (1u << 0)
#define NBD_FLAG_READ_ONLY (1u << 1)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_FUA (1u << 3)
#define NBD_FLAG_SEND_TRIM (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)

enum {
    NBD_OPT_EXPORT_NAME = 1,
    NBD_OPT_ABORT = 2,
    NBD_OPT_LIST = 3,
    NBD_OPT_INFO = 6,
    NBD_OPT_GO = 7,
};

#define NBD_REP_ACK 1u
#define NBD_REP_SERVER 2u
#define NBD_REP_INFO 3u
#define NBD_REP_ERR_UNSUP ((1u << 31) | 1)
#define NBD_REP_ERR_INVALID ((1u << 31) | 3)

#define NBD_INFO_EXPORT 0
#define NBD_INFO_BLOCK_SIZE 3

/* What a block-size answer says: any alignment works (the file is read and
 * written with pread/pwrite), 4 KiB suits the page cache, NBD_MAX_REQUEST. */
#define NBD_BLOCK_MIN 1u
#define NBD_BLOCK_PREFERRED 4096u

#define REQUEST_LEN 28u

static void put16(struct buf *b, uint16_t v)
{
    v = htobe16(v);
    buf_add(b, &v, 2);
}
static void put32(struct buf *b, uint32_t v)
{
    v = htobe32(v);
    buf_add(b, &v, 4);
}
static void put64(struct buf *b, uint64_t v)
{
    v = htobe64(v);
    buf_add(b, &v, 8);
}
static uint16_t get16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return be16toh(v);
}
static uint32_t get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return be32toh(v);
}
static uint64_t get64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

void nbd_init(struct nbd_conn *c, uint64_t size, bool readonly)
{
    *c = (struct nbd_conn){.phase = NBD_HELLO, .size = size, .readonly = readonly};
    put64(&c->out, NBD_MAGIC);
    put64(&c->out, NBD_IHAVEOPT);
    put16(&c->out, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
}

void nbd_release(struct nbd_conn *c)
{
    buf_release(&c->in);
    buf_release(&c->out);
}

size_t nbd_room(const struct nbd_conn *c)
{
    size_t held = c->in.len - c->in_off;
    return held >= NBD_IN_MAX ? 0 : NBD_IN_MAX - held;
}

size_t nbd_want(const struct nbd_conn *c)
{
    if (c->phase != NBD_TRANSMISSION)
        return 0;
    if (c->skip)
        return (size_t)MIN(c->skip, (uint64_t)SIZE_MAX);
    const unsigned char *p = (const unsigned char *)c->in.data + c->in_off;
    size_t avail = c->in.len - c->in_off;
    if (avail < REQUEST_LEN || get16(p + 6) != NBD_CMD_WRITE)
        return 0;
    uint32_t len = get32(p + 24);
    return len <= NBD_MAX_REQUEST && avail < REQUEST_LEN + len ? REQUEST_LEN + len - avail : 0;
}

void nbd_reply(struct buf *out, uint64_t handle, uint32_t error, const void *data, size_t len)
{
    put32(out, NBD_SIMPLE_REPLY_MAGIC);
    put32(out, error);
    put64(out, handle);
    if (!error && len)
        buf_add(out, data, len);
}

static uint16_t transmission_flags(const struct nbd_conn *c)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA;
    if (c->readonly)
        f |= NBD_FLAG_READ_ONLY;
    else
        f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
    return f;
}

static void opt_reply(struct nbd_conn *c, uint32_t opt, uint32_t type, const void *data,
                      uint32_t len)
{
    put64(&c->out, NBD_OPT_REPLY_MAGIC);
    put32(&c->out, opt);
    put32(&c->out, type);
    put32(&c->out, len);
    buf_add(&c->out, data, len);
}

static int fail(struct nbd_conn *c, const char *why)
{
    c->phase = NBD_ENDED;
    c->error = why;
    return -EPROTO;
}

/* NBD_OPT_INFO and NBD_OPT_GO: u32 name length, the name, u16 count, then
 * that many u16 information types. Any export name is this export. */
static void opt_info(struct nbd_conn *c, uint32_t opt, const unsigned char *d, uint32_t len)
{
    uint32_t namelen = len >= 4 ? get32(d) : UINT32_MAX;
    if (len < 6 || namelen > len - 6) {
        opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
        return;
    }
    const unsigned char *q = d + 4 + namelen;
    uint16_t n = get16(q);
    if ((uint64_t)4 + namelen + 2 + 2ull * n != len) {
        opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
        return;
    }
    struct buf info = BUF_INIT;
    put16(&info, NBD_INFO_EXPORT);
    put64(&info, c->size);
    put16(&info, transmission_flags(c));
    opt_reply(c, opt, NBD_REP_INFO, info.data, (uint32_t)info.len);
    for (uint16_t i = 0; i < n; i++) {
        if (get16(q + 2 + 2 * i) != NBD_INFO_BLOCK_SIZE)
            continue;
        info.len = 0;
        put16(&info, NBD_INFO_BLOCK_SIZE);
        put32(&info, NBD_BLOCK_MIN);
        put32(&info, NBD_BLOCK_PREFERRED);
        put32(&info, NBD_MAX_REQUEST);
        opt_reply(c, opt, NBD_REP_INFO, info.data, (uint32_t)info.len);
        break;
    }
    buf_release(&info);
    opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
    if (opt == NBD_OPT_GO)
        c->phase = NBD_TRANSMISSION;
}

/* One option whose header and data are in; 0 or -ECONNRESET (abort). */
static int option(struct nbd_conn *c, uint32_t opt, const unsigned char *d, uint32_t len)
{
    switch (opt) {
    case NBD_OPT_EXPORT_NAME:
        /* no error can be told here: the export, whatever its name */
        put64(&c->out, c->size);
        put16(&c->out, transmission_flags(c));
        if (!c->no_zeroes) {
            static const unsigned char zeroes[124];
            buf_add(&c->out, zeroes, sizeof(zeroes));
        }
        c->phase = NBD_TRANSMISSION;
        return 0;
    case NBD_OPT_ABORT:
        opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
        c->phase = NBD_ENDED;
        return -ECONNRESET;
    case NBD_OPT_LIST:
        if (len) {
            opt_reply(c, opt, NBD_REP_ERR_INVALID, NULL, 0);
        } else {
            static const unsigned char empty_name[4];
            opt_reply(c, opt, NBD_REP_SERVER, empty_name, sizeof(empty_name));
            opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
        }
        return 0;
    case NBD_OPT_INFO:
    case NBD_OPT_GO: opt_info(c, opt, d, len); return 0;
    default:
        /* structured replies, TLS, meta contexts...: the client falls back */
        opt_reply(c, opt, NBD_REP_ERR_UNSUP, NULL, 0);
        return 0;
    }
}

/* A request header at p (its payload, if any, follows in the buffer).
 * Returns 1 (*ret filled, its payload taken), 0 (more bytes needed),
 * 2 (answered or dropped here: go on) or -errno. */
static int request(struct nbd_conn *c, const unsigned char *p, size_t avail, struct nbd_req *ret)
{
    if (get32(p) != NBD_REQUEST_MAGIC)
        return fail(c, "a request without the request magic");
    struct nbd_req r = {
        .flags = get16(p + 4),
        .type = get16(p + 6),
        .handle = get64(p + 8),
        .offset = get64(p + 16),
        .len = get32(p + 24),
    };
    bool write = r.type == NBD_CMD_WRITE;
    uint32_t error = 0;
    if (write && r.len <= NBD_MAX_REQUEST && avail < REQUEST_LEN + r.len)
        return 0; /* the payload is still on its way */
    switch (r.type) {
    case NBD_CMD_DISC: c->phase = NBD_ENDED; return -ECONNRESET;
    case NBD_CMD_FLUSH:
        if (r.flags)
            error = NBD_EINVAL;
        break;
    case NBD_CMD_READ:
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES: {
        unsigned allowed = r.type == NBD_CMD_READ ? 0
                           : r.type == NBD_CMD_WRITE_ZEROES
                               ? NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE
                               : NBD_CMD_FLAG_FUA;
        bool big = (r.type == NBD_CMD_READ || write) && r.len > NBD_MAX_REQUEST;
        if ((r.flags & ~allowed) || r.len == 0 || big)
            error = NBD_EINVAL;
        else if (r.offset > c->size || r.len > c->size - r.offset)
            error = r.type == NBD_CMD_READ ? NBD_EINVAL : NBD_ENOSPC;
        else if (r.type != NBD_CMD_READ && c->readonly)
            error = NBD_EPERM;
        break;
    }
    default: error = NBD_EINVAL; break;
    }
    if (write && r.len > NBD_MAX_REQUEST) {
        c->skip = r.len; /* read and dropped, never held */
        c->in_off += REQUEST_LEN;
    } else {
        c->in_off += REQUEST_LEN + (write ? r.len : 0);
    }
    if (error) {
        nbd_reply(&c->out, r.handle, error, NULL, 0);
        return 2;
    }
    r.data = write ? p + REQUEST_LEN : NULL;
    *ret = r;
    return 1;
}

/* Drop what was decoded, so that c->in holds only what is still to come. */
static void compact(struct nbd_conn *c)
{
    if (!c->in_off)
        return;
    buf_consume(&c->in, c->in_off);
    c->in_off = 0;
}

int nbd_next(struct nbd_conn *c, struct nbd_req *ret)
{
    for (;;) {
        if (c->phase == NBD_ENDED)
            return c->error ? -EPROTO : -ECONNRESET;
        if (c->in_off == c->in.len) {
            c->in.len = c->in_off = 0;
        }
        const unsigned char *p = (const unsigned char *)c->in.data + c->in_off;
        size_t avail = c->in.len - c->in_off;
        if (c->skip) {
            size_t n = (size_t)MIN(c->skip, (uint64_t)avail);
            c->skip -= n;
            c->in_off += n;
            if (c->skip) {
                compact(c);
                return 0;
            }
            continue;
        }
        switch (c->phase) {
        case NBD_HELLO: {
            if (avail < 4)
                break;
            uint32_t f = get32(p);
            c->in_off += 4;
            if (f & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
                return fail(c, "unknown client flags");
            if (!(f & NBD_FLAG_C_FIXED_NEWSTYLE))
                return fail(c, "a client without fixed newstyle negotiation");
            c->no_zeroes = f & NBD_FLAG_C_NO_ZEROES;
            c->phase = NBD_OPTIONS;
            continue;
        }
        case NBD_OPTIONS: {
            if (avail < 16)
                break;
            if (get64(p) != NBD_IHAVEOPT)
                return fail(c, "an option without the IHAVEOPT magic");
            uint32_t opt = get32(p + 8), len = get32(p + 12);
            if (len > NBD_MAX_OPTION)
                return fail(c, "an option longer than 64 KiB");
            if (avail < 16 + (size_t)len)
                break;
            c->in_off += 16 + len;
            int r = option(c, opt, p + 16, len);
            if (r < 0)
                return r;
            continue;
        }
        case NBD_TRANSMISSION: {
            if (avail < REQUEST_LEN)
                break;
            int r = request(c, p, avail, ret);
            if (r == 2)
                continue;
            if (r == 0)
                break;
            return r;
        }
        case NBD_ENDED: break;
        }
        compact(c);
        return 0;
    }
}
