/* libFuzzer target for the agent's request decoders, through its real
 * input path (agent_serve: framing, the handshake, dispatch): the first
 * byte picks a request type, the rest is its payload. The target sends a
 * Hello, that request and a Ping over a socketpair to agent_serve running
 * in this process, then hangs up; the agent must return cleanly, and have
 * answered the request at most once (once, unless the answer was still
 * queued at the hang-up), in well-formed frames.
 *
 * Only requests whose handlers leave this machine alone are sent: the ones
 * that look things up (Stat, ListDir, handles and workers that do not
 * exist, Cancel, PowerOff without the right to, a Hello again, a type the
 * agent does not know). Run, Spawn, WriteFile, MkDir, Unlink, Rename,
 * Clock, Syscall, WriteMem, the file handles (guest fds: here, the
 * fuzzer's own), Tail, Worker and Freshen would run, change or read what
 * their fields name on the host; their decoders are checked by
 * tests/unit/test_agent.c instead. NetConfig would configure one of this
 * machine's NICs, NetRoute its routing table: their decoders
 * (net_config_decode, net_route_decode: all the handlers read) are called
 * directly. */
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "agent/agent.h"
#include "feed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The last two are decoded only (net_config, net_route). */
static const uint16_t types[] = {
    PV_PING,       PV_STAT,           PV_LISTDIR, PV_PROC_STATUS, PV_WAIT,      PV_SIGNAL,
    PV_STDIN,      PV_CANCEL,         PV_VIA,     PV_WORKER_END,  PV_POWEROFF,  PV_HELLO,
    PV_PTY_RESIZE, PV_TEST_MISBEHAVE, 0x7777,     PV_NET_CONFIG,  PV_NET_ROUTE,
};

/* A NetConfig payload: decoded, or refused with a reason; what it accepts
 * is in range. */
static void net_config(const uint8_t *data, size_t size)
{
    struct pv_rd r;
    pv_rd_init(&r, data, size);
    struct net_config_req req;
    char why[128] = "";
    int e = net_config_decode(&r, &req, why, sizeof(why));
    if (e == 0 && (req.prefix > 32 || req.flags & ~(uint32_t)PV_NET_UP))
        abort();
    if (e != 0 && e != -EBADMSG && !(e == -EINVAL && why[0]))
        abort();
    if (e == -EBADMSG && !r.why)
        abort();
}

/* A NetRoute payload: decoded, or refused with a reason; what it accepts
 * is a network (no bit past the prefix) through a gateway. */
static void net_route(const uint8_t *data, size_t size)
{
    struct pv_rd r;
    pv_rd_init(&r, data, size);
    struct net_route_req req;
    char why[128] = "";
    int e = net_route_decode(&r, &req, why, sizeof(why));
    if (e == 0 && (req.prefix > 32 || req.flags & ~(uint32_t)PV_ROUTE_DELETE || !req.gateway ||
                   (req.prefix < 32 && ntohl(req.dst) << req.prefix)))
        abort();
    if (e != 0 && e != -EBADMSG && !(e == -EINVAL && why[0]))
        abort();
    if (e == -EBADMSG && !r.why)
        abort();
}

#define REQ_ID 2

/* Every frame the agent wrote: well-formed; returns how many answered
 * REQ_ID (Ok, Err or, for a Hello, HelloOk/HelloErr). */
static int answers(int fd)
{
    struct buf in = BUF_INIT;
    char tmp[65536];
    ssize_t n;
    while ((n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT)) > 0)
        buf_add(&in, tmp, (size_t)n);
    int count = 0;
    size_t off = 0;
    while (off < in.len) {
        struct pv_hdr h;
        const char *why;
        if (in.len - off < PV_HDR_SIZE ||
            pv_hdr_decode((const uint8_t *)in.data + off, &h, &why) < 0 ||
            in.len - off - PV_HDR_SIZE < h.len)
            abort(); /* the agent never sends a broken frame */
        if (h.id == REQ_ID)
            count++;
        off += PV_HDR_SIZE + h.len;
    }
    buf_release(&in);
    return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size - 1 > PV_MAX_PAYLOAD)
        return 0;
    uint16_t type = types[data[0] % ARRAY_SIZE(types)];
    if (type == PV_NET_CONFIG) {
        net_config(data + 1, size - 1);
        return 0;
    }
    if (type == PV_NET_ROUTE) {
        net_route(data + 1, size - 1);
        return 0;
    }
    struct buf msg = BUF_INIT, hello = BUF_INIT;
    struct pv_wr w = {&hello};
    pv_put_u32(&w, PV_PROTO_VERSION);
    pv_frame(&msg, PV_HELLO, 1, hello.data, hello.len);
    pv_frame(&msg, type, REQ_ID, data + 1, size - 1);
    pv_frame(&msg, PV_PING, 3, NULL, 0);

    struct fuzz_feed feed;
    fuzz_feed_start(&feed, (const uint8_t *)msg.data, msg.len);
    /* the feed's "host" end is the one read: here, the agent's */
    int r = agent_serve(feed.host, &(struct agent_opts){0});
    if (feed.threaded)
        pthread_join(feed.thread, NULL);
    feed.threaded = false;
    /* Exactly one answer, unless a long one (a big ListDir) was still
     * queued when the hang-up ended the session. */
    int n = answers(feed.peer);
    if (r != 0 || n > 1)
        abort();
    close(feed.host);
    fuzz_feed_join(&feed);
    buf_release(&msg);
    buf_release(&hello);
    return 0;
}
