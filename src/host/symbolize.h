/* Symbolized stacks (docs/splats.md#symbolized-stacks): a kernel stack
 * frame `func+0x12/0x40` to the `file:line` it was at, from an ELF file
 * with DWARF (a vmlinux, a module's .ko) and binutils: `objdump -t` gives
 * the function's section and address, `addr2line` the line. Also where a
 * kernel's vmlinux is found, for the hang watchdog, --gdb and the stacks.
 * No Lua here (src/host/lua/l_sym.c binds it). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

/* Frames looked up in one ELF file by one call, at most. */
#define SYM_MAX_FRAMES 64

/* The vmlinux of a kernel: given (the profile's `vmlinux`; may be NULL),
 * else `vmlinux` in the kernel's directory (the directory of the path as
 * given, symlinks not followed), else Debian's -dbg package's
 * /usr/lib/debug/boot/vmlinux-<release> (release may be NULL). A readable
 * path (caller frees), or NULL. */
char *sym_vmlinux(const char *given, const char *kernel, const char *release);

/* One frame to look up. */
struct sym_query {
    const char *func; /* the frame's function as the kernel printed it */
    uint64_t off;     /* +0xOFF */
    uint64_t len;     /* /0xLEN: the function's length by kallsyms (0: unknown) */
    bool ret;         /* a return address (a call trace's frame): off - 1 is looked up */
    /* out, caller frees (NULL: not found): "dir/file.c:42", or the inlined
     * line and the function's own: "include/x.h:160 inlined into file.c:49" */
    char *where;
    /* internal: the section (a .ko's) and address looked up */
    char *section;
    uint64_t addr;
};

/* Find q[i].func in `objdump -t` text: the function symbol of that name
 * whose size holds the offset looked up (of several, the first whose size
 * is at most q[i].len). Sets q[i].section (a copy) and q[i].addr (the
 * symbol's value plus the offset); a frame not found keeps section NULL.
 * Returns how many were found. */
size_t sym_parse_objdump(const char *text, size_t len, struct sym_query *q, size_t n);

/* Parse `addr2line -a -f -i` output for n addresses into where[0..n-1]
 * (each NULL or allocated; the caller frees): one record per address, its
 * line `0x<hex>` then function and location lines, innermost first. Paths
 * lose the prefix strip (a directory, with its trailing '/') or, failing
 * that, everything up to a `linux-headers-*` directory; unknown locations
 * (`??:0`) are left out; bytes a terminal would act on are escaped.
 * Returns how many got a location. */
size_t sym_parse_addr2line(const char *text, size_t len, const char *strip, char **where, size_t n);

/* Look up q[0..n-1] (n at most SYM_MAX_FRAMES) in elf: one objdump run and
 * one addr2line run per section, each bounded by timeout_ms. Returns how
 * many frames got a location (0 when the file has no debug info), or
 * -errno with err set when a tool is missing, failed or timed out, or elf
 * is no ELF file. The caller frees q[i].where and q[i].section with
 * sym_query_release. */
int sym_resolve(const char *elf, struct sym_query *q, size_t n, int timeout_ms, struct pv_err *err);
void sym_query_release(struct sym_query *q, size_t n);
