/* A VM's NICs (docs/networks.md): the switch ports its QEMU talks through,
 * plugging a NIC into a running VM, and its link. The bridge side is the
 * switch's (switch.h); what is attached where is the Lua layer's
 * (lua/net.lua). */
#pragma once

#include "qemu.h"
#include "vm.h"

/* A port on the switch for each NIC of plan b: the handles in ports[], and
 * in qn[] what QEMU's argv needs (each fd above 2, O_CLOEXEC: the caller
 * closes them once QEMU has started). On failure nothing is left open. */
int nic_ports_open(const struct vm_boot *b, const char *vm, int ports[], struct qemu_nic qn[],
                   struct pv_err *err);
void nic_ports_close(int ports[], size_t *n);

/* fd, or a copy of it above 2 (fd closed): what a child that gets stdio
 * on 0-2 can inherit. -1 with errno on failure. */
int nic_inheritable_fd(int fd);

/* Give vm a NIC on bridge (handle and name) with this MAC: for its next
 * boot, and at once if it runs (QMP netdev_add + device_add). */
int nic_add(struct vm *vm, int bridge, const char *name, const uint8_t mac[6], struct pv_err *err);
/* Order a stopped VM's NICs by bridge name, as its next boot plugs them
 * (the first is eth0 in a guest without udev). */
void nic_sort(struct vm *vm);
/* Replace the NICs of a VM that does not run (a restore takes the
 * snapshot's). */
int nic_set(struct vm *vm, const struct vm_nic *nics, size_t n, struct pv_err *err);
/* The index of vm's NIC on bridge, or -1. */
int nic_find(const struct vm *vm, int bridge);
/* The guest sees the NIC's link go up or down (QMP set_link); nothing if
 * QEMU does not run. */
int nic_link(struct vm *vm, int nic, bool up, struct pv_err *err);
/* The switch port of vm's NIC i while QEMU runs, else -1. */
int nic_port(const struct vm *vm, int nic);
