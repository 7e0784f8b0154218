/* The guest agent's core. agent_serve() takes any connected fd (a
 * virtio-serial port, a vsock or, in host-side tests and `--vmm local`, one
 * end of a socketpair) and serves the protocol of proto/wire.h until the peer
 * goes away. Handlers return 0 after replying, or -errno, which the core
 * turns into a PV_ERR reply. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <poll.h>
#include <sys/types.h>

#include "proto/wire.h"

struct agent_opts {
    bool follow_kmsg;       /* stream the kernel log to the host (PV_EV_KMSG) */
    bool allow_power;       /* PV_POWEROFF may power the machine off (false on the host) */
    bool resync;            /* a byte stream that outlives the peer (virtio-serial): on
                               garbage, wait for the next Hello instead of quitting */
    bool worker;            /* a worker (worker.c): no handshake, no workers of its own */
    const char *worker_exe; /* the binary workers run (NULL: /proc/self/exe) */
    bool test_hostile;      /* serve PV_TEST_MISBEHAVE (provium.test_hostile=1; hostile.c) */
};

struct run;
struct tail;
struct worker;
struct net_wait;

struct agent {
    int fd;
    struct agent_opts opts;
    struct buf in, out;
    bool hello_done;
    bool quit;
    bool poweroff_pending;
    int poweroff_how;
    int sigfd;
    int kmsg; /* /dev/kmsg, followed after the handshake; -1 if not */
    struct run *runs;
    uint64_t next_handle; /* the last PV_SPAWN handle given out */
    struct tail *tails;
    struct worker *workers;
    uint64_t next_worker;       /* the last PV_WORKER handle given out */
    struct net_wait *net_waits; /* PV_NET_CONFIG requests waiting for their NIC */
};

/* Serve fd until the peer hangs up (returns 0) or a fatal error (-errno). */
int agent_serve(int fd, const struct agent_opts *opts);
/* The agent's end of its line to the PID-1 shim, for PV_POWER_BUTTON (main.c);
 * -1 when no shim watches the button. */
extern int agent_button_fd;

/* Replies and events; payload may be NULL when len is 0. These queue bytes
 * and may block (polling the transport) while the queue is over its limit. */
void agent_send(struct agent *a, uint16_t type, uint32_t id, const void *payload, size_t len);
void agent_send_ok(struct agent *a, uint32_t id, const struct buf *payload);
void agent_send_err(struct agent *a, uint32_t id, int errnum, const char *fmt, ...) PV_PRINTF(4, 5);
void agent_send_chunk(struct agent *a, uint32_t id, uint8_t stream, const void *p, size_t n);
/* Raw bytes, frame or not (hostile.c breaks the protocol on purpose):
 * queued after what is pending, then written out, waiting up to
 * deadline_ms (a now_ms() value) for the host to read. 0, -ETIMEDOUT when
 * bytes are left queued at the deadline, or -errno when the transport
 * failed. */
int agent_send_raw(struct agent *a, const void *p, size_t n, int64_t deadline_ms);
/* PV_OK carrying one field. */
void agent_reply_u32(struct agent *a, uint32_t id, uint32_t v);
void agent_reply_u64(struct agent *a, uint32_t id, uint64_t v);
void agent_reply_bytes(struct agent *a, uint32_t id, const void *p, size_t n);
/* Replies wait in a queue the host has not read yet: producers of bulk
 * data (tails) hold back. */
bool agent_congested(struct agent *a);
/* A PV_OK from another thread (sys.c). Dropped when a's session has ended;
 * true when bytes are left for the loop to send (wake it). */
bool agent_send_from_thread(struct agent *a, uint32_t id, const struct buf *payload);

/* Handlers: fs.c, proc.c, sys.c, worker.c, net.c. */
typedef int (*agent_handler)(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_read_file(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_write_file(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_stat(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_run(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_spawn(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_wait(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_signal(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_proc_status(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_stdin(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_pty_resize(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_tail(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_cancel(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_syscall(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_open(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_fread(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_fwrite(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_seek(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_close(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_listdir(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_mkdir(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_unlink(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_rename(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_clock(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_freshen(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_read_mem(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_write_mem(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_worker(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_via(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_worker_end(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_net_config(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_net_route(struct agent *a, uint32_t id, struct pv_rd *r);
int agent_op_test_misbehave(struct agent *a, uint32_t id, struct pv_rd *r);

/* sys.c: syscall threads reply themselves; they wake the loop through an
 * eventfd it polls when output is left to send. */
int sys_pollfd(void);
void sys_completions(struct agent *a);

/* A child's environment (proc.c): the agent's own (unless cleared) with
 * the KEY=VALUE entries of set replacing same-named ones. Free the array,
 * not the strings. */
char **agent_env(const char **set, uint32_t nset, bool clear);

/* proc.c: the event-loop hooks for running processes. */
int proc_pollfds(struct agent *a, struct pollfd *fds, int max, int64_t *deadline_ms);
void proc_events(struct agent *a, struct pollfd *fds, int n);
void proc_reap(struct agent *a);
void proc_timeouts(struct agent *a);
void proc_kill_all(struct agent *a);
void proc_sweep(struct agent *a);
bool proc_backlog(struct agent *a, uint64_t handle, int stream, const struct buf **out, bool *open);

/* worker.c: the workers' sockets, polled by the loop. */
int worker_pollfds(struct agent *a, struct pollfd *fds, int max, int64_t *deadline_ms);
void worker_events(struct agent *a, struct pollfd *fds, int n);
/* A child was reaped: true when it was a worker (its requests are answered). */
bool worker_reaped(struct agent *a, pid_t pid, int status);
void worker_kill_all(struct agent *a);

/* net.c: PV_NET_CONFIG requests wait in the loop for their interface to
 * appear. net_deadline lowers *deadline_ms to the next check (0: none is
 * waiting); net_checks answers those whose NIC came or whose time is up;
 * net_cancel forgets one without an answer (PV_CANCEL); net_forget_all
 * at the end of the session. */
void net_deadline(struct agent *a, int64_t *deadline_ms);
void net_checks(struct agent *a);
void net_cancel(struct agent *a, uint32_t id);
void net_forget_all(struct agent *a);
/* A PV_NET_CONFIG request's fields, checked (0), or -EBADMSG / -EINVAL
 * with the reason in why (net.c; the fuzz target calls it directly, as the
 * handler would configure the machine it runs on). */
struct net_config_req {
    uint8_t mac[6];
    uint32_t ipv4; /* network order; 0: none */
    uint32_t prefix;
    uint32_t flags; /* enum pv_net_flags */
    uint32_t wait_ms;
};
int net_config_decode(struct pv_rd *r, struct net_config_req *req, char *why, size_t whylen);
/* A PV_NET_ROUTE request's fields, checked (0), or -EBADMSG / -EINVAL with
 * the reason in why (net.c; called directly by the fuzz target, as the
 * handler would change the routes of the machine it runs on). */
struct net_route_req {
    uint32_t dst; /* network order, no bit set past the prefix */
    uint32_t prefix;
    uint32_t gateway; /* network order, nonzero */
    uint32_t flags;   /* enum pv_route_flags */
};
int net_route_decode(struct pv_rd *r, struct net_route_req *req, char *why, size_t whylen);

/* modules.c: load the modules a list file of the overlay names (one path a
 * line, dependencies first; "?path" for one the guest does without). 0, or
 * -errno when the list cannot be read; each module that fails adds a line
 * to why, with the kernel's own words when it logged any, and starting
 * with MODULES_FATAL unless the module was optional. */
#define MODULES_FATAL "fatal: "
int modules_load(const char *listfile, struct buf *why);

/* stream.c: PV_TAIL sources, polled by the loop; process streams are fed
 * by proc.c. */
int stream_pollfds(struct agent *a, struct pollfd *fds, int max, int64_t *deadline_ms);
void stream_events(struct agent *a, struct pollfd *fds, int n);
void stream_proc_data(struct agent *a, uint64_t handle, int which, const void *p, size_t n);
void stream_proc_end(struct agent *a, uint64_t handle, int which);
void stream_cancel(struct agent *a, uint32_t id);
void stream_close_all(struct agent *a);
