/* Every request to a guest's agent, in one place: for each operation a
 * guest_encode_<op> (arguments -> request payload), a guest_decode_<op>
 * (reply payload -> typed result, every field checked: the guest is
 * hostile) and a guest_<op> that encodes, calls and decodes. vm:batch
 * reuses the encoders and decoders (src/host/lua/l_batch.c). The wire
 * format is src/proto/wire.h; the agent's handler of PV_X is agent_op_x
 * (src/agent/). No Lua here.
 *
 * A request larger than a frame (PV_MAX_PAYLOAD: a 17 MiB stdin, a huge
 * syscall buffer) fails with -E2BIG before anything is sent.
 *
 * Results: 0, or -errno with err filled. When the agent itself answered
 * with an errno (the guest's ENOENT, EACCES...), err->guest is set and
 * err->msg is the agent's message; otherwise the call failed on the host
 * side (-ETIMEDOUT, a dead VM: the whole story with the console tail). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "chan.h"
#include "proto/wire.h"
#include "util.h"

struct vm;

/* Where a request goes: the agent of vm, or one of its workers. Passed on
 * every call: a channel has no route of its own. */
struct target {
    struct vm *vm;
    uint64_t worker; /* 0: the agent itself */
};

/* "vm `a`" or "vm `a` worker 2", for messages. */
void guest_who(const struct target *t, char *out, size_t n);

/* The default deadlines of single operations, in seconds before the
 * accelerator's scale (docs/vms.md#deadlines). 0 means the operation waits
 * as long as the running test allows. */
#define GUEST_SHORT_S 30.0 /* ping, stat, clock, memory, file handles */
#define GUEST_FILE_S 120.0 /* read_file / write_file, per chunk */

/* ---- processes: Run, Spawn, Wait, Signal, ProcStatus, Stdin ---- */

struct guest_run_req {
    const char *const *argv;
    const char *const *env; /* KEY=VALUE */
    bool env_clear;
    const char *cwd;
    const char *stdin_data;
    size_t stdin_len;
    uint32_t timeout_ms;
    uint64_t output_cap; /* kept per stream by a spawned process; 0: GUEST_OUTPUT_CAP */
    bool pty;            /* one pseudo-terminal of rows x cols for stdin, stdout, stderr */
    uint16_t rows, cols;
};
/* Output kept per stream; the rest is counted (out_total, err_total). */
#define GUEST_OUTPUT_CAP (64ull << 20)
struct guest_run_result {
    int status; /* enum pv_run_status */
    int exit_code;
    int signal;
    struct buf out, err;
    uint64_t out_total, err_total;
};
void guest_run_result_release(struct guest_run_result *r);
/* A Run's or a Wait's chunks into a guest_run_result (ctx). */
void guest_run_chunk(void *ctx, uint8_t stream, const void *p, size_t n);
void guest_encode_run(struct buf *b, const struct guest_run_req *req);
int guest_decode_status(const struct buf *reply, struct guest_run_result *res, struct pv_err *err);

int guest_run(const struct target *t, const struct guest_run_req *req, struct guest_run_result *res,
              struct pv_err *err);
/* vm:run_async: the agent keeps the output until guest_wait (timeout_ms 0:
 * none; at it the agent SIGKILLs the process: status timed out). */
int guest_spawn(const struct target *t, const struct guest_run_req *req, uint64_t *ret_handle,
                uint32_t *ret_pid, struct pv_err *err);
int guest_wait(const struct target *t, uint64_t handle, uint32_t timeout_ms,
               struct guest_run_result *res, struct pv_err *err);
/* To the process group of handle; handle 0: every process of the agent. */
int guest_signal(const struct target *t, uint64_t handle, uint32_t sig, struct pv_err *err);
struct guest_proc_status {
    bool running;
    uint32_t pid;
    int status; /* enum pv_run_status, once not running */
    int exit_code;
    int signal;
    uint64_t out_total, err_total;
};
int guest_decode_proc_status(const struct buf *reply, struct guest_proc_status *st,
                             struct pv_err *err);
int guest_proc_status(const struct target *t, uint64_t handle, struct guest_proc_status *st,
                      struct pv_err *err);
int guest_stdin(const struct target *t, uint64_t handle, const void *data, size_t len, bool close,
                uint32_t *ret_accepted, struct pv_err *err);
/* The window size of a PTY process's terminal (ENOTTY for another). */
int guest_pty_resize(const struct target *t, uint64_t handle, uint16_t rows, uint16_t cols,
                     struct pv_err *err);

/* ---- files: ReadFile, WriteFile, Stat, Open..Close, ListDir, MkDir, Unlink, Rename ---- */

/* Data travels in pieces of at most this much per WriteFile request. */
#define GUEST_WRITE_PIECE ((size_t)PV_CHUNK * 8)
/* The default limit of vm:read_file, vm:pull_file and file:read_all
 * (docs/files.md): a guest cannot make provium hold more unasked. */
#define GUEST_READ_MAX_DEFAULT (1ull << 30)

/* The file's bytes into out, at most max of them: a larger file is -EFBIG
 * with a message naming the limit. */
int guest_read_file(const struct target *t, const char *path, uint64_t max, struct buf *out,
                    struct pv_err *err);
/* The default mode: a new file 0644 (umask applies), an existing one keeps
 * its mode; any other mode is set exactly. */
#define GUEST_DEFAULT_MODE 0xffffffffu
/* One WriteFile request: the piece at data of len bytes, written at offset
 * off of the whole write (0: the first piece truncates unless append). */
void guest_encode_write_piece(struct buf *b, const char *path, const void *data, size_t len,
                              uint32_t mode, bool append, size_t off);
/* A write of any size, in pieces of GUEST_WRITE_PIECE. */
int guest_write_file(const struct target *t, const char *path, const void *data, size_t len,
                     uint32_t mode, bool append, struct pv_err *err);

struct guest_stat {
    int type; /* enum pv_ftype */
    uint32_t perm, uid, gid, nlink;
    uint64_t size, ino;
    int64_t mtime_ns;
};
void guest_encode_stat(struct buf *b, const char *path, bool nofollow);
int guest_decode_stat(const struct buf *reply, struct guest_stat *st, struct pv_err *err);
int guest_stat(const struct target *t, const char *path, bool nofollow, struct guest_stat *st,
               struct pv_err *err);

/* bits: PV_OPEN_*; returns the handle (the guest fd). */
int guest_open(const struct target *t, const char *path, uint32_t bits, uint32_t perm,
               uint64_t *ret_handle, struct pv_err *err);
/* At most max bytes (capped at GUEST_FREAD_MAX) appended to out; none at EOF. */
#define GUEST_FREAD_MAX (4u << 20)
int guest_fread(const struct target *t, uint64_t handle, uint32_t max, struct buf *out,
                struct pv_err *err);
/* Writes at most GUEST_FWRITE_MAX bytes of data; *ret_n says how many. */
#define GUEST_FWRITE_MAX (8u << 20)
int guest_fwrite(const struct target *t, uint64_t handle, const void *data, size_t len,
                 uint32_t *ret_n, struct pv_err *err);
/* whence: PV_SEEK_SET, PV_SEEK_CUR, PV_SEEK_END */
int guest_seek(const struct target *t, uint64_t handle, int64_t off, uint32_t whence,
               uint64_t *ret_pos, struct pv_err *err);
int guest_close(const struct target *t, uint64_t handle, struct pv_err *err);

struct guest_dirent {
    const char *name; /* points into the reply */
    int type;         /* enum pv_ftype */
};
/* Calls fn for each entry of a ListDir reply, in order; -EBADMSG when the
 * reply is malformed (fn may have been called for the entries before). */
int guest_decode_listdir(const struct buf *reply,
                         void (*fn)(void *ctx, const struct guest_dirent *e), void *ctx,
                         struct pv_err *err);
void guest_encode_path(struct buf *b, const char *path); /* ReadFile, ListDir, Unlink */
int guest_listdir(const struct target *t, const char *path, struct buf *reply, struct pv_err *err);
void guest_encode_mkdir(struct buf *b, const char *path, uint32_t perm, bool parents);
int guest_mkdir(const struct target *t, const char *path, uint32_t perm, bool parents,
                struct pv_err *err);
int guest_unlink(const struct target *t, const char *path, struct pv_err *err);
void guest_encode_rename(struct buf *b, const char *from, const char *to);
int guest_rename(const struct target *t, const char *from, const char *to, struct pv_err *err);

/* ---- system calls, memory, the clock ---- */

struct guest_sys_ptr {
    uint32_t buf, slot;
};
struct guest_sys_nested {
    uint32_t parent, child, offset;
};
struct guest_syscall_req {
    int64_t nr;
    int64_t args[PV_SYS_MAX_ARGS];
    uint32_t nargs;
    const char *bufs[PV_SYS_MAX_BUFS];
    size_t lens[PV_SYS_MAX_BUFS];
    uint32_t nbufs;
    const struct guest_sys_ptr *ptrs;
    uint32_t nptrs;
    const struct guest_sys_nested *nested;
    uint32_t nnested;
};
struct guest_syscall_res {
    int64_t ret;
    int err; /* errno when ret == -1, else 0 */
    struct buf out[PV_SYS_MAX_BUFS];
    uint32_t nout;
};
void guest_syscall_res_release(struct guest_syscall_res *res);
void guest_encode_syscall(struct buf *b, const struct guest_syscall_req *req);
int guest_decode_syscall(const struct buf *reply, struct guest_syscall_res *res,
                         struct pv_err *err);
/* A blocking call waits as long as the running test allows. */
int guest_syscall(const struct target *t, const struct guest_syscall_req *req,
                  struct guest_syscall_res *res, struct pv_err *err);
/* vm:syscall_async in two halves: start returns the request id (0 with err
 * set); finish waits up to timeout_s (0: the test's deadline) and returns
 * -ETIMEDOUT leaving the call in flight. */
uint32_t guest_syscall_start(const struct target *t, const struct guest_syscall_req *req,
                             struct pv_err *err);
int guest_syscall_finish(const struct target *t, uint32_t id, double timeout_s,
                         struct guest_syscall_res *res, struct pv_err *err);

/* The agent's own memory; len at most GUEST_MEM_MAX. */
#define GUEST_MEM_MAX (1u << 20)
int guest_read_mem(const struct target *t, uint64_t addr, uint32_t len, struct buf *out,
                   struct pv_err *err);
int guest_write_mem(const struct target *t, uint64_t addr, const void *data, size_t len,
                    struct pv_err *err);

/* op: PV_CLOCK_GET, PV_CLOCK_SET, PV_CLOCK_ADVANCE; *ret_now: realtime ns after. */
int guest_clock(const struct target *t, uint32_t op, int64_t ns, int64_t *ret_now,
                struct pv_err *err);

/* A boot resumed from the boot cache made fresh (docs/boot-cache.md). */
struct guest_file {
    const char *path;
    uint32_t mode;
    const void *content;
    size_t len;
};
struct guest_freshen {
    int64_t realtime_ns;
    const void *seed;
    size_t seed_len;
    const struct guest_file *files;
    size_t nfiles;
};
int guest_freshen(const struct target *t, const struct guest_freshen *f, struct pv_err *err);

/* ---- network interfaces: NetConfig ---- */

struct guest_net_config {
    uint8_t mac[6];   /* the NIC's, as QEMU was given it */
    uint32_t ipv4;    /* network byte order; 0: none (removes the one set before) */
    uint32_t prefix;  /* 0..32 */
    bool up;          /* link up, else down */
    uint32_t wait_ms; /* for the NIC to appear (a hot-plugged one is probed asynchronously) */
};
/* An interface name: at most 15 bytes and the NUL (the kernel's IFNAMSIZ). */
#define GUEST_IFNAME_MAX 16
void guest_encode_net_config(struct buf *b, const struct guest_net_config *c);
/* The reply's interface name into ifname: 1..15 bytes, none of them a
 * blank, a control character, '/' or ':' (what the kernel refuses), else
 * -EBADMSG. */
int guest_decode_net_config(const struct buf *reply, char ifname[GUEST_IFNAME_MAX],
                            struct pv_err *err);
/* Configure the NIC whose MAC is c->mac (the agent's net.c): its name into
 * ifname. When no such NIC appeared within c->wait_ms the error is
 * -ETIMEDOUT with a message naming the VM, the MAC and the wait, and asking
 * whether the kernel has virtio_net (err->guest is not set: the message is
 * whole). */
int guest_net_config(const struct target *t, const struct guest_net_config *c,
                     char ifname[GUEST_IFNAME_MAX], struct pv_err *err);

/* ---- network interfaces: NetRoute ---- */

struct guest_net_route {
    uint32_t dst;     /* network byte order, no bit set past the prefix */
    uint32_t prefix;  /* 0..32; 0.0.0.0/0 is the default route */
    uint32_t gateway; /* network byte order, nonzero */
    bool del;         /* delete the route dst/prefix via gateway, else add or replace it */
};
void guest_encode_net_route(struct buf *b, const struct guest_net_route *rt);
/* The reply carries nothing: 0 when it is empty, else -EBADMSG. */
int guest_decode_net_route(const struct buf *reply, struct pv_err *err);
/* Add or replace (one route per destination: the gateway changes) or
 * delete the guest's IPv4 route (the agent's net.c). The guest picks the
 * interface whose subnet holds the gateway: ENETUNREACH when none that is
 * up has it; deleting a route that is not there: ESRCH. */
int guest_net_route(const struct target *t, const struct guest_net_route *rt, struct pv_err *err);

/* ---- workers ---- */

struct guest_worker_req {
    uint32_t flags; /* PV_WK_* */
    uint32_t uid, gid;
    const uint32_t *groups;
    size_t ngroups;
    uint64_t caps;
    const char *cwd;
    const char *const *env; /* KEY=VALUE */
    size_t nenv;
};
int guest_worker(const struct target *t, const struct guest_worker_req *req, uint64_t *ret_handle,
                 uint32_t *ret_pid, struct pv_err *err);
/* The agent hangs up on the worker; *ret_status is its wait status. */
int guest_worker_end(const struct target *t, uint64_t worker, int *ret_status, struct pv_err *err);

/* ---- streams: Tail ---- */

struct guest_tail_req {
    enum pv_tail kind;
    const char *path; /* PV_TAIL_PATH */
    int64_t offset;
    bool from_end;
    uint64_t fd_or_handle; /* PV_TAIL_FD, PV_TAIL_PROC */
    uint32_t stream;       /* PV_TAIL_PROC: PV_STDOUT or PV_STDERR */
};
/* Starts the stream: its chunks go to fn(ctx) until guest_drop. Returns the
 * request id once the agent has accepted it (a ping behind it proves the
 * agent started it), or 0 with err set (the guest's ENOENT, EBADF...). */
uint32_t guest_tail(const struct target *t, const struct guest_tail_req *req, chan_chunk_fn fn,
                    void *ctx, struct pv_err *err);

int guest_ping(const struct target *t, struct pv_err *err);
/* Make the guest's ACPI power button ready for a press: *ret_state is an
 * enum pv_button. */
int guest_power_button(const struct target *t, uint32_t *ret_state, struct pv_err *err);

/* ---- test only ---- */

/* PV_TEST_MISBEHAVE: the agent of a VM booted with provium.test_hostile=1
 * breaks the protocol as mode (enum pv_misbehave) says; amount and ms as
 * in wire.h (0: the mode's defaults). Waits timeout_s (scaled as every
 * operation's deadline). For tests/vm/hostile.test.lua only. */
int guest_test_misbehave(const struct target *t, uint32_t mode, uint64_t amount, uint32_t ms,
                         double timeout_s, struct pv_err *err);

/* ---- requests in flight (vm:batch, streams, pending calls) ---- */

/* Send one request without waiting: its id, or 0 with err set. */
uint32_t guest_start(const struct target *t, const char *op, uint16_t type, const struct buf *req,
                     chan_chunk_fn fn, void *ctx, struct pv_err *err);
/* Wait for its reply (timeout_s 0: the test's deadline), appended to
 * *reply: 0, or -errno (err->guest when the agent answered an errno);
 * -ETIMEDOUT leaves it in flight. */
int guest_finish(const struct target *t, uint32_t id, double timeout_s, struct buf *reply,
                 struct pv_err *err);
/* Forget a request (cancelled in the guest if it has not ended). */
void guest_drop(const struct target *t, uint32_t id);
