/* The host end of one agent connection: sends requests, demultiplexes
 * replies and per-request chunk events by request id, and bounds every wait
 * with a deadline. Bytes from the guest are untrusted: a malformed frame
 * marks the channel broken with a clear reason, never more. */
#pragma once

#include <stdint.h>

#include "proto/wire.h"
#include "util.h"

/* Receives PV_EV_CHUNK data of one request, whenever the channel reads it
 * (possibly while another request is being waited for). */
typedef void (*chan_chunk_fn)(void *ctx, uint8_t stream, const void *p, size_t n);
/* Receives events that belong to no request (PV_EV_KMSG), whenever the
 * channel reads them. */
typedef void (*chan_event_fn)(void *ctx, uint16_t type, const void *p, size_t n);

/* One request in flight. Requests are found by id, never kept by pointer
 * outside chan.c: a reset or a broken channel frees them all. */
struct chan_req {
    struct chan_req *next;
    uint32_t id;
    uint16_t type;
    uint64_t route; /* the worker it went to, or 0 */
    chan_chunk_fn fn;
    void *ctx;
    bool done;
    int ret; /* once done: 0, a positive agent errno, or -errno */
    struct buf reply;
    struct pv_err err;
};

struct chan {
    int fd;
    int watch_fd; /* becomes readable when the peer is gone (a QEMU pidfd), or -1 */
    struct buf in;
    int64_t rx_ns; /* when the last bytes came (the hang watchdog's sign of life) */
    uint32_t next_id;
    struct chan_req *reqs;
    bool in_hello; /* bytes read are not frames yet: chan_hello resynchronises */
    /* The next Hello resend and the gap after it: a handshake that is
     * waited for in slices backs off across them (until one succeeds). */
    int64_t hello_next, hello_gap;
    bool broken;
    char why[256];
    /* from HelloOk */
    char *agent_version, *guest_os, *kernel_release;
    uint64_t features;
    uint32_t agent_pid;
    chan_event_fn on_event;
    void *event_ctx;
    /* Another fd to watch while waiting (QMP): when it is readable, gone()
     * says whether the peer went away meanwhile. -1 when unused. */
    int gone_fd;
    bool (*gone)(void *ctx);
};

void chan_init(struct chan *c, int fd, int watch_fd);
/* Close the fd and free everything (the watch fd is not ours). */
void chan_release(struct chan *c);

/* Handshake: send Hello (again every so often: a virtio-serial port drops
 * bytes sent before the guest opens it) and wait for HelloOk, skipping any
 * bytes that do not form a frame. */
int chan_hello(struct chan *c, int64_t deadline_ns, struct pv_err *err);

/* What c->in may hold: one whole frame of the largest size, and a read's worth. */
#define CHAN_IN_MAX (PV_HDR_SIZE + PV_MAX_PAYLOAD + 65536)

/* Send a request without waiting: returns its id (never 0), or 0 with err
 * set. route 0 sends it to the agent; another value to that worker of the
 * agent (wrapped in PV_VIA; its replies come back like any other). Its
 * chunks go to fn(ctx) as they come; its reply waits for chan_wait.
 * Requests written back to back travel in one round trip.
 * A request too large for a frame fails with -E2BIG before anything is
 * sent; a send that stops part way (timeout, error) breaks the channel,
 * since the agent would read the next request as the rest of this one.
 * While a send waits for room, frames that arrive are dispatched, so the
 * input buffer never holds more than CHAN_IN_MAX. */
uint32_t chan_start(struct chan *c, uint64_t route, uint16_t type, const struct buf *req,
                    int64_t deadline_ns, chan_chunk_fn fn, void *ctx, struct pv_err *err);
/* Wait for request id's reply. When it came: returns like chan_call, with
 * the payload appended to *ret, and the request is forgotten. At the
 * deadline: -ETIMEDOUT and the request stays in flight. */
int chan_wait(struct chan *c, uint32_t id, int64_t deadline_ns, struct buf *ret,
              struct pv_err *err);
/* Read and dispatch whatever arrives until the deadline or the first frame:
 * 1 when frames were handled, 0 at the deadline, -errno when broken. */
int chan_pump(struct chan *c, int64_t deadline_ns, struct pv_err *err);
/* The request, or NULL when it is not in flight (answered and collected,
 * dropped, or lost to a reset). */
struct chan_req *chan_find(struct chan *c, uint32_t id);
/* Forget a request; if the agent has not answered, cancel it there. */
void chan_drop(struct chan *c, uint32_t id);
/* Forget every request in flight (the agent restarted). */
void chan_drop_all(struct chan *c);
int chan_inflight(const struct chan *c);

/* One request (to route, as chan_start). Returns 0 with the reply payload in *ret (may be NULL),
 * a positive errno when the agent answered PV_ERR (err->msg is the agent's
 * message), or -errno when the call itself failed: -ETIMEDOUT at the
 * deadline (the request is cancelled in the guest), -EPIPE when the peer
 * went away, -EBADMSG when it sent garbage. */
int chan_call(struct chan *c, uint64_t route, uint16_t type, const struct buf *req,
              int64_t deadline_ns, chan_chunk_fn fn, void *ctx, struct buf *ret,
              struct pv_err *err);
