#include "chan.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>

void chan_init(struct chan *c, int fd, int watch_fd)
{
    *c = (struct chan){
        .fd = fd, .watch_fd = watch_fd, .rx_ns = now_ns(), .next_id = 1, .gone_fd = -1};
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

void chan_release(struct chan *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    buf_release(&c->in);
    chan_drop_all(c);
    free(c->agent_version);
    free(c->guest_os);
    free(c->kernel_release);
    c->agent_version = c->guest_os = c->kernel_release = NULL;
}

static int broken(struct chan *c, struct pv_err *err, int code, const char *fmt, ...)
    PV_PRINTF(4, 5);
static int broken(struct chan *c, struct pv_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->why, sizeof(c->why), fmt, ap);
    va_end(ap);
    c->broken = true;
    return pv_err_set(err, code, "%s", c->why);
}

static int wait_ms(int64_t deadline_ns)
{
    if (!deadline_ns)
        return -1;
    /* rounded up: a wait that ends early would report a timeout before the
     * deadline, which the test's own timeout would then not recognise */
    int64_t left = (deadline_ns - now_ns() + 999999) / 1000000;
    return left <= 0 ? 0 : (int)MIN(left, 3600 * 1000);
}

/* Wait until fd has events or the deadline passes; read what arrives into
 * c->in. Returns 1 when bytes arrived, 0 on deadline, -errno otherwise. */
static int pump(struct chan *c, short extra, int64_t deadline_ns, struct pv_err *err)
{
    /* A full buffer is not read further: a guest cannot grow it. */
    short in = c->in.len < CHAN_IN_MAX - 65536 ? POLLIN : 0;
    struct pollfd p[3] = {
        {c->fd, (short)(in | extra), 0}, {c->watch_fd, POLLIN, 0}, {c->gone_fd, POLLIN, 0}};
    int n = poll(p, 3, wait_ms(deadline_ns));
    if (n < 0)
        return errno == EINTR ? 1 : -errno;
    if (n == 0)
        return 0;
    if (p[0].revents & (in | POLLHUP | POLLERR)) {
        ssize_t r = buf_read(&c->in, c->fd);
        if (r > 0) {
            c->rx_ns = now_ns();
            return 1;
        }
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            return 1;
        return broken(c, err, EPIPE, "the agent closed the connection");
    }
    if (c->watch_fd >= 0 && (p[1].revents & POLLIN))
        return broken(c, err, EPIPE, "the VM exited");
    if (c->gone_fd >= 0 && (p[2].revents & (POLLIN | POLLHUP)) && c->gone && c->gone(c->event_ctx))
        return broken(c, err, EPIPE, "the agent in the guest went away (its port closed)");
    return 1;
}

static int dispatch_ready(struct chan *c, struct pv_err *err);

static int send_all(struct chan *c, const struct buf *frame, int64_t deadline_ns,
                    struct pv_err *err)
{
    size_t off = 0;
    while (off < frame->len) {
        ssize_t w = write(c->fd, frame->data + off, frame->len - off);
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR)
            return broken(c, err, EPIPE, "write to the agent: %s", strerror(errno));
        /* The agent may be writing to us meanwhile: keep reading, or both
         * sides block on full buffers; what is whole is dispatched. */
        int r = pump(c, POLLOUT, deadline_ns, err);
        if (r > 0 && !c->in_hello && (r = dispatch_ready(c, err)) >= 0)
            r = 1;
        if (r < 0)
            return r;
        if (r == 0 && off > 0)
            return broken(c, err, ETIMEDOUT,
                          "timed out part way through sending a %zu-byte request to the agent",
                          frame->len);
        if (r == 0)
            return pv_err_set(err, ETIMEDOUT, "timed out sending a request to the agent");
    }
    return 0;
}

static uint32_t new_id(struct chan *c)
{
    uint32_t id = c->next_id++;
    if (c->next_id == 0)
        c->next_id = 1;
    return id;
}

/* The size check comes first: nothing of a request too large is sent. */
static int check_size(const struct buf *req, uint64_t route, struct pv_err *err)
{
    size_t len = (req ? req->len : 0) + (route ? 16 : 0); /* PV_VIA adds u64, u32, u32 */
    if (len <= PV_MAX_PAYLOAD)
        return 0;
    return pv_err_set(err, E2BIG,
                      "the request is %zu bytes, over the %u MiB limit of one message to the "
                      "agent",
                      len, PV_MAX_PAYLOAD >> 20);
}

static int send_req(struct chan *c, uint32_t id, uint64_t route, uint16_t type,
                    const struct buf *req, int64_t deadline, struct pv_err *err)
{
    struct buf frame = BUF_INIT;
    if (route) {
        struct buf via = BUF_INIT;
        struct pv_wr w = {&via};
        pv_put_u64(&w, route);
        pv_put_u32(&w, type);
        pv_put_bytes(&w, req ? req->data : NULL, req ? req->len : 0);
        pv_frame(&frame, PV_VIA, id, via.data, via.len);
        buf_release(&via);
    } else {
        pv_frame(&frame, type, id, req ? req->data : NULL, req ? req->len : 0);
    }
    int r = send_all(c, &frame, deadline, err);
    buf_release(&frame);
    return r;
}

/* Take the next whole frame out of c->in. Returns 1 with *h and *ret_payload
 * (owned by the caller), 0 when more bytes are needed, -EBADMSG on garbage. */
static int next_frame(struct chan *c, struct pv_hdr *h, struct buf *payload, struct pv_err *err)
{
    if (c->in.len < PV_HDR_SIZE)
        return 0;
    const char *why;
    if (pv_hdr_decode((const uint8_t *)c->in.data, h, &why) < 0)
        return broken(c, err, EBADMSG, "the agent sent a malformed frame (%s)", why);
    if (h->version != PV_PROTO_VERSION)
        return broken(c, err, EBADMSG, "the agent sent a protocol version %u frame (expected %u)",
                      h->version, PV_PROTO_VERSION);
    if (c->in.len - PV_HDR_SIZE < h->len)
        return 0;
    buf_add(payload, c->in.data + PV_HDR_SIZE, h->len);
    buf_consume(&c->in, PV_HDR_SIZE + h->len);
    return 1;
}

/* Drop the noise before the first whole HelloOk or HelloErr frame in c->in
 * and say whether there is one (its header in *h). One pass with an offset:
 * consuming byte by byte would move the buffer once per false start. */
static bool hello_frame(struct chan *c, struct pv_hdr *h)
{
    const uint8_t *d = (const uint8_t *)c->in.data;
    size_t off = 0;
    bool whole = false;
    for (;;) {
        off += pv_sync_scan(d + off, c->in.len - off);
        if (c->in.len - off < PV_HDR_SIZE)
            break;
        const char *why;
        /* A stray magic must not make us wait for a bogus length. */
        if (pv_hdr_decode(d + off, h, &why) < 0 ||
            (h->type != PV_HELLO_OK && h->type != PV_HELLO_ERR) || h->len > 4096) {
            off++;
            continue;
        }
        whole = c->in.len - off - PV_HDR_SIZE >= h->len;
        break;
    }
    buf_consume(&c->in, off);
    return whole;
}

static int hello_ok(struct chan *c, struct pv_rd *r, struct pv_err *err)
{
    pv_get_u32(r);
    const char *av = pv_get_str(r), *os = pv_get_str(r), *rel = pv_get_str(r);
    uint64_t feat = pv_get_u64(r);
    uint32_t pid = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return broken(c, err, EBADMSG, "malformed HelloOk: %s", r->why);
    free(c->agent_version);
    free(c->guest_os);
    free(c->kernel_release);
    c->agent_version = xstrdup(av);
    c->guest_os = xstrdup(os);
    c->kernel_release = xstrdup(rel);
    c->features = feat;
    c->agent_pid = pid;
    return 0;
}

int chan_hello(struct chan *c, int64_t deadline_ns, struct pv_err *err)
{
    struct buf req = BUF_INIT;
    struct pv_wr w = {&req};
    pv_put_u32(&w, PV_PROTO_VERSION);
    int ret;
    c->in_hello = true;
    if (!c->hello_gap)
        c->hello_gap = 100 * 1000000LL;
    for (;;) {
        int64_t now = now_ns();
        /* A Hello waits in the transport until the agent opens its port, so
         * resends only cover a lost one: each doubles the gap (a guest
         * taking 2 s to boot got 18 Hellos when every 0.5 s slice of the
         * wait started again at 100 ms, and answered each). */
        if (now >= c->hello_next) {
            ret = send_req(c, new_id(c), 0, PV_HELLO, &req, deadline_ns, err);
            if (ret < 0)
                goto out;
            c->hello_next = now + c->hello_gap;
            c->hello_gap = MIN(c->hello_gap * 2, 1000 * 1000000LL);
        }
        struct pv_hdr h;
        if (hello_frame(c, &h)) {
            struct pv_rd r;
            pv_rd_init(&r, c->in.data + PV_HDR_SIZE, h.len);
            if (h.type == PV_HELLO_ERR) {
                uint32_t v = pv_get_u32(&r);
                ret = broken(c, err, EPROTONOSUPPORT,
                             "agent protocol version %u does not match provium's %u: %s", v,
                             PV_PROTO_VERSION, pv_get_str(&r));
                goto out;
            }
            if (h.version == PV_PROTO_VERSION) {
                ret = hello_ok(c, &r, err);
                if (ret == 0)
                    buf_consume(&c->in, PV_HDR_SIZE + h.len);
                goto out;
            }
            buf_consume(&c->in, PV_HDR_SIZE + h.len);
            continue;
        }
        int64_t until = MIN(c->hello_next, deadline_ns ? deadline_ns : c->hello_next);
        ret = pump(c, 0, until, err);
        if (ret < 0)
            goto out;
        if (ret == 0 && deadline_ns && now_ns() >= deadline_ns) {
            ret = pv_err_set(err, ETIMEDOUT, "no answer from the agent");
            goto out;
        }
    }
out:
    c->in_hello = false;
    if (ret == 0)
        c->hello_next = c->hello_gap = 0; /* the next handshake starts afresh */
    buf_release(&req);
    return ret;
}

static void cancel(struct chan *c, const struct chan_req *target)
{
    struct buf req = BUF_INIT;
    struct pv_wr w = {&req};
    pv_put_u32(&w, target->id);
    send_req(c, new_id(c), target->route, PV_CANCEL, &req, now_ns() + 1000000000LL, NULL);
    buf_release(&req);
}

struct chan_req *chan_find(struct chan *c, uint32_t id)
{
    for (struct chan_req *r = c->reqs; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

static void req_free(struct chan *c, uint32_t id)
{
    for (struct chan_req **pp = &c->reqs; *pp; pp = &(*pp)->next) {
        struct chan_req *r = *pp;
        if (r->id == id) {
            *pp = r->next;
            buf_release(&r->reply);
            free(r);
            return;
        }
    }
}

void chan_drop(struct chan *c, uint32_t id)
{
    struct chan_req *r = chan_find(c, id);
    if (!r)
        return;
    if (!r->done && !c->broken)
        cancel(c, r);
    req_free(c, id);
}

void chan_drop_all(struct chan *c)
{
    while (c->reqs)
        req_free(c, c->reqs->id);
}

int chan_inflight(const struct chan *c)
{
    int n = 0;
    for (const struct chan_req *r = c->reqs; r; r = r->next)
        n++;
    return n;
}

uint32_t chan_start(struct chan *c, uint64_t route, uint16_t type, const struct buf *req,
                    int64_t deadline_ns, chan_chunk_fn fn, void *ctx, struct pv_err *err)
{
    if (c->broken) {
        pv_err_set(err, EPIPE, "%s", c->why);
        return 0;
    }
    if (check_size(req, route, err) < 0)
        return 0;
    /* Known before it is sent: its chunks may arrive while the rest of it
     * is still being written (a large stdin that cat echoes). */
    struct chan_req *q = xcalloc(1, sizeof(*q));
    *q = (struct chan_req){
        .next = c->reqs, .id = new_id(c), .type = type, .route = route, .fn = fn, .ctx = ctx};
    c->reqs = q;
    uint32_t id = q->id;
    if (send_req(c, id, route, type, req, deadline_ns, err) < 0) {
        req_free(c, id);
        return 0;
    }
    return id;
}

static void finish(struct chan_req *q, int ret)
{
    q->done = true;
    q->ret = ret;
}

/* Route one frame to its request. Returns -errno when it breaks the channel. */
static int handle_frame(struct chan *c, const struct pv_hdr *h, const struct buf *payload,
                        struct pv_err *err)
{
    if (h->id == 0 && h->type == PV_EV_KMSG) {
        if (c->on_event)
            c->on_event(c->event_ctx, h->type, payload->data, payload->len);
        return 0;
    }
    struct chan_req *q = chan_find(c, h->id);
    if (!q || q->done)
        return 0; /* a late reply to a cancelled call, or a stray event */
    struct pv_rd rd;
    pv_rd_init(&rd, payload->data, payload->len);
    if (h->type == PV_EV_CHUNK) {
        uint8_t stream = pv_get_u8(&rd);
        size_t n;
        const void *p = pv_get_bytes(&rd, &n);
        if (pv_rd_done(&rd) < 0)
            return broken(c, err, EBADMSG, "malformed Chunk event: %s", rd.why);
        if (q->fn)
            q->fn(q->ctx, stream, p, n);
        return 0;
    }
    if (h->type == PV_OK) {
        buf_add(&q->reply, payload->data, payload->len);
        finish(q, 0);
        return 0;
    }
    if (h->type == PV_ERR) {
        uint32_t code = pv_get_u32(&rd);
        const char *msg = pv_get_str(&rd);
        if (pv_rd_done(&rd) < 0 || code == 0 || code > 4095)
            return broken(c, err, EBADMSG, "malformed Err reply");
        pv_err_set(&q->err, (int)code, "%s", msg);
        finish(q, (int)code);
        return 0;
    }
    return broken(c, err, EBADMSG, "unexpected %s frame (type %u) in reply to %s",
                  pv_type_name(h->type), h->type, pv_type_name(q->type));
}

/* Handle every whole frame in c->in: 1 when some were, 0 when none, -errno
 * when one broke the channel. */
static int dispatch_ready(struct chan *c, struct pv_err *err)
{
    struct buf payload = BUF_INIT;
    int handled = 0, r;
    for (;;) {
        struct pv_hdr h;
        buf_consume(&payload, payload.len);
        r = next_frame(c, &h, &payload, err);
        if (r == 1)
            r = handle_frame(c, &h, &payload, err);
        else
            break;
        if (r < 0)
            break;
        handled = 1;
    }
    buf_release(&payload);
    return r < 0 ? r : handled;
}

int chan_pump(struct chan *c, int64_t deadline_ns, struct pv_err *err)
{
    if (c->broken)
        return pv_err_set(err, EPIPE, "%s", c->why);
    for (;;) {
        int r = dispatch_ready(c, err);
        if (r != 0)
            return r;
        r = pump(c, 0, deadline_ns, err);
        if (r <= 0)
            return r;
    }
}

/* How long part of a frame may sit in c->in, once a wait's deadline has
 * passed, without another byte before the agent counts as stopped part way
 * through it. The agent writes whole frames, so a frame begun is finished
 * at the transport's pace (megabytes a second even under TCG); the false
 * alarm, a guest descheduled this long mid-frame, costs only that VM. */
#define CHAN_STALL_NS (3 * 1000000000LL)

/* At a deadline: a partial frame that gets no byte in CHAN_STALL_NS breaks
 * the channel, or the next request's reply would be read as the rest of it
 * (and that request would wait its whole deadline). 0 when bytes came (and
 * were dispatched) or nothing is pending; -errno when broken. */
static int check_stall(struct chan *c, struct pv_err *err)
{
    if (c->in_hello || c->broken || c->in.len == 0)
        return 0;
    size_t had = c->in.len;
    int64_t until = now_ns() + CHAN_STALL_NS;
    while (c->in.len == had) {
        int r = pump(c, 0, until, err);
        if (r < 0)
            return r;
        if (r > 0)
            continue;
        struct pv_hdr h = {0};
        const char *why;
        bool whole =
            had >= PV_HDR_SIZE && pv_hdr_decode((const uint8_t *)c->in.data, &h, &why) == 0;
        return broken(c, err, ETIMEDOUT,
                      "the agent stopped part way through a frame (%zu of %s%llu bytes came, "
                      "then nothing for %lld s)",
                      had, whole ? "" : "at least ",
                      whole ? (unsigned long long)PV_HDR_SIZE + h.len
                            : (unsigned long long)PV_HDR_SIZE,
                      CHAN_STALL_NS / 1000000000LL);
    }
    int r = dispatch_ready(c, err);
    return r < 0 ? r : 0;
}

int chan_wait(struct chan *c, uint32_t id, int64_t deadline_ns, struct buf *ret, struct pv_err *err)
{
    for (;;) {
        struct chan_req *q = chan_find(c, id);
        if (!q)
            return pv_err_set(err, EPIPE, "the request is gone (the agent restarted)");
        if (q->done) {
            int r = q->ret;
            if (r == 0 && ret)
                buf_add(ret, q->reply.data, q->reply.len);
            if (r > 0 && err)
                *err = q->err;
            req_free(c, id);
            return r;
        }
        int r = chan_pump(c, deadline_ns, err);
        if (r == 0 && (r = check_stall(c, err)) == 0 && !q->done)
            return pv_err_set(err, ETIMEDOUT, "%s timed out", pv_type_name(q->type));
        if (r < 0)
            return r;
    }
}

int chan_call(struct chan *c, uint64_t route, uint16_t type, const struct buf *req,
              int64_t deadline_ns, chan_chunk_fn fn, void *ctx, struct buf *ret, struct pv_err *err)
{
    uint32_t id = chan_start(c, route, type, req, deadline_ns, fn, ctx, err);
    if (!id)
        return err ? -err->code : -EPIPE;
    int r = chan_wait(c, id, deadline_ns, ret, err);
    if (r < 0)
        chan_drop(c, id);
    return r;
}
