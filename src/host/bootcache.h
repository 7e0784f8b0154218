/* The boot cache (docs/boot-cache.md): the first boot of each boot
 * configuration is saved right after the agent's handshake, in the cache
 * fixtures use, and every boot of that configuration (the first one too)
 * is a resume of it. */
#pragma once

#include <stdbool.h>

#include "vm.h"

/* Whether a boot with plan b can come from the cache: not with disks,
 * whose contents a snapshot does not carry. */
bool bootcache_eligible(const struct vm_boot *b);

/* The entry's key (64 hex digits): the kernel and initrd (path, size,
 * mtime), the cmdline, memory, cpus, rng_seed, and the environment (agent,
 * QEMU version, machine, accelerator, transport). */
void bootcache_key(const struct vm_boot *b, char key[65]);

/* Boot vm by resuming the cached boot of plan base under dir, booting it
 * cold and saving it first when the cache has none (or a damaged one,
 * with a warning; an entry whose resume fails for any other reason than
 * its own bytes is kept). plan is what QEMU is started with for the resume:
 * base, or base plus the boot's files (so a reset boots with them). A
 * cache that cannot be written costs a warning, once, and the cold boot
 * is kept. */
int bootcache_boot(struct vm *vm, const struct vm_boot *base, const struct vm_boot *plan,
                   const char *dir, struct pv_err *err);
/* A resume keeps its entry in use (a shared flock, see cache.h) while the
 * VM's QEMU runs, since that QEMU maps the entry's RAM file: the lock is
 * vm->cache_hold, which vm.c closes when that QEMU ends. */
