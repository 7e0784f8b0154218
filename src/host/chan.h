/* The host end of one agent connection: sends requests, demultiplexes
 * replies and per-request chunk events by request id, and bounds every wait
 * with a deadline. Bytes from the guest are untrusted: a malformed frame
 * marks the channel broken with a clear reason, never more. */
#pragma once

#include <stdint.h>

#include "proto/wire.h"
#include "util.h"

/* Receives PV_EV_CHUNK data for the call in progress. */
typedef void (*chan_chunk_fn)(void *ctx, uint8_t stream, const void *p, size_t n);
/* Receives events that belong to no request (PV_EV_KMSG), whenever the
 * channel reads them. */
typedef void (*chan_event_fn)(void *ctx, uint16_t type, const void *p, size_t n);

struct chan {
    int fd;
    int watch_fd; /* becomes readable when the peer is gone (a QEMU pidfd), or -1 */
    struct buf in;
    uint32_t next_id;
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

/* One request. Returns 0 with the reply payload in *ret (may be NULL),
 * a positive errno when the agent answered PV_ERR (err->msg is the agent's
 * message), or -errno when the call itself failed: -ETIMEDOUT at the
 * deadline (the request is cancelled in the guest), -EPIPE when the peer
 * went away, -EBADMSG when it sent garbage. */
int chan_call(struct chan *c, uint16_t type, const struct buf *req, int64_t deadline_ns,
              chan_chunk_fn fn, void *ctx, struct buf *ret, struct pv_err *err);
