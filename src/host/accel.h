/* Choosing the accelerator and transport. KVM is proven, not assumed: some
 * hosts have a /dev/kvm that opens while guests hang after the firmware
 * (nested virtualisation), so `auto` boots a kernel under KVM with a deadline
 * once per host kernel and QEMU version, and caches the verdict. */
#pragma once

#include "qemu.h"

/* Resolve want (AUTO/KVM/TCG) to KVM or TCG. kernel may be NULL (then auto
 * cannot probe and picks TCG). *ret_note gets a one-line explanation when
 * the choice deserves one (e.g. why KVM is not used), else NULL. */
enum accel accel_resolve(enum accel want, const char *kernel, const char **ret_note,
                         struct pv_err *err);

/* AUTO -> vsock when /dev/vhost-vsock is usable, else virtio-serial. */
enum transport transport_resolve(enum transport want, enum accel accel, const char **ret_note);

/* The verdict the probe cache's text (lines "<key> ok|hangs", the last for
 * a key wins; text is cut into lines in place) holds for key: 1 ok, 0
 * hangs, -1 none. */
int accel_cache_verdict(char *text, const char *key);

const char *accel_name(enum accel a);
const char *transport_name(enum transport t);
