/* A bzImage's kernel as an ELF that QEMU boots through the PVH entry,
 * skipping the firmware's Linux loader and the in-guest decompressor
 * (pvh.c says why). */
#pragma once

#include <stdint.h>

#include "util.h"

/* The ELF to boot instead of the bzImage at kernel, unpacked once into the
 * cache: a path to free, or NULL when kernel cannot be booted that way (not
 * a bzImage, no PVH note, a compression not read here), which a boot takes
 * as "use the bzImage". */
char *pvh_kernel(const char *kernel);
/* The unpacking itself, for tests: the vmlinux of the bzImage img in out
 * (replacing what it held); 0, -ENOEXEC (not a bzImage with a PVH kernel in a known
 * compression) or -EBADMSG (damaged). */
int pvh_unpack(const uint8_t *img, size_t n, struct buf *out);
