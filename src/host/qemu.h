/* QEMU: the argv for one VM, and starting it. No logging here. */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "util.h"

enum accel { ACCEL_AUTO, ACCEL_KVM, ACCEL_TCG };
enum transport { TRANSPORT_AUTO, TRANSPORT_VIRTIO_SERIAL, TRANSPORT_VSOCK };

#define PV_VSOCK_PORT 5123

/* A NIC: virtio-net in PCI slot `slot`, its frames one datagram each on the
 * socket fd, which QEMU inherits (the switch holds the other end). The slot
 * names its netdev and device: net<slot>, nic<slot>. */
struct qemu_nic {
    unsigned slot;
    uint8_t mac[6];
    int fd;
};

/* An attached disk: virtio-blk in PCI slot `slot` with this serial, over
 * NBD on the socket fd, which QEMU inherits (provium's disk server holds
 * the other end). The slot names its node and device: vd<slot>,
 * vdisk<slot>. */
struct qemu_disk {
    unsigned slot;
    int fd; /* the NBD connection's end, or -1 for a plain disk */
    const char *serial;
    bool readonly;
    char file[48];      /* a plain disk: the path QEMU opens it by (disk/disk.h) */
    const char *format; /* and its format */
};

struct qemu_config {
    const char *binary;  /* NULL: qemu-system-x86_64 from PATH */
    const char *machine; /* "q35" */
    enum accel accel;    /* KVM or TCG, never AUTO here */
    enum transport transport;
    uint64_t memory;
    int cpus;
    const char *kernel, *initrd, *cmdline;
    const char *dir;     /* the VM's private run directory: sockets and logs */
    const char *sockdir; /* the sockets there instead (a standby QEMU's, vm.c), or NULL */
    uint32_t cid;        /* vsock guest CID */
    bool has_rng_seed;   /* else the guest's entropy is the host's */
    uint64_t rng_seed;
    const char *const *disks; /* profile disks, NULL-terminated; /dev/vda first */
    const bool *disk_ro;      /* per disk: read-only; else snapshot=on (writes discarded) */
    bool incoming;            /* a restore: the state arrives as a migration (-incoming defer) */
    /* Guest RAM in this file, mapped private (else anonymous memory): the
     * guest starts from the file's pages and its writes stay its own. */
    const char *ram_file;
    const struct qemu_nic *nics;
    size_t nnics;
    const struct qemu_disk *vdisks; /* after the profile's disks */
    size_t nvdisks;
    /* QEMU's gdbstub (--gdb, docs/vms.md#debugging-with-gdb) on gdb_fd, a
     * TCP socket that provium bound to 127.0.0.1 and listens on, inherited:
     * the port is known before QEMU starts and no one can take it meanwhile. */
    bool gdb;
    int gdb_fd;
};

/* The bridge that takes disks and NICs, plugged at boot or later: q35's
 * root bus has no hot-plug (docs/architecture.md#measurements-behind-the-defaults). */
#define QEMU_HOTPLUG_BUS "hp"
/* A digest of the devices qemu_argv gives a VM (16 hex digits): the boot
 * cache's key and a snapshot's header carry it, because a saved machine
 * restores only into the same devices. */
const char *qemu_device_set(void);

/* The argv (NULL-terminated, caller frees with qemu_argv_free). Paths of the
 * sockets and logs are <dir>/qmp.sock, agent.sock, serial.sock, serial.log,
 * hvc.sock, hvc.log. */
char **qemu_argv(const struct qemu_config *qc);
void qemu_argv_free(char **argv);

/* Start QEMU with execve (PATH searched by hand, no shell): its own process
 * group, PR_SET_PDEATHSIG(SIGKILL), stdin /dev/null, stdout+stderr to
 * <dir>/qemu.log, every other fd closed but the nkeep fds in keep (above 2;
 * the argv names them by number). Returns 0 with *ret_pid and *ret_pidfd
 * (O_CLOEXEC; readable once QEMU exits), or -errno. */
int qemu_start(const char *const *argv, const char *dir, const int *keep, size_t nkeep,
               pid_t *ret_pid, int *ret_pidfd, struct pv_err *err);

/* Find an executable in PATH; returns a malloc'd path or NULL. */
char *qemu_which(const char *name);

/* "QEMU emulator version 7.2.22 ..." -> "7.2.22" (cached). NULL on failure. */
const char *qemu_version(void);

/* A guest CID (>= 3; 0-2 are reserved). CIDs are host-global, so they are
 * spread by pid to keep parallel provium processes apart; a CID in use makes
 * QEMU fail to start, which fails that boot with QEMU's message. */
uint32_t qemu_next_cid(void);
