/* --keep-on-failure and `provium attach` (docs/debugging.md#keeping-the-vms-of-a-failing-file).
 *
 * A file's process that keeps its VMs (the keeper) listens on a Unix socket
 * in the run directory, <rundir>/kept/<pid>.sock (0600, in directories only
 * the user can enter), and writes one registry entry per kept VM,
 * <rundir>/kept/<pid>-<n>.json (0600): the VM's name, the keeper's pid, the
 * run's (the provium the user started), the file, the socket. `provium
 * attach NAME` finds the entry under $TMPDIR (directories owned by the user,
 * mode 0700, the keeper's pid alive), connects, checks the peer's uid and
 * pid, and sends one request; the keeper runs it through the agent
 * (guest_spawn, guest_wait: the agent's connection stays the keeper's) and
 * sends the output and the exit status back. One request per connection,
 * one at a time; every length is bounded and a client that stalls is
 * dropped after ATTACH_IO_MS. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

struct vm;

/* A request's JSON, the stdin a command is given, one frame of output. */
#define ATTACH_REQ_MAX (1u << 20)
#define ATTACH_STDIN_MAX (16u << 20)
#define ATTACH_FRAME_MAX (64u << 20)
/* A client that sends or reads nothing for this long is dropped. */
#define ATTACH_IO_MS 10000

/* `provium attach --lua`: run chunk (len bytes) in the keeper's Lua state
 * with `vm` the VM at index i of the kept ones; append what it printed and
 * returned to out; *error when it raised (out holds the message), *more when
 * the chunk is not finished yet (the prompt asks for the next line). */
typedef void (*attach_eval_fn)(void *ctx, size_t i, const char *chunk, size_t len, struct buf *out,
                               bool *error, bool *more);

/* --keep-on-failure was given: set by main, inherited by the files'
 * processes (forks), not by the runs a test starts (no environment). */
extern bool attach_keep_on_failure;

/* In a file's process (--keep-on-failure): keep the running VMs of vms
 * (n of them) until SIGINT, SIGTERM or SIGHUP, serving `provium attach`;
 * why says what failed (printed with the attach lines). Returns 1 once the
 * VMs were kept and a signal ended it (the signals stay blocked: the file
 * ends next), 0 when none was running, or -errno with err. */
int attach_keep(struct vm **vms, size_t n, const char *why, attach_eval_fn eval, void *ctx,
                struct pv_err *err);

/* Append the command line that attaches gdb to vm's --gdb stub, booted
 * as b says: gdb -ex 'target remote :PORT' <its vmlinux (sym_vmlinux),
 * else the kernel and a note that symbols need a vmlinux>. */
struct vm_boot;
void attach_gdb_line(const struct vm *vm, const struct vm_boot *b, struct buf *out);

/* `provium attach [--run PID] [--lua] NAME [-- CMD...]`: the exit code (the
 * command's, or 2 when provium attach could not run it). */
int attach_main(int argc, char **argv);
