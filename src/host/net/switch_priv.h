/* What the files of the switch share (switch.c, forward.c, impair.c,
 * mac.c, pcap.c) and nothing else includes: the state behind the handles of
 * switch.h. Every field below is guarded by sw_state.lock, held by the
 * forwarding thread while it handles an event and by every switch_* call
 * (docs/architecture.md#the-switch). */
#pragma once

#include <pthread.h>
#include <sys/queue.h>
#include <sys/types.h>

#include "evloop.h"
#include "net/switch.h"

/* An Ethernet header is 14 bytes; the largest frame is a 65535-byte IP
 * datagram behind a header and one 802.1Q tag. */
#define SW_FRAME_MIN 14
#define SW_FRAME_MAX (65535 + 14 + 4)
/* What waits for one destination port, all sources together: a guest that
 * floods a port whose QEMU does not read costs at most this much memory. */
#define SW_QUEUE_FRAMES 1024
#define SW_QUEUE_BYTES (4u << 20)
/* A bandwidth limit holds frames back like a router's buffer: a frame that
 * would wait longer than this for its direction's link is dropped. */
#define SW_BW_WAIT_MAX_NS 1000000000LL
/* MAC learning, per bridge. */
#define SW_MAC_ENTRIES 1024
#define SW_MAC_BUCKETS 256
#define SW_MAC_AGE_NS (300 * 1000000000LL)
/* Longest latency accepted, so that now + bridge + direction stays far
 * inside int64_t. */
#define SW_LATENCY_MAX_NS (3600 * 1000000000LL)
/* Captures that ended with their bridge or port but whose reader still
 * holds the pipe: kept (their lost count) up to this many. */
#define SW_ENDED_CAPTURES 64

/* What epoll's data carries: the kind in the high half, a handle in the low
 * half (never a pointer: the object may be gone when the event is read). */
enum sw_ev {
    SW_EV_PORT = 1,
    SW_EV_CAPTURE,
    SW_EV_TIMER,
    SW_EV_WAKE,
};
#define SW_EV(kind, id) (((uint64_t)(kind) << 32) | (uint32_t)(id))

struct sw_frame {
    TAILQ_ENTRY(sw_frame) link;
    int64_t release_ns; /* not sent before this (CLOCK_MONOTONIC) */
    uint32_t len;
    unsigned char data[];
};
TAILQ_HEAD(sw_frames, sw_frame);

/* One direction between two ports of a bridge, made when first needed. */
struct sw_dir {
    struct sw_dir *next; /* in the source port's list */
    struct sw_port *to;
    bool blocked;
    struct switch_impair im;
    uint64_t prng;           /* splitmix64 state of the loss decisions */
    int64_t link_free_ns;    /* bandwidth: when the link is done with what it holds */
    int64_t last_release_ns; /* a frame never leaves before the one before it */
};

struct sw_port {
    int id;
    struct sw_bridge *br;
    char *vm;
    int fd; /* the switch's end: O_NONBLOCK */
    unsigned flags;
    bool want_out; /* EPOLLOUT asked: QEMU's socket was full */
    bool hup;      /* taken out of epoll after EPOLLHUP */
    struct switch_counters c;
    struct sw_frames queue; /* by release time */
    uint32_t queued_frames;
    size_t queued_bytes;
    struct sw_dir *dirs;
    TAILQ_ENTRY(sw_port) link;
};
TAILQ_HEAD(sw_ports, sw_port);

struct sw_mac {
    unsigned char addr[6];
    int16_t next; /* in its bucket, or in the free list; -1 ends */
    struct sw_port *port;
    int64_t seen_ns;
};

struct sw_macs {
    int16_t bucket[SW_MAC_BUCKETS];
    int16_t free;
    int64_t full_scan_ns; /* when a full table last looked for expired entries */
    struct sw_mac e[SW_MAC_ENTRIES];
};

struct sw_bridge {
    int id;
    char *name;
    struct switch_impair im;
    struct sw_ports ports;
    struct sw_macs macs;
    TAILQ_ENTRY(sw_bridge) link;
};

struct sw_capture {
    int id;
    int fd;    /* the write end; -1 once ended */
    ino_t ino; /* the pipe's, to find it from the reader's fd */
    int bridge;
    int port; /* -1: the whole bridge */
    uint64_t lost;
    unsigned char *pend; /* the rest of a record the pipe took in part */
    size_t pend_len, pend_off;
    TAILQ_ENTRY(sw_capture) link;
};

struct sw_state {
    pthread_mutex_t lock;
    struct evloop loop;
    int64_t timer_ns; /* what timerfd is armed at; 0: disarmed */
    int thread_err;   /* the thread stopped on this errno */
    unsigned char *rxbuf;
    TAILQ_HEAD(, sw_bridge) bridges;
    TAILQ_HEAD(, sw_capture) captures;
    unsigned ended_captures;
};

/* switch.c */
/* The state locked, or NULL when there is none yet (every handle is then
 * stale). */
struct sw_state *sw_lock(void);
void sw_unlock(struct sw_state *s);
int sw_handle_new(void);
struct sw_bridge *sw_bridge_find(struct sw_state *s, int id);
struct sw_port *sw_port_find(struct sw_state *s, int id);
extern uint64_t sw_seed_value;

/* forward.c */
void *sw_thread(void *arg);

/* impair.c */
struct sw_dir *sw_dir_get(struct sw_port *from, struct sw_port *to);
void sw_dir_seed(struct sw_dir *d, const struct sw_port *from);
void sw_dirs_drop_to(struct sw_bridge *br, struct sw_port *to);
void sw_dirs_free(struct sw_port *p);
/* Whether a frame from->to survives loss and the bandwidth backlog; when it
 * does, *ret_release_ns is when it may be sent (the direction's state is
 * then committed). */
bool sw_impair_frame(struct sw_dir *d, uint32_t len, int64_t now, int64_t *ret_release_ns);
/* Whether p's queue has no room for len more bytes. */
bool sw_queue_full(const struct sw_port *p, uint32_t len);
/* Queue a copy at p, in release order (after sw_queue_full said no). */
void sw_queue_add(struct sw_port *p, const void *data, uint32_t len, int64_t release_ns);
void sw_queue_pop(struct sw_port *p);
void sw_queue_clear(struct sw_port *p);

/* mac.c */
void sw_mac_init(struct sw_macs *t);
void sw_mac_learn(struct sw_macs *t, const unsigned char *addr, struct sw_port *p, int64_t now);
struct sw_port *sw_mac_lookup(struct sw_macs *t, const unsigned char *addr, int64_t now);
void sw_mac_forget_port(struct sw_macs *t, const struct sw_port *p);

/* pcap.c */
enum sw_cap_dir { SW_CAP_IN, SW_CAP_OUT };
/* Record a frame: IN when the switch reads it from port p (bridge and p's
 * captures), OUT when it delivers it to p (p's captures). */
void sw_capture_frame(struct sw_state *s, struct sw_port *p, enum sw_cap_dir dir, const void *data,
                      uint32_t len);
void sw_capture_event(struct sw_state *s, int id, uint32_t events);
/* End the captures of a bridge (port -1: of the bridge and all its ports) or
 * of one port. */
void sw_captures_end(struct sw_state *s, int bridge, int port);
void sw_captures_close_all(struct sw_state *s);
