/* libFuzzer target for the host's decoding of guest bytes (chan.c): the
 * input is everything "the agent" ever sends, followed by EOF. The host
 * runs a handshake, then a Ping, and a ReadFile and a Tail in flight
 * together (replies routed by id), on whatever is left. Any
 * input must end in a result or a clean error, never a crash, a leak or a
 * hang (the EOF ends every wait long before a deadline). */
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "host/chan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Far more than a socket buffer could take without blocking is pointless. */
#define FUZZ_CHAN_MAX (64u << 10)

struct fuzz_chan_sink {
    uint64_t bytes, sum;
};

static void fuzz_chan_chunk(void *ctx, uint8_t stream, const void *p, size_t n)
{
    struct fuzz_chan_sink *s = ctx;
    const uint8_t *b = p;
    /* Touch every byte, so a chunk pointing outside its frame trips ASan. */
    for (size_t i = 0; i < n; i++)
        s->sum += b[i];
    s->bytes += n;
    s->sum += stream;
}

/* The input always ends in EOF, so no wait may end at its deadline; every
 * other failure marks the channel broken; an agent errno is an errno. */
static void fuzz_chan_check(const struct chan *c, int r, const struct pv_err *err)
{
    if (r == -ETIMEDOUT)
        abort();
    if (r < 0 && !c->broken)
        abort();
    if (r > 0 && (r > 4095 || err->code != r))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    /* sv[1] plays the guest: it has said everything it will say. */
    size_t off = 0, len = MIN(size, (size_t)FUZZ_CHAN_MAX);
    while (off < len) {
        ssize_t w = send(sv[1], data + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    /* Keep sv[1] open so that the host's requests still have somewhere to go. */
    shutdown(sv[1], SHUT_WR);

    struct chan c;
    struct pv_err err = {0};
    chan_init(&c, sv[0], -1);
    int r = chan_hello(&c, now_ns() + 200 * 1000000LL, &err);
    fuzz_chan_check(&c, r, &err);
    if (r > 0 || (r == 0 && (!c.agent_version || !c.guest_os || !c.kernel_release)))
        abort();

    /* Drive the call path over what is left, whatever happened so far. */
    struct fuzz_chan_sink sink = {0};
    struct buf req = BUF_INIT, reply = BUF_INIT;
    c.broken = false;
    r = chan_call(&c, 0, PV_PING, NULL, now_ns() + 1000 * 1000000LL, fuzz_chan_chunk, &sink, &reply,
                  &err);
    fuzz_chan_check(&c, r, &err);

    c.broken = false;
    struct pv_wr w = {&req};
    pv_put_str(&w, "/fuzz/file");
    int64_t d = now_ns() + 1000 * 1000000LL;
    uint32_t id2 = chan_start(&c, 0, PV_READ_FILE, &req, d, fuzz_chan_chunk, &sink, &err);
    uint32_t id3 = chan_start(&c, 0, PV_TAIL, &req, d, fuzz_chan_chunk, &sink, &err);
    if (id3) {
        r = chan_wait(&c, id3, d, &reply, &err);
        fuzz_chan_check(&c, r, &err);
    }
    if (id2) {
        r = chan_wait(&c, id2, d, &reply, &err);
        fuzz_chan_check(&c, r, &err);
    }
    chan_drop_all(&c);

    buf_release(&req);
    buf_release(&reply);
    chan_release(&c);
    close(sv[1]);
    return 0;
}
