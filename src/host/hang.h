/* The hang watchdog (docs/debugging.md#hangs): while a guest operation
 * waits, a guest that shows no sign of life (no byte from the agent, no
 * growth of the console logs) for the hang timeout is declared hung, its
 * vCPUs' instruction pointers are read from QEMU, and the VM is killed.
 * No Lua here; vm.c calls it from its waits. */
#pragma once

#include <stdint.h>

#include "util.h"

struct vm;

/* A guest silent this long (times the accelerator's scale) is hung, unless
 * --hang-timeout, provium.hang_timeout or meta.hang_timeout says otherwise. */
#define HANG_DEFAULT_S 30.0

/* What the watchdog keeps of one VM between the slices of a wait. */
struct hang_watch {
    int64_t alive_ns; /* the last sign of life seen */
    uint64_t console; /* the consoles' bytes ever written, at alive_ns */
    uint32_t ping;    /* a probe in flight, or 0 */
};

/* The bytes the VM's consoles (serial and hvc) have ever had. */
uint64_t hang_console_bytes(struct vm *vm);
/* The hang timeout in force, in seconds (the default scaled); 0: off. */
double hang_timeout_s(void);
/* A wait of vm begins: it counts as alive now. */
void hang_start(struct vm *vm);
/* One slice of a wait has passed with no reply: 0 while the guest shows
 * signs of life (a probe may be sent to the agent to ask for one), or, once
 * it has been silent for hang_timeout_s(), -EHOSTDOWN with err set (the
 * message, then the instruction pointers and the console tail as its
 * story) and the VM killed and dead. */
int hang_check(struct vm *vm, struct pv_err *err);

/* The instruction pointers in QEMU's `info registers` text (every "RIP="
 * field, one per vCPU): how many were found, at most max. */
int hang_parse_rips(const char *regs, uint64_t *ret, int max);
/* Whether an x86-64 instruction pointer is a program's, which no kernel
 * map names. */
bool hang_user_ip(uint64_t addr);
/* Name addr as "func+0xoff/0xsize" (and " [module]" for a module's
 * symbol) from a symbol map: "ADDR TYPE NAME [MODULE]" lines as System.map,
 * /proc/kallsyms and `nm -n` print them. Only text symbols count, and an
 * address past the last one's end (_etext), or more than 1 MiB from the
 * nearest, is not named. 0 with out filled, -ENOENT when not named. */
int hang_symbolize(const char *map, size_t n, uint64_t addr, char *out, size_t outlen);
