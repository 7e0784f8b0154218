/* libFuzzer target for the host's decoding of guest bytes (chan.c): the
 * input is everything "the agent" ever sends, followed by EOF, whatever its
 * size (feed.h writes it as the host reads). The host runs a handshake,
 * then a Ping, and a ReadFile and a Tail in flight together (replies routed
 * by id), on whatever is left; Kmsg events on the way go through the
 * host's formatting of the kernel log (vm_kmsg_format), as in a VM. Any
 * input must end in a result or a clean error, never a crash, a leak or a
 * hang (the EOF ends every wait long before a deadline). */
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "feed.h"
#include "host/chan.h"
#include "host/vm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* No wait ends at its deadline (the input ends in EOF first). Longer
 * deadlines made the smoke run three times slower (5.1 s against 1.6 s over
 * the corpus), for reasons of the resend timing, not of the bytes. */
#define FUZZ_HELLO_WAIT (200 * 1000000LL)
#define FUZZ_CHAN_WAIT (1000 * 1000000LL)

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

/* PV_EV_KMSG, as vm.c's on_kmsg: every formatted line ends in '\n'. */
static void fuzz_chan_kmsg(void *ctx, uint16_t type, const void *p, size_t n)
{
    struct fuzz_chan_sink *s = ctx;
    struct buf out = BUF_INIT;
    if (type != PV_EV_KMSG)
        abort();
    vm_kmsg_format(p, n, &out);
    if (out.len && out.data[out.len - 1] != '\n')
        abort();
    s->bytes += out.len;
    buf_release(&out);
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
    struct fuzz_feed feed;
    fuzz_feed_start(&feed, data, size);

    struct chan c;
    struct pv_err err = {0};
    struct fuzz_chan_sink sink = {0}, kmsg = {0};
    chan_init(&c, feed.host, -1);
    c.on_event = fuzz_chan_kmsg;
    c.event_ctx = &kmsg;
    int r = chan_hello(&c, now_ns() + FUZZ_HELLO_WAIT, &err);
    fuzz_chan_check(&c, r, &err);
    if (r > 0 || (r == 0 && (!c.agent_version || !c.guest_os || !c.kernel_release)))
        abort();

    /* Drive the call path over what is left, whatever happened so far. */
    struct buf req = BUF_INIT, reply = BUF_INIT;
    c.broken = false;
    r = chan_call(&c, 0, PV_PING, NULL, now_ns() + FUZZ_CHAN_WAIT, fuzz_chan_chunk, &sink, &reply,
                  &err);
    fuzz_chan_check(&c, r, &err);

    c.broken = false;
    struct pv_wr w = {&req};
    pv_put_str(&w, "/fuzz/file");
    int64_t d = now_ns() + FUZZ_CHAN_WAIT;
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
    fuzz_feed_join(&feed);
    return 0;
}
