/* The NBD protocol as a server speaks it (docs/disks.md#how-it-works): the
 * fixed newstyle handshake, then requests and simple replies. No I/O, no
 * threads: bytes from the client go in, requests and bytes to send come
 * out, so the whole decoder runs in unit tests and under the fuzzer.
 *
 * The peer is QEMU's NBD client, but what it sends is driven by the guest:
 * every length is checked against the bytes read, and a request is bounded
 * (NBD_MAX_REQUEST) whatever its header says. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

/* The largest READ or WRITE served: a larger one is answered EINVAL (a
 * WRITE's payload is read and dropped, never held). QEMU's client never
 * asks for more than this. */
#define NBD_MAX_REQUEST (32u << 20)
/* An option's data beyond this ends the connection (an export name is at
 * most 4 KiB by the protocol). */
#define NBD_MAX_OPTION 65536u
/* The most the decoder keeps: one request with its payload. */
#define NBD_IN_MAX (28u + NBD_MAX_REQUEST)

enum nbd_cmd {
    NBD_CMD_READ = 0,
    NBD_CMD_WRITE = 1,
    NBD_CMD_DISC = 2,
    NBD_CMD_FLUSH = 3,
    NBD_CMD_TRIM = 4,
    NBD_CMD_WRITE_ZEROES = 6,
};

enum nbd_cmd_flag {
    NBD_CMD_FLAG_FUA = 1 << 0,
    NBD_CMD_FLAG_NO_HOLE = 1 << 1,
};

/* Errors in a simple reply (the protocol's numbers, Linux's too). */
enum nbd_error {
    NBD_EPERM = 1,
    NBD_EIO = 5,
    NBD_ENOMEM = 12,
    NBD_EINVAL = 22,
    NBD_ENOSPC = 28,
};

enum nbd_phase { NBD_HELLO, NBD_OPTIONS, NBD_TRANSMISSION, NBD_ENDED };

struct nbd_conn {
    enum nbd_phase phase;
    uint64_t size; /* of the export, in bytes */
    bool readonly;
    bool no_zeroes;    /* the client said NBD_FLAG_C_NO_ZEROES */
    struct buf in;     /* bytes read, not yet decoded */
    size_t in_off;     /* of in, decoded already */
    uint64_t skip;     /* payload bytes of a refused WRITE still to drop */
    struct buf out;    /* bytes to send, in order */
    size_t out_off;    /* of out, sent already */
    const char *error; /* why the connection ended, if it did badly */
};

/* A request for the server to carry out. The decoder has checked it: the
 * command is one of READ, WRITE, FLUSH, TRIM, WRITE_ZEROES; the range is
 * inside the export, at most NBD_MAX_REQUEST bytes (and not empty) for the
 * commands that have one; a write is not to a read-only export; no unknown
 * flag is set. The server answers it with nbd_reply. */
struct nbd_req {
    uint16_t type, flags;
    uint64_t handle;
    uint64_t offset;
    uint32_t len;
    const unsigned char *data; /* WRITE: len bytes, valid until the next nbd_next */
};

/* A connection to a new client of an export of size bytes: the greeting is
 * queued in c->out. */
void nbd_init(struct nbd_conn *c, uint64_t size, bool readonly);
void nbd_release(struct nbd_conn *c);

/* The caller appends what it read from the client to c->in, then calls this
 * until it returns 0 or less. Returns 1 with the next request in *ret, 0
 * when more bytes are needed, -ECONNRESET when the client ended the session
 * (NBD_OPT_ABORT, NBD_CMD_DISC), -EPROTO when it broke the protocol
 * (c->error says how). Options, and requests refused for their form, are
 * answered here, in c->out. At most NBD_IN_MAX bytes need be buffered for
 * progress. */
int nbd_next(struct nbd_conn *c, struct nbd_req *ret);

/* How many bytes the decoder may take into c->in now without going over
 * NBD_IN_MAX (the caller reads no more). */
size_t nbd_room(const struct nbd_conn *c);
/* The bytes still to come of a WRITE whose payload has begun to arrive (or
 * of one being skipped); 0 otherwise. Reading no more than that ends the
 * input at a request's end, so nothing is left to move to the buffer's
 * front (docs/disks.md#throughput). */
size_t nbd_want(const struct nbd_conn *c);

/* A simple reply to the request with this handle, appended to out: error 0
 * and, for a READ, its len bytes of data; or an enum nbd_error (no data). */
void nbd_reply(struct buf *out, uint64_t handle, uint32_t error, const void *data, size_t len);
