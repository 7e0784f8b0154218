/* One virtual machine: its QEMU process, QMP and agent connections, state
 * machine and guest operations. No Lua here (src/host/lua/l_vm.c binds it). */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "chan.h"
#include "qemu.h"
#include "qmp.h"

enum vm_state { VM_CREATED, VM_BOOTED, VM_PAUSED, VM_SHUTDOWN, VM_DEAD };

/* Everything a boot needs, resolved from the profile and boot opts. */
struct vm_boot {
    char *kernel, *initrd, *cmdline;
    char **disks; /* NULL-terminated, may be NULL */
    bool *disk_ro; /* per disk: attach read-only (else a writable, discarded snapshot) */
    uint64_t memory;
    int cpus;
    double agent_timeout; /* seconds */
    bool has_rng_seed;
    uint64_t rng_seed;
    char *modules_dir; /* the profile's lib/modules/<version> tree, or NULL */
};
void vm_boot_release(struct vm_boot *b);
void vm_boot_copy(struct vm_boot *dst, const struct vm_boot *src);

struct vm {
    char *name, *profile;
    enum vm_state state;
    pid_t pid;
    int pidfd;
    char *dir;
    bool hvc_primary; /* the guest's console is hvc0 (else ttyS0) */
    struct qmp qmp;
    struct chan chan;
    int64_t boot_ns;   /* when QEMU started */
    int64_t ready_ns;  /* when the agent answered */
    uint32_t agent_gen; /* bumped at each handshake: a worker of an older agent is gone */
    uint64_t charged;   /* counted in vm_globals.memory_in_use while QEMU runs */
    bool announced;     /* vm_spawned went out: vm_shutdown follows when QEMU stops */
    bool from_boot_cache; /* the last boot resumed a cached one (vm_resume_boot) */
    bool quiet;           /* the next boot is not announced (the boot cache's saving boot) */
    uint32_t cid;
    char *exit_reason; /* why the VM is dead */
    int kmsg_fd;       /* kmsg.log, the guest's kernel log as the agent streams it */
    char *modules_dir; /* from the boot: where vm:modprobe finds modules */
    struct vm_boot plan; /* what it was booted (or restored) with, for snapshots */
    struct vm *next_live;
};

/* Process-wide settings, set once by main/runner. */
struct vm_globals {
    char *rundir;
    enum accel accel;         /* resolved: KVM or TCG */
    enum transport transport; /* resolved */
    const char *machine;
    double timeout_scale; /* 1 under KVM, larger under TCG */
    int64_t op_deadline_ns; /* the running test's deadline, 0 = none */
    /* This file's claim (docs/running.md): the memory its VMs may use at
     * once, QEMU's share counted; 0 = no limit. */
    uint64_t claim_memory;
    uint32_t claim_cpus;
    bool claim_declared; /* from provium:claim (else the default for files without) */
    uint64_t memory_in_use;
    const char *file; /* the test file, as displayed (for events) */
    const char *snapshot_dir; /* where vm:snapshot() with no path writes (NULL: rundir) */
};
extern struct vm_globals vm_globals;

struct vm *vm_new(const char *name, const char *profile);
/* Kill QEMU if it runs and free everything. NULL is fine. */
void vm_free(struct vm *vm);
const char *vm_state_name(enum vm_state s);

/* Start QEMU and wait for the agent's handshake. On failure the VM is dead
 * and err ends with the last 40 console lines. */
int vm_boot(struct vm *vm, const struct vm_boot *b, struct pv_err *err);
/* Graceful: the agent syncs and powers off; QEMU is killed if it lingers. */
int vm_shutdown(struct vm *vm, struct pv_err *err);
/* SIGKILL QEMU now. */
void vm_kill(struct vm *vm);
int vm_reset(struct vm *vm, struct pv_err *err);
int vm_pause(struct vm *vm, struct pv_err *err);
int vm_resume(struct vm *vm, struct pv_err *err);
int vm_power_button(struct vm *vm, struct pv_err *err);
/* Save the running machine to path (docs/snapshots.md): a header saying
 * what it was booted with, then QEMU's migration stream. The VM goes on. */
int vm_snapshot(struct vm *vm, const char *path, struct pv_err *err);
/* Start a created or shut-down VM from a snapshot of the same profile,
 * machine, accelerator and QEMU; the agent picks up where it was. */
int vm_restore(struct vm *vm, const char *path, struct pv_err *err);
/* The boot cache's halves (src/host/bootcache.c). vm_save_boot boots a
 * created or shut-down VM cold with plan b and saves it into the directory
 * dir, stopping it: its RAM as the sparse file dir/ram, the rest as the
 * snapshot dir/vm.snap, and the boot's logs. Returns 0 when saved, 1 when
 * it booted but could not be saved (err says why), -errno when the boot
 * failed.
 * vm_resume_boot boots a VM with plan b by resuming such a directory, its
 * RAM mapped copy-on-write, and the directory's logs become the VM's. */
int vm_save_boot(struct vm *vm, const struct vm_boot *b, const char *dir, struct pv_err *err);
int vm_resume_boot(struct vm *vm, const char *dir, const struct vm_boot *b, struct pv_err *err);
/* Round trip to the agent. */
int vm_ping(struct vm *vm, struct pv_err *err);

struct vm_run_req {
    const char *const *argv;
    const char *const *env; /* KEY=VALUE */
    bool env_clear;
    const char *cwd;
    const char *stdin_data;
    size_t stdin_len;
    uint32_t timeout_ms;
};
#define VM_OUTPUT_CAP (64ull << 20)
struct vm_run_result {
    int status; /* enum pv_run_status */
    int exit_code;
    int signal;
    struct buf out, err;
    uint64_t out_total, err_total;
};
void vm_run_result_release(struct vm_run_result *r);
int vm_run(struct vm *vm, const struct vm_run_req *req, struct vm_run_result *res,
           struct pv_err *err);
/* vm:run_async: start the command; the agent keeps its output until
 * vm_wait, which returns like vm_run (timeout_ms 0: none; at the timeout the
 * agent SIGKILLs it: status timed out). The handle names it meanwhile. */
int vm_spawn(struct vm *vm, const struct vm_run_req *req, uint64_t *handle, uint32_t *pid,
             struct pv_err *err);
int vm_wait(struct vm *vm, uint64_t handle, uint32_t timeout_ms, struct vm_run_result *res,
            struct pv_err *err);

struct vm_stat {
    int type; /* enum pv_ftype */
    uint32_t perm, uid, gid, nlink;
    uint64_t size, ino;
    int64_t mtime_ns;
};
/* These return 0, a positive guest errno, or -errno (see chan_call).
 * vm_write_file: mode VM_DEFAULT_MODE creates files 0644 (umask applies) and
 * leaves an existing file's mode alone; any other mode is set exactly. */
#define VM_DEFAULT_MODE 0xffffffffu
int vm_read_file(struct vm *vm, const char *path, struct buf *out, struct pv_err *err);
int vm_write_file(struct vm *vm, const char *path, const void *data, size_t len, uint32_t mode,
                  bool append, struct pv_err *err);
int vm_stat(struct vm *vm, const char *path, bool nofollow, struct vm_stat *st, struct pv_err *err);

/* Format /dev/kmsg records ("prio,seq,usec,flags;text\n" each, then
 * " KEY=value" lines) as dmesg prints them, appending to out. The bytes come
 * from the guest: anything goes, nothing is trusted. */
void vm_kmsg_format(const void *p, size_t n, struct buf *out);

/* The guest's kernel log as the agent forwarded it from /dev/kmsg (every
 * level, whatever the console shows), formatted like dmesg. A vm_ping()
 * first makes sure everything logged before it has arrived. */
int vm_kernel_log(struct vm *vm, struct buf *out);

/* A raw system call run by the agent (see src/agent/sys.c for the shape).
 * bufs are copied in, and out again after the call. */
struct vm_sys_ptr {
    uint32_t buf, slot;
};
struct vm_sys_nested {
    uint32_t parent, child, offset;
};
struct vm_syscall_req {
    int64_t nr;
    int64_t args[6];
    uint32_t nargs;
    const char *bufs[64];
    size_t lens[64];
    uint32_t nbufs;
    const struct vm_sys_ptr *ptrs;
    uint32_t nptrs;
    const struct vm_sys_nested *nested;
    uint32_t nnested;
};
struct vm_syscall_res {
    int64_t ret;
    int err; /* errno when ret == -1, else 0 */
    struct buf out[64];
    uint32_t nout;
};
void vm_syscall_res_release(struct vm_syscall_res *res);
int vm_syscall(struct vm *vm, const struct vm_syscall_req *req, struct vm_syscall_res *res,
               struct pv_err *err);
/* The same in two halves (vm:syscall_async): start returns the request id
 * (0 with err set); finish waits up to timeout_s (0: the test's deadline)
 * and returns -ETIMEDOUT leaving the call in flight. */
uint32_t vm_syscall_start(struct vm *vm, const struct vm_syscall_req *req, struct pv_err *err);
int vm_syscall_finish(struct vm *vm, uint32_t id, double timeout_s, struct vm_syscall_res *res,
                      struct pv_err *err);
/* One request of any type to a booted VM, bounded by timeout_s (scaled; 0:
 * only the test's deadline). Returns like chan_call; a dead QEMU becomes
 * the whole story with the console tail. */
int vm_call(struct vm *vm, const char *op, uint16_t type, const struct buf *req, double timeout_s,
            struct buf *reply, struct pv_err *err);

/* Encoders and decoders of single requests, for vm:batch (which sends
 * many before it reads any reply). vm_run_chunk collects a Run's or a
 * Wait's output into a vm_run_result. */
void vm_encode_run(struct buf *b, const struct vm_run_req *req);
void vm_run_chunk(void *ctx, uint8_t stream, const void *p, size_t n);
int vm_decode_status(struct vm *vm, const struct buf *reply, struct vm_run_result *res,
                     struct pv_err *err);
int vm_decode_stat(struct vm *vm, const struct buf *reply, struct vm_stat *st, struct pv_err *err);
void vm_encode_syscall(struct buf *b, const struct vm_syscall_req *req);
int vm_decode_syscall(struct vm *vm, const struct buf *reply, struct vm_syscall_res *res,
                      struct pv_err *err);

/* Requests left in flight (async syscalls, streams): vm_start sends one and
 * returns its id (0 with err set); vm_finish waits for its reply like
 * vm_call, or returns -ETIMEDOUT leaving it in flight; vm_pump reads what
 * arrives for up to timeout_s (1: something came, 0: nothing, -errno). */
uint32_t vm_start(struct vm *vm, const char *op, uint16_t type, const struct buf *req,
                  chan_chunk_fn fn, void *ctx, struct pv_err *err);
int vm_finish(struct vm *vm, uint32_t id, double timeout_s, struct buf *reply, struct pv_err *err);
int vm_pump(struct vm *vm, double timeout_s, struct pv_err *err);

/* The agent's own memory; a bad address is EFAULT (a positive return). */
int vm_read_mem(struct vm *vm, uint64_t addr, uint32_t len, struct buf *out, struct pv_err *err);
int vm_write_mem(struct vm *vm, uint64_t addr, const void *data, size_t len, struct pv_err *err);

/* The primary console's socket (ttyS0 or hvc0), which QEMU listens on. */
void vm_console_socket(const struct vm *vm, char *out, size_t n);
/* Console: the primary console's log (ttyS0 or hvc0), whole or last lines. */
int vm_console_log(struct vm *vm, struct buf *out);
void vm_console_tail(struct vm *vm, int lines, struct buf *out);

/* Kill every QEMU this process started (signal-safe; for fatal paths). */
void vm_kill_all(void);
/* In a forked child: forget the parent's VMs (never kill them from here). */
void vm_forget_all(void);
/* Kill every running VM and mark it dead with the reason (not signal-safe). */
void vm_kill_everything(const char *why);
