/* What vm.c shares with the files that own a VM's other parts: its logs
 * (vm_log.c) and its saved machines (snapshot.c). Not for anyone else:
 * everything here assumes the caller keeps the VM's state machine. */
#pragma once

#include "vm.h"

/* A QEMU process and what provium holds of it before it is a VM's: the
 * listening sockets its QMP and agent connect to, its RAM file. */
struct qemu_proc {
    pid_t pid;
    int pidfd, qmp_l, agent_l, ram_fd;
    char *ram_base; /* its RAM file (a restore's), or NULL */
    char *sockdir;  /* where its sockets and qemu.log are */
    uint32_t cid;
    int64_t start_ns;
    int ports[VM_MAX_NICS]; /* the switch ports of its NICs (net/nic.c) */
    size_t nports;
    int gdb_port; /* its gdbstub's on 127.0.0.1 (--gdb), or 0 */
};
#define QEMU_PROC_INIT                                                                             \
    {                                                                                              \
        .pidfd = -1, .qmp_l = -1, .agent_l = -1, .ram_fd = -1                                      \
    }

/* How vm_launch starts QEMU, beyond the plan. */
struct start {
    bool incoming; /* a restore: the saved state comes as a migration (-incoming) */
    bool fresh;    /* a new boot: the logs start empty (a restore continues them) */
    /* A restore's RAM: this file, mapped copy-on-write. NULL (a cold boot):
     * QEMU's anonymous memory. */
    const char *ram_file;
    /* A QEMU started ahead for this (vm_standby), taken instead of a new
     * one; left empty. */
    struct qemu_proc *adopt;
};

/* Start QEMU for plan b as st says, its sockets and qemu.log in sockdir,
 * its console logs in the VM's directory; nothing of vm changes. */
int vm_spawn(struct vm *vm, const struct vm_boot *b, const struct start *st, const char *sockdir,
             struct qemu_proc *p, struct pv_err *err);
/* Kill a QEMU that never became a VM's, and release what it held. */
void vm_proc_release(struct qemu_proc *p);
/* Accept QEMU's connection on the listening socket lfd, unless QEMU (pidfd) ends first. */
int vm_accept_qemu(int pidfd, int lfd, int64_t deadline_ns, struct pv_err *err);

/* Start QEMU for plan b as st says and negotiate QMP. Returns 0 with
 * *agent_l, the socket to accept the agent's channel on (-1 under vsock),
 * or -errno (the VM dead if QEMU had started). */
int vm_launch(struct vm *vm, const struct vm_boot *b, const struct start *st, int *agent_l,
              struct pv_err *err);
/* Connect to the agent (accepting on agent_l, which is closed) and shake
 * hands; the VM is dead on failure. since: what the deadline counts from. */
int vm_handshake(struct vm *vm, int agent_l, double agent_timeout, const char *since,
                 struct pv_err *err);
/* vm_launch + vm_handshake for a created or stopped VM. */
int vm_boot_as(struct vm *vm, const struct vm_boot *b, const struct start *st, struct pv_err *err);
/* Mark the VM dead and describe why in err, with the console tail: -EPIPE. */
int vm_died(struct vm *vm, struct pv_err *err, const char *what);
int vm_need_state(struct vm *vm, const char *op, enum vm_state want, struct pv_err *err);
int vm_need_stopped(struct vm *vm, const char *op, struct pv_err *err);
/* One QMP command with the default deadline; a dead QEMU becomes vm_died's story. */
int vm_qmp(struct vm *vm, const char *cmd, json_t *args, struct pv_err *err);
/* The VM's run directory, made at its first boot. */
int vm_make_dir(struct vm *vm, struct pv_err *err);

/* ---- logs (vm_log.c) ---- */

/* The kmsg writer is told of PV_EV_KMSG events here. */
void vm_on_kmsg(void *ctx, uint16_t type, const void *p, size_t n);
/* Copy the logs in directory from into directory to (those it has). */
int vm_copy_logs(const char *from, const char *to, struct pv_err *err);
/* Remove the VM's logs (a fresh boot). */
void vm_drop_logs(struct vm *vm);
/* Whether the last part of the console says what (a NUL does not hide it). */
bool vm_console_says(struct vm *vm, const char *what);
/* What follows marker on the first console line (in the tail) that holds
 * it, control bytes made '?'; NULL when none does. Caller frees. */
char *vm_console_line(struct vm *vm, const char *marker);
