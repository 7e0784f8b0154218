/* A VM's attached disks: their QEMU connections at boot, hot-plug and
 * unplug (vdisk.h). */
#include "disk/vdisk.h"

#include <stdio.h>
#include <time.h>

#include "disk/disk.h"
#include "net/nic.h"
#include "vm_priv.h"

int vdisk_conns_open(const struct vm_boot *b, const char *vm, struct qemu_disk qd[],
                     struct pv_err *err)
{
    size_t n = 0;
    int r = 0;
    for (; n < b->nattached; n++) {
        const struct vm_disk *d = &b->attached[n];
        int fd = -1;
        qd[n] = (struct qemu_disk){d->slot, -1, d->id, d->readonly, "", NULL};
        if (disk_plain(d->disk, qd[n].file, sizeof(qd[n].file), &qd[n].format) == 1)
            continue; /* QEMU opens it itself */
        if ((r = disk_connect(d->disk, &fd, err)) < 0) {
            pv_err_wrap(err, "vm `%s`: disk `%s`", vm, d->id);
            goto fail;
        }
        if ((fd = nic_inheritable_fd(fd)) < 0) {
            r = pv_err_set(err, errno, "vm `%s`: disk `%s`: %s", vm, d->id, strerror(errno));
            goto fail;
        }
        qd[n].fd = fd;
    }
    return 0;
fail:
    for (size_t i = 0; i < n; i++)
        if (qd[i].fd >= 0)
            close(qd[i].fd);
    return r;
}

int vdisk_find(const struct vm *vm, const char *id)
{
    for (size_t i = 0; i < vm->ndisks; i++)
        if (!strcmp(vm->disks[i].id, id))
            return (int)i;
    return -1;
}

static bool running(const struct vm *vm)
{
    return vm->state == VM_BOOTED || vm->state == VM_PAUSED;
}

/* The lowest slot no disk of vm (nor of the running plan) holds. */
static uint8_t free_slot(const struct vm *vm)
{
    for (uint8_t s = VM_DISK_SLOT0;; s++) {
        bool used = false;
        for (size_t i = 0; i < vm->ndisks; i++)
            used |= vm->disks[i].slot == s;
        for (size_t i = 0; running(vm) && i < vm->plan.nattached; i++)
            used |= vm->plan.attached[i].slot == s;
        if (!used)
            return s;
    }
}

/* Plug d into the running QEMU: a connection, its fd handed over with
 * getfd, the NBD node, the device. */
static int hotplug(struct vm *vm, const struct vm_disk *d, struct pv_err *err)
{
    char node[16], dev[16], fdname[16], addr[8];
    snprintf(node, sizeof(node), "vd%u", d->slot);
    snprintf(dev, sizeof(dev), "vdisk%u", d->slot);
    snprintf(fdname, sizeof(fdname), "fd-vd%u", d->slot);
    snprintf(addr, sizeof(addr), "0x%x", d->slot);
    int fd = -1, r;
    char file[48];
    const char *format;
    if (disk_plain(d->disk, file, sizeof(file), &format) == 1) {
        /* QEMU opens a plain disk itself */
        r = vm_qmp(vm, "blockdev-add",
                   json_pack("{s:s, s:s, s:b, s:{s:s, s:s}}", "driver", format, "node-name", node,
                             "read-only", d->readonly, "file", "driver", "file", "filename", file),
                   err);
    } else {
        if ((r = disk_connect(d->disk, &fd, err)) < 0)
            return pv_err_wrap(err, "vm `%s`: disk `%s`", vm->name, d->id);
        int64_t dl = now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale);
        r = qmp_exec_fd(&vm->qmp, "getfd", json_pack("{s:s}", "fdname", fdname), fd, dl, NULL, err);
        close(fd); /* QEMU has its copy, or the connection ends here */
        if (r == -EPIPE)
            return vm_died(vm, err, "QEMU exited");
        if (r == 0)
            r = vm_qmp(vm, "blockdev-add",
                       json_pack("{s:s, s:s, s:b, s:{s:s, s:s}}", "driver", "nbd", "node-name",
                                 node, "read-only", d->readonly, "server", "type", "fd", "str",
                                 fdname),
                       err);
    }
    if (r == 0) {
        r = vm_qmp(vm, "device_add",
                   json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "driver", "virtio-blk-pci", "drive",
                             node, "id", dev, "bus", QEMU_HOTPLUG_BUS, "addr", addr, "serial",
                             d->id),
                   err);
        if (r < 0 && running(vm)) {
            struct pv_err ignored = {0};
            vm_qmp(vm, "blockdev-del", json_pack("{s:s}", "node-name", node), &ignored);
        }
    }
    if (r < 0)
        return pv_err_wrap(err, "disk `%s`: plugging it into vm `%s`", d->id, vm->name);
    vm->plan.attached[vm->plan.nattached++] = *d;
    return 0;
}

int vdisk_attach(struct vm *vm, int disk, const char *id, bool readonly, struct pv_err *err)
{
    if (vdisk_find(vm, id) >= 0)
        return pv_err_set(err, EEXIST, "vm `%s` has a disk `%s` already", vm->name, id);
    if (vm->state == VM_PAUSED) /* the guest would see the device only at resume */
        return pv_err_set(err, EBUSY, "vm `%s` is paused: resume it to plug disk `%s` in", vm->name,
                          id);
    /* a disk whose unplug failed is still in the running plan */
    if (vm->ndisks == VM_MAX_DISKS || (running(vm) && vm->plan.nattached == VM_MAX_DISKS))
        return pv_err_set(err, ENOSPC, "vm `%s`: disk `%s`: a VM has at most %d attached disks",
                          vm->name, id, VM_MAX_DISKS);
    if (strlen(id) > VM_DISK_ID_MAX)
        return pv_err_set(err, ENAMETOOLONG,
                          "disk id `%s` is longer than %d bytes (the virtio serial's limit)", id,
                          VM_DISK_ID_MAX);
    struct vm_disk d = {.disk = disk, .slot = free_slot(vm), .readonly = readonly};
    snprintf(d.id, sizeof(d.id), "%s", id);
    /* a standby QEMU was started with the disks of before */
    vm_standby_drop(vm);
    int r = running(vm) ? hotplug(vm, &d, err) : 0;
    if (r == 0)
        vm->disks[vm->ndisks++] = d;
    return r;
}

/* Whether blockdev-del of node worked: QEMU refuses while the device
 * still holds it (the guest has not let go yet). */
static int del_node(struct vm *vm, const char *node, struct pv_err *err)
{
    int64_t dl = now_ns() + (int64_t)(60e9 * vm_globals.timeout_scale);
    for (;;) {
        struct pv_err e = {0};
        int r = vm_qmp(vm, "blockdev-del", json_pack("{s:s}", "node-name", node), &e);
        if (r == 0 || r == -EPIPE || now_ns() >= dl) {
            if (r < 0)
                *err = e;
            return r;
        }
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
    }
}

int vdisk_detach(struct vm *vm, const char *id, struct pv_err *err)
{
    int i = vdisk_find(vm, id);
    if (i < 0)
        return pv_err_set(err, ENOENT, "vm `%s` has no disk `%s`", vm->name, id);
    if (vm->state == VM_PAUSED) /* a paused guest cannot let the device go */
        return pv_err_set(err, EBUSY, "vm `%s` is paused: resume it to unplug disk `%s`", vm->name,
                          id);
    vm_standby_drop(vm);
    uint8_t slot = vm->disks[i].slot;
    memmove(&vm->disks[i], &vm->disks[i + 1], (vm->ndisks - (size_t)i - 1) * sizeof(vm->disks[0]));
    vm->ndisks--;
    if (!running(vm))
        return 0;
    size_t p = 0;
    while (p < vm->plan.nattached && vm->plan.attached[p].slot != slot)
        p++;
    if (p == vm->plan.nattached)
        return 0; /* attached since the boot: never plugged in */
    char node[16], dev[16];
    snprintf(node, sizeof(node), "vd%u", slot);
    snprintf(dev, sizeof(dev), "vdisk%u", slot);
    int r = vm_qmp(vm, "device_del", json_pack("{s:s}", "id", dev), err);
    if (r == 0)
        r = del_node(vm, node, err);
    if (r < 0)
        return pv_err_wrap(err, "disk `%s`: unplugging it from vm `%s`", id, vm->name);
    memmove(&vm->plan.attached[p], &vm->plan.attached[p + 1],
            (vm->plan.nattached - p - 1) * sizeof(vm->plan.attached[0]));
    vm->plan.nattached--;
    return 0;
}
