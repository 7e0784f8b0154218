/* One virtual machine: its QEMU process, QMP and agent connections, state
 * machine, and the one door every agent request goes through (vm_call; the
 * requests themselves are in guest.c). No Lua here (src/host/lua/l_vm.c
 * binds it). */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "chan.h"
#include "hang.h"
#include "qemu.h"
#include "qmp.h"

enum vm_state { VM_CREATED, VM_BOOTED, VM_PAUSED, VM_SHUTDOWN, VM_DEAD };

/* A NIC of the VM, on a bridge (docs/networks.md). NICs are never
 * unplugged: a detach takes the link down. */
#define VM_MAX_NICS 16
#define VM_NIC_SLOT0 0x10 /* the PCI slot of the first NIC; the next ones follow */
struct vm_nic {
    int bridge; /* the switch's handle of the bridge (net/switch.h) */
    char bridge_name[64];
    uint8_t mac[6];
};

/* A disk attached to the VM (docs/disks.md), served by provium's NBD
 * server (disk/disk.h). Disks are plugged in after the profile's, each in
 * its own PCI slot, VM_DISK_SLOT0 onwards. */
#define VM_MAX_DISKS 8
#define VM_DISK_SLOT0 0x8
#define VM_DISK_ID_MAX 20 /* virtio-blk's serial holds 20 bytes */
struct vm_disk {
    int disk; /* the server's handle of the disk (disk/disk.h) */
    char id[VM_DISK_ID_MAX + 1];
    uint8_t slot;
    bool readonly;
};

/* Everything a boot needs, resolved from the profile and boot opts. */
struct vm_boot {
    char *kernel, *initrd, *cmdline;
    char **disks;  /* NULL-terminated, may be NULL */
    bool *disk_ro; /* per disk: attach read-only (else a writable, discarded snapshot) */
    uint64_t memory;
    int cpus;
    double agent_timeout; /* seconds */
    bool has_rng_seed;
    uint64_t rng_seed;
    /* boot the bzImage through QEMU's Linux loader even when it has a PVH
     * entry (pvh.c): the kernel's own decompressor runs, and picks the
     * kernel's random text offset (KASLR), as under a bootloader */
    bool no_pvh;
    char *modules_dir;               /* the profile's lib/modules/<version> tree, or NULL */
    char *vmlinux;                   /* the profile's `vmlinux` (symbolize.h), or NULL */
    struct vm_nic nics[VM_MAX_NICS]; /* NIC i is in PCI slot VM_NIC_SLOT0 + i */
    size_t nnics;
    struct vm_disk attached[VM_MAX_DISKS]; /* after the profile's disks */
    size_t nattached;
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
    int64_t boot_ns;      /* when QEMU started */
    int64_t ready_ns;     /* when the agent answered */
    uint32_t agent_gen;   /* bumped at each handshake: a worker of an older agent is gone */
    uint64_t charged;     /* counted in vm_globals.memory_in_use while QEMU runs */
    bool announced;       /* vm_spawned went out: vm_shutdown follows when QEMU stops */
    bool from_boot_cache; /* the last boot resumed a cached one (vm_resume_boot) */
    bool quiet;           /* the next boot is not announced (the boot cache's saving boot) */
    uint32_t cid;
    char *exit_reason; /* why the VM is dead */
    char *story;       /* its last death in full, for pv_err.story (kept until the next one) */
    /* A restored VM's RAM while QEMU runs (snapshot.c reads it): the file
     * QEMU maps copy-on-write, open read-only, and its path; -1 and NULL
     * when booted cold (QEMU's anonymous memory) or not running. */
    int ram_fd;
    char *ram_base;
    struct standby *standby; /* a QEMU waiting to restore a snapshot (snapshot.c), or NULL */
    int kmsg_fd;             /* kmsg.log, the guest's kernel log as the agent streams it */
    int cache_hold; /* a boot-cache entry this QEMU maps, locked in use (bootcache.c), or -1 */
    uint64_t kmsg_written;   /* since the last bound check */
    uint64_t log_dropped[3]; /* per enum vm_log: bytes rotated away (vm_log.c) */
    uint32_t log_gen;        /* bumped when a fresh boot starts new logs */
    char *modules_dir;       /* from the boot: where vm:modprobe finds modules */
    struct vm_boot plan;     /* what it was booted (or restored) with, for snapshots */
    /* The NICs its next boot gets (bridge:attach); a running VM's are in
     * plan too, and each has a switch port while QEMU runs. */
    struct vm_nic nics[VM_MAX_NICS];
    size_t nnics;
    int ports[VM_MAX_NICS];
    size_t nports;
    /* The disks its next boot gets (vm:attach_disk); a running VM's are in
     * plan too. */
    struct vm_disk disks[VM_MAX_DISKS];
    size_t ndisks;
    int gdb_port; /* QEMU's gdbstub's on 127.0.0.1 while QEMU runs under --gdb, else 0 */
    struct hang_watch hang;
    /* The boot in progress (from vm_launch to the handshake) and the
     * consoles' bytes at its start; once it died, boot_infra says why the
     * machine, not the guest, is to blame, or is NULL; infra_error is the
     * message of a boot that failed so twice (vm_boot_failed), or NULL
     * (docs/debugging.md#infrastructure-errors). */
    bool booting;
    uint64_t boot_console;
    const char *boot_infra;
    char *infra_error;
    struct vm *next_live;
};

/* Process-wide settings, set once by main/runner. */
struct vm_globals {
    char *rundir;
    enum accel accel;         /* resolved: KVM or TCG */
    enum transport transport; /* resolved */
    const char *machine;
    double timeout_scale;   /* 1 under KVM, larger under TCG */
    int64_t op_deadline_ns; /* the running test's deadline, 0 = none */
    /* This file's claim (docs/running.md): the memory its VMs may use at
     * once, QEMU's share counted; 0 = no limit. */
    uint64_t claim_memory;
    uint32_t claim_cpus;
    bool claim_declared; /* from provium:claim (else the default for files without) */
    uint64_t memory_in_use;
    const char *file;         /* the test file, as displayed (for events) */
    const char *snapshot_dir; /* where vm:snapshot() with no path writes (NULL: rundir) */
    bool gdb;                 /* every QEMU gets a gdbstub (--gdb, docs/vms.md) */
    /* The hang watchdog's timeout in seconds (docs/debugging.md#hangs):
     * hang_timeout is the one in force (meta.hang_timeout,
     * provium.hang_timeout), hang_timeout_run --hang-timeout's; 0 is
     * HANG_DEFAULT_S times timeout_scale, a negative value none. */
    double hang_timeout, hang_timeout_run;
};
extern struct vm_globals vm_globals;

/* A QEMU of this process that a signal handler's vm_kill_all() must kill
 * (every VM's is; a bridge's uplink too). */
void vm_track(pid_t pid);
void vm_untrack(pid_t pid);
/* SIGKILL a tracked QEMU and its process group, reap it, untrack it. */
void vm_reap(pid_t pid);

struct vm *vm_new(const char *name, const char *profile);
/* Kill QEMU if it runs and free everything. NULL is fine. */
void vm_free(struct vm *vm);
const char *vm_state_name(enum vm_state s);

/* Start QEMU and wait for the agent's handshake. On failure the VM is dead
 * and err ends with the last 40 console lines. */
int vm_boot(struct vm *vm, const struct vm_boot *b, struct pv_err *err);
/* After a failed boot (attempt 1 or 2, by whatever path: cold, resumed,
 * saved): whether to boot again. A boot the machine failed rather than the
 * guest (QEMU ended before the handshake, killed or failing, with no kernel
 * panic on the console; or a guest that printed nothing at all before the
 * agent's timeout) is tried once more; when the second fails too, err's
 * message says it is an infrastructure error and vm->infra_error keeps it
 * (docs/debugging.md#infrastructure-errors). */
bool vm_boot_failed(struct vm *vm, int attempt, struct pv_err *err);
/* Graceful: the agent syncs and powers off; QEMU is killed if it lingers. */
int vm_shutdown(struct vm *vm, struct pv_err *err);
/* SIGKILL QEMU now. */
void vm_kill(struct vm *vm);
int vm_reset(struct vm *vm, struct pv_err *err);
int vm_pause(struct vm *vm, struct pv_err *err);
int vm_resume(struct vm *vm, struct pv_err *err);
int vm_power_button(struct vm *vm, struct pv_err *err);
/* Save the running machine into the directory path (docs/snapshots.md),
 * replacing what is there. The VM goes on. */
int vm_snapshot(struct vm *vm, const char *path, struct pv_err *err);
/* A snapshot's header (its `machine` file) is at most this long. */
#define VM_SNAP_HEADER_MAX (64u << 10)
/* Parse the header in the n bytes at buf: 0 with the header object and its
 * length, or -EINVAL. The bytes may be anything (a damaged or forged file). */
int vm_snapshot_parse_header(const char *buf, size_t n, json_t **ret_header, size_t *ret_len);
/* A disk a snapshot froze (docs/snapshots.md#disks): the file `file` in
 * the snapshot's directory, the disk as its guest saw it. */
struct vm_snap_disk {
    char id[VM_DISK_ID_MAX + 1];
    char file[VM_DISK_ID_MAX + 6]; /* "disk-<id>" */
    uint8_t slot;
    uint64_t size;
    int64_t mtime_ns;
    bool readonly, mediated;
    bool qcow2; /* a plain qcow2 disk's image (format "qcow2"); else raw */
};
/* The disks of header h (its "attached" list, none when absent), checked
 * without I/O: 0 with *ret_n of them in out[] (VM_MAX_DISKS room), in the
 * guest's order, or -EINVAL when the list is malformed. */
int vm_snapshot_disks(json_t *h, struct vm_snap_disk out[], size_t *ret_n);
/* Check the snapshot directory dir without reading its RAM: its header, the
 * RAM file's length and time, the device state's hash, the pages' length
 * (and hash, if deep), each frozen disk's length and time. 0 with *ret_h (may be NULL) the header;
 * -EBADMSG when its bytes are damaged, -ENOENT when it is not there. */
int vm_snapshot_check(const char *dir, bool deep, json_t **ret_h, struct pv_err *err);
/* Start a created or shut-down VM from a snapshot of the same profile,
 * machine, accelerator and QEMU; the agent picks up where it was. */
int vm_restore(struct vm *vm, const char *path, struct pv_err *err);
/* Start, in the background, the QEMU that the next vm_restore of the
 * snapshot directory path will take (vm booted, from that snapshot): its
 * pid, 0 when vm has attached disks (a restore makes their overlays, which
 * a QEMU started before could not have), or -errno. One per VM; it goes
 * with the VM or at the next call. */
int vm_standby(struct vm *vm, const char *path, struct pv_err *err);
void vm_standby_drop(struct vm *vm);
/* The boot cache's halves (src/host/bootcache.c). vm_save_boot boots a
 * created or shut-down VM cold with plan b and saves it into the directory
 * dir, stopping it: a snapshot directory (its RAM the sparse file dir/ram)
 * and the boot's logs. Returns 0 when saved, 1 when
 * it booted but could not be saved (err says why), -errno when the boot
 * failed.
 * vm_resume_boot boots a VM with plan b by resuming such a directory, its
 * RAM mapped copy-on-write, and the directory's logs become the VM's. */
int vm_save_boot(struct vm *vm, const struct vm_boot *b, const char *dir, struct pv_err *err);
int vm_resume_boot(struct vm *vm, const char *dir, const struct vm_boot *b, struct pv_err *err);
/* A VM's logs (src/host/vm_log.c, docs/vms.md#logs). Each is bounded: past
 * VM_LOG_CAP its last VM_LOG_KEEP bytes move to <log>.1 and it starts over. */
enum vm_log { VM_LOG_SERIAL, VM_LOG_HVC, VM_LOG_KMSG, VM_NLOGS, VM_LOG_CONSOLE = VM_NLOGS };
#define VM_LOG_CAP (64ull << 20)
#define VM_LOG_KEEP (16ull << 20)
/* Rotate the logs that passed the cap. Called at every guest operation and
 * while a test sleeps, so a guest that floods cannot fill the disk. */
void vm_logs_bound(struct vm *vm);
void vm_logs_bound_all(void);
/* Up to max bytes of a log from logical offset off (every byte it ever
 * had), appended to out; *ret_next is where the next read starts. Bytes
 * rotated away are skipped. VM_LOG_CONSOLE: the primary console. */
int vm_log_read(struct vm *vm, enum vm_log which, uint64_t off, size_t max, struct buf *out,
                uint64_t *ret_next);

/* Format /dev/kmsg records ("prio,seq,usec,flags;text\n" each, then
 * " KEY=value" lines) as dmesg prints them, appending to out. The bytes come
 * from the guest: anything goes, nothing is trusted. */
void vm_kmsg_format(const void *p, size_t n, struct buf *out);

/* The guest's kernel log as the agent forwarded it from /dev/kmsg (every
 * level, whatever the console shows), formatted like dmesg. A vm_ping()
 * first makes sure everything logged before it has arrived. */
int vm_kernel_log(struct vm *vm, struct buf *out);

/* A wait with no deadline of its own, outside a test, ends after this
 * (times the accelerator's scale). */
#define VM_WAIT_DEFAULT_S 600.0
/* Milliseconds to poll for: seconds (negative: no limit of its own),
 * bounded by the running test's deadline, or VM_WAIT_DEFAULT_S without one. */
int vm_wait_ms(double seconds);

/* One request to the agent of a booted VM (route 0) or to one of its
 * workers, bounded by timeout_s (scaled for TCG; 0: only the test's
 * deadline). Chunks go to fn(ctx). Returns like chan_call; a dead QEMU
 * becomes the whole story with the console tail. The typed operations over
 * this are in guest.h. */
int vm_call(struct vm *vm, uint64_t route, const char *op, uint16_t type, const struct buf *req,
            double timeout_s, chan_chunk_fn fn, void *ctx, struct buf *reply, struct pv_err *err);
/* Requests left in flight (async syscalls, streams, batches): vm_start sends
 * one and returns its id (0 with err set); vm_finish waits for its reply
 * like vm_call, or returns -ETIMEDOUT leaving it in flight; vm_pump reads
 * what arrives for up to timeout_s (1: something came, 0: nothing, -errno). */
uint32_t vm_start(struct vm *vm, uint64_t route, const char *op, uint16_t type,
                  const struct buf *req, chan_chunk_fn fn, void *ctx, struct pv_err *err);
int vm_finish(struct vm *vm, uint32_t id, double timeout_s, struct buf *reply, struct pv_err *err);
int vm_pump(struct vm *vm, double timeout_s, struct pv_err *err);

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
