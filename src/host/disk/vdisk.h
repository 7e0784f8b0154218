/* A VM's attached disks (docs/disks.md): the connections its QEMU gets to
 * the disk server at boot, and plugging a disk into, or out of, a running
 * VM. The disks themselves are the server's (disk.h); which disk object is
 * whose is the Lua layer's (lua/disk.lua). */
#pragma once

#include "qemu.h"
#include "vm.h"

/* A connection for each attached disk of plan b, and in qd[] what QEMU's
 * argv needs (each fd above 2, O_CLOEXEC: the caller closes them once QEMU
 * has started, and a connection whose QEMU never came ends by itself). On
 * failure nothing is left open. */
int vdisk_conns_open(const struct vm_boot *b, const char *vm, struct qemu_disk qd[],
                     struct pv_err *err);

/* The index of vm's disk with this id, or -1. */
int vdisk_find(const struct vm *vm, const char *id);
/* Give vm the disk (a handle of disk.h) as `id`: for its next boots, and at
 * once if it runs (QMP getfd + blockdev-add + device_add). -EEXIST when
 * it has a disk of that id, -ENOSPC past VM_MAX_DISKS, -EBUSY while it is
 * paused; then nothing changed. */
int vdisk_attach(struct vm *vm, int disk, const char *id, bool readonly, struct pv_err *err);
/* Take the disk `id` out of vm: from its next boots, and at once if it
 * runs (device_del, then blockdev-del once the guest let the device go).
 * -ENOENT when it has no such disk, -EBUSY while it is paused: then nothing
 * changed. Any other error comes from the unplug: the disk is out of the
 * next boots all the same. */
int vdisk_detach(struct vm *vm, const char *id, struct pv_err *err);
