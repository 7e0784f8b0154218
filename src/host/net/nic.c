#include "nic.h"

#include <fcntl.h>
#include <stdio.h>

#include "switch.h"
#include "vm_priv.h"

int nic_inheritable_fd(int fd)
{
    /* stdio is dup'ed onto 0-2 in QEMU's child: an inherited fd must not be there */
    if (fd >= 3)
        return fd;
    int hi = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return hi;
}

int nic_ports_open(const struct vm_boot *b, const char *vm, int ports[], struct qemu_nic qn[],
                   struct pv_err *err)
{
    size_t n = 0;
    int r = 0;
    for (; n < b->nnics; n++) {
        int fd = -1;
        int port = r = switch_port_add(b->nics[n].bridge, vm, &fd, err);
        if (port < 0)
            goto fail;
        if ((fd = nic_inheritable_fd(fd)) < 0) {
            switch_port_del(port);
            r = pv_err_set(err, errno, "vm `%s`: NIC on bridge `%s`: %s", vm,
                           b->nics[n].bridge_name, strerror(errno));
            goto fail;
        }
        ports[n] = port;
        qn[n] = (struct qemu_nic){VM_NIC_SLOT0 + (unsigned)n, {0}, fd};
        memcpy(qn[n].mac, b->nics[n].mac, 6);
    }
    return 0;
fail:
    for (size_t i = 0; i < n; i++) {
        switch_port_del(ports[i]);
        close(qn[i].fd);
    }
    return r;
}

void nic_ports_close(int ports[], size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        switch_port_del(ports[i]);
    *n = 0;
}

int nic_find(const struct vm *vm, int bridge)
{
    for (size_t i = 0; i < vm->nnics; i++)
        if (vm->nics[i].bridge == bridge)
            return (int)i;
    return -1;
}

int nic_port(const struct vm *vm, int nic)
{
    return nic >= 0 && (size_t)nic < vm->nports ? vm->ports[nic] : -1;
}

/* Plug NIC i (already in vm->nics) into the running QEMU: a port, its fd
 * handed over with getfd, the netdev, the device. */
static int hotplug(struct vm *vm, size_t i, struct pv_err *err)
{
    const struct vm_nic *nic = &vm->nics[i];
    unsigned slot = VM_NIC_SLOT0 + (unsigned)i;
    char id[16], dev[16], fdname[16], addr[8], mac[18];
    snprintf(id, sizeof(id), "net%u", slot);
    snprintf(dev, sizeof(dev), "nic%u", slot);
    snprintf(fdname, sizeof(fdname), "fd-net%u", slot);
    snprintf(addr, sizeof(addr), "0x%x", slot);
    snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", nic->mac[0], nic->mac[1],
             nic->mac[2], nic->mac[3], nic->mac[4], nic->mac[5]);
    int fd = -1;
    int port = switch_port_add(nic->bridge, vm->name, &fd, err);
    if (port < 0)
        return port;
    int64_t d = now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale);
    int r = qmp_exec_fd(&vm->qmp, "getfd", json_pack("{s:s}", "fdname", fdname), fd, d, NULL, err);
    close(fd);
    if (r == 0)
        r = vm_qmp(vm, "netdev_add",
                   json_pack("{s:s, s:s, s:{s:s, s:s}}", "type", "dgram", "id", id, "local", "type",
                             "fd", "str", fdname),
                   err);
    if (r == 0) {
        r = vm_qmp(vm, "device_add",
                   json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "driver", "virtio-net-pci", "netdev",
                             id, "id", dev, "bus", QEMU_HOTPLUG_BUS, "addr", addr, "mac", mac),
                   err);
        if (r < 0 && vm->state == VM_BOOTED) {
            struct pv_err ignored = {0};
            vm_qmp(vm, "netdev_del", json_pack("{s:s}", "id", id), &ignored);
        }
    }
    if (r < 0) {
        switch_port_del(port);
        return pv_err_wrap(err, "bridge `%s`: plugging a NIC into vm `%s`", nic->bridge_name,
                           vm->name);
    }
    vm->ports[vm->nports++] = port;
    vm->plan.nics[vm->plan.nnics++] = *nic;
    return 0;
}

int nic_add(struct vm *vm, int bridge, const char *name, const uint8_t mac[6], struct pv_err *err)
{
    if (nic_find(vm, bridge) >= 0)
        return 0;
    if (vm->nnics == VM_MAX_NICS)
        return pv_err_set(err, ENOSPC, "vm `%s`: bridge `%s`: a VM has at most %d NICs", vm->name,
                          name, VM_MAX_NICS);
    if (strlen(name) >= sizeof(vm->nics[0].bridge_name))
        return pv_err_set(err, ENAMETOOLONG, "bridge `%s`: the name is longer than %zu bytes", name,
                          sizeof(vm->nics[0].bridge_name) - 1);
    struct vm_nic *nic = &vm->nics[vm->nnics];
    *nic = (struct vm_nic){.bridge = bridge};
    snprintf(nic->bridge_name, sizeof(nic->bridge_name), "%s", name);
    memcpy(nic->mac, mac, 6);
    /* a standby QEMU was started with the NICs of before */
    vm_standby_drop(vm);
    bool running = vm->state == VM_BOOTED || vm->state == VM_PAUSED;
    if (running && vm->nports != vm->nnics)
        return pv_err_set(err, EBUSY, "vm `%s`: its NICs are not all plugged in", vm->name);
    int r = running ? hotplug(vm, vm->nnics, err) : 0;
    if (r == 0)
        vm->nnics++;
    return r;
}

static int by_bridge_name(const void *a, const void *b)
{
    return strcmp(((const struct vm_nic *)a)->bridge_name, ((const struct vm_nic *)b)->bridge_name);
}

void nic_sort(struct vm *vm)
{
    if (vm->state != VM_BOOTED && vm->state != VM_PAUSED)
        qsort(vm->nics, vm->nnics, sizeof(vm->nics[0]), by_bridge_name);
}

int nic_set(struct vm *vm, const struct vm_nic *nics, size_t n, struct pv_err *err)
{
    if (vm->state == VM_BOOTED || vm->state == VM_PAUSED)
        return pv_err_set(err, EBUSY, "vm `%s`: its NICs change only while it is stopped",
                          vm->name);
    if (n > VM_MAX_NICS)
        return pv_err_set(err, ENOSPC, "vm `%s`: a VM has at most %d NICs", vm->name, VM_MAX_NICS);
    bool same = n == vm->nnics;
    for (size_t i = 0; same && i < n; i++)
        same = vm->nics[i].bridge == nics[i].bridge &&
               !strcmp(vm->nics[i].bridge_name, nics[i].bridge_name) &&
               !memcmp(vm->nics[i].mac, nics[i].mac, 6);
    if (same)
        return 0;
    vm_standby_drop(vm); /* it was started with the NICs of before */
    memcpy(vm->nics, nics, n * sizeof(*nics));
    vm->nnics = n;
    return 0;
}

int nic_link(struct vm *vm, int nic, bool up, struct pv_err *err)
{
    if (nic_port(vm, nic) < 0)
        return 0;
    char dev[16];
    snprintf(dev, sizeof(dev), "nic%u", VM_NIC_SLOT0 + (unsigned)nic);
    return vm_qmp(vm, "set_link", json_pack("{s:s, s:b}", "name", dev, "up", up), err);
}
