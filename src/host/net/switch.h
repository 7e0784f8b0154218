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

/* Per port, from the guest's side: tx is what the guest sent (every frame
 * of a valid size the switch read from the port, whatever became of it), rx
 * what the switch delivered to it (handed to its socket).
 *
 * dropped counts, on the destination port, frames a rule stopped on their
 * way to it: either port down or isolated, a block from the sender to it,
 * loss, or a bandwidth backlog over 1 s; a flooded frame counts once at
 * each port it did not reach. A frame a port sends while down counts once,
 * at that port. A frame to the port it came from (its destination was
 * learned there) is filtered, as a switch does, and counts nowhere.
 *
 * errors counts frames lost for want of room or a working peer: at the
 * destination, its queue full (1024 frames or 4 MiB waiting) or a send that
 * failed (QEMU gone); at the source, a datagram shorter than an Ethernet
 * header (14 bytes) or longer than 65553 bytes (not counted in tx). */
struct switch_counters {
    uint64_t rx_packets, rx_bytes;
    uint64_t tx_packets, tx_bytes;
    uint64_t dropped;
    uint64_t errors;
};

/* What a frame meets on its way. 0 everywhere means none. A whole-bridge
 * value and a from->to value combine: latencies add, losses compound
 * (1 - (1 - a)(1 - b)), the lower bandwidth wins. Each direction (from,
 * to) has its own link: a whole-bridge bandwidth limits each direction to
 * it, not the bridge's sum. A frame's bits (the Ethernet frame as QEMU
 * sends it, no preamble or FCS) take bits/bps on the link after those
 * before it; a frame that would wait more than 1 s for the link is
 * dropped. Latency counts from the end of that transmission. The frames of
 * one direction never overtake each other, even when its latency drops. */
struct switch_impair {
    int64_t latency_ns;
    uint32_t loss_ppm; /* parts per million of frames dropped */
    uint64_t bps;      /* bits per second; 0: unlimited */
};

/* The seed of every loss decision: each direction (bridge, from VM, to VM)
 * draws from its own generator, seeded from this and the three names, so a
 * run with the same seed drops the same frames of a direction, whatever the
 * other directions carry. Call before the first port (a direction made
 * before starts again from the new seed). Two ports of one VM on one bridge
 * share their directions' sequences. */
void switch_seed(uint64_t seed);

/* Every function taking a handle returns -ENOENT for one that is not (or
 * no longer) a live bridge or port, and -EINVAL for ports of different
 * bridges or a port given twice. */

/* A bridge (starts the forwarding thread at the first). Returns its handle
 * (> 0), -EEXIST when a bridge has that name, or -errno. */
int switch_bridge_add(const char *name, struct pv_err *err);
/* Closes its ports (QEMU sees its NIC's peer go), frees the frames they
 * held, and ends its captures (their readers see the end of the file). A
 * stale handle is ignored. */
void switch_bridge_del(int bridge);

/* A port for VM `vm` on `bridge`. Returns its handle (>= 0) and in
 * *ret_qemu_fd the end QEMU gets (O_CLOEXEC: the caller hands it to QEMU
 * and closes it), or -errno. */
int switch_port_add(int bridge, const char *vm, int *ret_qemu_fd, struct pv_err *err);
/* Closes the port, frees the frames queued for it, ends its captures.
 * Frames it sent that wait at other ports are still delivered. */
void switch_port_del(int port);

/* Replaces the port's flags (unknown bits: -EINVAL). Frames already queued
 * for the port are not affected. */
enum switch_port_flag {
    SWITCH_DOWN = 1 << 0,     /* link down: nothing in or out */
    SWITCH_ISOLATED = 1 << 1, /* nothing to or from the other ports of its bridge */
};
int switch_port_flags(int port, unsigned flags);

/* Frames from `from` to `to` (ports of one bridge) are dropped: a directional
 * partition. */
int switch_block(int from, int to, bool blocked);

/* Impairments of the whole bridge (from = to = -1) or of one direction;
 * they replace the previous ones and apply to the frames that arrive from
 * now on (frames already waiting keep their release time). -EINVAL for a
 * latency below 0 or over an hour, or a loss over 1000000 ppm. */
int switch_impair(int bridge, int from, int to, const struct switch_impair *im);
/* Every block and impairment of the bridge lifted (port flags are kept). */
int switch_reset(int bridge);

int switch_counters(int port, struct switch_counters *ret);
/* What waits in the switch for this port (delayed, or refused by its full
 * socket): at most 1024 frames and 4 MiB. */
int switch_queued(int port, uint64_t *ret_frames, uint64_t *ret_bytes);

/* A capture of the bridge (port = -1): every frame the switch reads from
 * any of its ports, once, when it reads it, whether it is then delivered
 * or dropped (a port that is down sends nothing: its frames are not
 * there). Or of one port: the frames it sent (as above) and the frames
 * delivered to it, when they are handed to its socket.
 *
 * Returns the read end of a pipe (O_CLOEXEC, O_NONBLOCK; 1 MiB when the
 * user's limits allow) carrying a classic pcap savefile: magic 0xa1b2c3d4
 * in the host's byte order, version 2.4, snaplen 65535, link type 1
 * (Ethernet), then a record per frame stamped with CLOCK_REALTIME in
 * microseconds. The switch never waits for the reader: a record that does
 * not fit in the pipe is dropped (switch_capture_lost counts them); one the
 * pipe took in part is finished before any other. Closing the fd ends the
 * capture; deleting its bridge or port ends the file (a record cut short by
 * that is possible when the pipe was full). Returns the fd or -errno. */
int switch_capture(int bridge, int port, struct pv_err *err);
/* The records of the capture read from fd that were dropped because its
 * pipe was full; 0 for an fd that is no capture. Still answers after the
 * capture's bridge or port was deleted, while the fd is open. */
uint64_t switch_capture_lost(int fd);

/* In a child forked without exec (a fixture's build): forget the parent's
 * switch, whose thread does not exist here, close its sockets and pipes
 * (the parent's are untouched) and free its memory; the child may then
 * make bridges of its own. fork() waits for the forwarding thread to leave
 * its lock (pthread_atfork), so the child's copy is whole. Call it before
 * any other switch_* function in the child. */
void switch_forget(void);
