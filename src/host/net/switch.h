/* The L2 switch of a file's process: every bridge of the file, its ports
 * (one per guest NIC), learning, flooding, partitions, impairments, counters
 * and captures (docs/networks.md).
 *
 * A port is one end of a socketpair(AF_UNIX, SOCK_DGRAM): the other end is
 * QEMU's `-netdev dgram,local.type=fd`, one Ethernet frame per datagram. No
 * name on any file system and nothing on the host's network: when the
 * process dies, the kernel closes both ends.
 *
 * One thread forwards for every bridge (epoll over the ports, a timerfd for
 * delayed frames, an eventfd to wake it); every function below may be called
 * from the file's Lua thread while it runs, and takes effect on the next
 * frame. Bridges and ports are small integer handles (never reused while the
 * process lives), so a stale handle is an error, not a use after free. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

/* Per port, from the guest's side: tx is what the guest sent (the switch
 * received), rx what the switch delivered to it. */
struct switch_counters {
    uint64_t rx_packets, rx_bytes;
    uint64_t tx_packets, tx_bytes;
    uint64_t dropped; /* frames for this port dropped by an impairment, a partition or isolation */
    uint64_t errors;  /* frames lost at this port: queue full, a send that failed */
};

/* What a frame meets on its way. 0 everywhere means none. A whole-bridge
 * value and a from->to value combine: latencies add, losses compound
 * (1 - (1 - a)(1 - b)), the lower bandwidth wins. */
struct switch_impair {
    int64_t latency_ns;
    uint32_t loss_ppm; /* parts per million of frames dropped */
    uint64_t bps;      /* bits per second; 0: unlimited */
};

/* The seed of every loss decision: each direction (bridge, from VM, to VM)
 * draws from its own generator, seeded from this and the three names, so a
 * run with the same seed drops the same frames. Call before the first port. */
void switch_seed(uint64_t seed);

/* A bridge (starts the forwarding thread at the first). Returns its handle
 * (>= 0) or -errno. */
int switch_bridge_add(const char *name, struct pv_err *err);
/* Closes its ports (QEMU sees its NIC's peer go) and its captures. */
void switch_bridge_del(int bridge);

/* A port for VM `vm` on `bridge`. Returns its handle (>= 0) and in
 * *ret_qemu_fd the end QEMU gets (O_CLOEXEC: the caller hands it to QEMU
 * and closes it), or -errno. */
int switch_port_add(int bridge, const char *vm, int *ret_qemu_fd, struct pv_err *err);
void switch_port_del(int port);

enum switch_port_flag {
    SWITCH_DOWN = 1 << 0,     /* link down: nothing in or out */
    SWITCH_ISOLATED = 1 << 1, /* nothing to or from the other ports of its bridge */
};
int switch_port_flags(int port, unsigned flags);

/* Frames from `from` to `to` (ports of one bridge) are dropped: a directional
 * partition. */
int switch_block(int from, int to, bool blocked);

/* Impairments of the whole bridge (from = to = -1) or of one direction. */
int switch_impair(int bridge, int from, int to, const struct switch_impair *im);
/* Every block and impairment of the bridge lifted. */
int switch_reset(int bridge);

int switch_counters(int port, struct switch_counters *ret);

/* A capture of every frame the bridge forwards (port = -1), or of the
 * frames to and from one port: the read end of a pipe (O_CLOEXEC,
 * O_NONBLOCK) carrying a classic pcap savefile (Ethernet link type, the
 * header first). The switch never waits for the reader: a record that does
 * not fit in the pipe is dropped (switch_capture_lost counts them). Closing
 * the fd ends the capture. Returns the fd or -errno. */
int switch_capture(int bridge, int port, struct pv_err *err);
uint64_t switch_capture_lost(int fd);

/* In a child forked without exec (a fixture's build): forget the parent's
 * switch, whose thread does not exist here, and close its sockets. */
void switch_forget(void);
