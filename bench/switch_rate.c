/* Forwarding rate of the switch (src/host/net/): frames per second through
 * one pair of ports with no impairment, for a few frame sizes. A sender
 * thread writes into one port's QEMU end as fast as the switch takes them,
 * the main thread reads the other; frames the switch had to drop (the
 * reader too slow, its queue full) are printed too. `make bench` runs it:
 *
 *   build/switch_rate [seconds per size]
 */
#include <pthread.h>
#include <stdio.h>
#include <sys/socket.h>

#include "net/switch.h"

struct sender {
    int fd;
    size_t len;
    volatile bool stop;
    uint64_t sent;
};

static void *send_loop(void *arg)
{
    struct sender *s = arg;
    unsigned char f[1514];
    memset(f, 0xff, 6);                                   /* broadcast */
    memcpy(f + 6, "\x02\x00\x00\x00\x00\x01\x88\xb5", 8); /* source, EtherType */
    while (!s->stop)
        if (send(s->fd, f, s->len, 0) == (ssize_t)s->len)
            s->sent++;
    return NULL;
}

static void run(int seconds, size_t len)
{
    struct pv_err err = {0};
    char name[32];
    snprintf(name, sizeof(name), "rate%zu", len);
    int br = switch_bridge_add(name, &err), a, b;
    int pa = switch_port_add(br, "a", &a, &err), pb = switch_port_add(br, "b", &b, &err);
    if (br < 0 || pa < 0 || pb < 0) {
        fprintf(stderr, "switch_rate: %s\n", err.msg);
        exit(1);
    }
    struct sender s = {.fd = a, .len = len};
    pthread_t t;
    pthread_create(&t, NULL, send_loop, &s);
    /* The reader takes 64 frames a call, so that it is not what limits. */
    enum { BATCH = 64 };
    static unsigned char f[BATCH][1514];
    struct mmsghdr m[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i] = (struct iovec){f[i], sizeof(f[i])};
        m[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
    }
    struct timeval tv = {0, 100000};
    setsockopt(b, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    uint64_t got = 0;
    struct switch_counters ca0;
    switch_counters(pa, &ca0);
    int64_t start = now_ns(), end = start + seconds * 1000000000LL;
    while (now_ns() < end) {
        int n = recvmmsg(b, m, BATCH, MSG_WAITFORONE, NULL);
        if (n > 0)
            got += (uint64_t)n;
    }
    double secs = (double)(now_ns() - start) / 1e9;
    struct switch_counters ca;
    switch_counters(pa, &ca);
    s.stop = true;
    /* The sender may wait in send for room: reading frees it. */
    while (pthread_tryjoin_np(t, NULL) != 0)
        while (recv(b, f[0], sizeof(f[0]), MSG_DONTWAIT) > 0) {
        }
    struct switch_counters cb;
    switch_counters(pb, &cb);
    printf("%5zu-byte frames: %8.0f frames/s forwarded, %8.0f delivered (%.1f MB/s), "
           "%llu dropped for a full queue\n",
           len, (ca.tx_packets - ca0.tx_packets) / secs, got / secs, got * len / secs / 1e6,
           (unsigned long long)cb.errors);
    switch_bridge_del(br);
    close(a);
    close(b);
}

int main(int argc, char **argv)
{
    int seconds = argc > 1 ? atoi(argv[1]) : 3;
    size_t sizes[] = {64, 512, 1514};
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
        run(seconds, sizes[i]);
    return 0;
}
