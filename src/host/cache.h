/* The cache of snapshots that fixtures (fixture.c) and the boot cache
 * (bootcache.c) share: one directory, cache_dir (made 0700), holding
 *   <key>.snap/     a VM fixture: a snapshot directory (docs/snapshots.md)
 *   <key>.lab/      a lab fixture (lab.json and one .snap/ per VM)
 *   <key>.boot/     a cached boot: a snapshot directory and the boot's logs
 *   *.lock          per-key build locks
 *   tmp/XXXXXX/     a process's work: what it builds, or what it deletes
 * Entries appear whole (a rename into place) and go whole (a rename into a
 * work directory, then the removal there). A process that uses an entry
 * holds a shared flock on it (cache_use); eviction tries an exclusive one
 * and skips the entry when it cannot. A work directory is flocked by its
 * owner for as long as it exists, and the sweep removes only those nobody
 * holds: no PID is compared, so two containers sharing a cache cannot take
 * each other's for their own (docs/fixtures.md, "The cache"). */
#pragma once

#include "config.h"

struct sha256;

/* A regular file, or (dir) a directory, at p. */
bool cache_has(const char *p, bool dir);
/* Hash what says a host file changed: its path, size and mtime. */
void cache_hash_file(struct sha256 *h, const char *path);
/* One line of a memo's inputs: path with its size and mtime. */
void cache_note_input(struct buf *inputs, const char *path);
/* A memo names the file that the inputs it lists made, so that a file named
 * by its content (boot.c's initrds) is found without making it again: the
 * file, when it exists and every input is unchanged (both then marked
 * used); NULL otherwise. */
char *cache_memo_get(const char *memo);
/* Write memo (atomically; a failure only costs the next lookup). */
void cache_memo_put(const char *memo, const char *out, const struct buf *inputs);
/* Keep the keep most recently used (by atime, cache_touch) regular files of
 * dir. */
void cache_trim(const char *dir, size_t keep);
/* The digest of what every key of this process shares, computed once:
 * the agent binary, QEMU's version, the machine, the accelerator and the
 * transport. */
const char *cache_env_digest(void);

/* A private work directory, dir/tmp/XXXXXX (mkdtemp, 0700), and the fd of
 * the exclusive flock its owner holds on it while it exists. A child forked
 * without exec shares the lock; QEMU does not inherit it (O_CLOEXEC). */
struct cache_work {
    char *path;
    int lock;
};
#define CACHE_WORK_INIT                                                                            \
    {                                                                                              \
        NULL, -1                                                                                   \
    }
/* Make one in cache dir (dir/tmp made 0700 if need be), after a sweep. */
int cache_work_open(const char *dir, struct cache_work *w, struct pv_err *err);
/* Remove it and everything in it, then drop its lock. Fine on a
 * CACHE_WORK_INIT one; usable with _cleanup_(cache_work_close). */
void cache_work_close(struct cache_work *w);
/* Remove the work directories under dir/tmp that no process holds: what an
 * owner that is gone (killed mid-build or mid-delete) left. */
void cache_sweep(const char *dir);

/* Use entry: a shared flock on it, which eviction respects, held until the
 * returned fd is closed. Returns the fd, -ENOENT when there is no such
 * entry (or it was evicted while this waited), or -errno. */
int cache_use(const char *entry);
/* Install tmp, a finished entry in a work directory, as entry, in use from
 * the start (no eviction can take it between the two): the fd as from
 * cache_use, or -EEXIST when a peer's directory entry is there already
 * (tmp is left to the work directory's removal), or -errno. */
int cache_install(const char *tmp, const char *entry, struct pv_err *err);
/* A restore used the entry, or a boot the file: its atime says so (eviction
 * and cache_trim keep the popular; the mtime may be part of a key). */
void cache_touch(const char *entry);

/* The verdict on an entry after a restore of it failed: are its own bytes
 * at fault? 0: they are intact (vm_snapshot_check, deep: the header reads
 * and matches this QEMU, machine and accelerator, the RAM file has its
 * recorded length and time, the device state and the pages their hashes;
 * a fixture's initrd is still there; a lab's index and every snapshot it
 * names likewise), so the failure was something else's
 * (the claim, the host's memory, the kernel, QEMU) and the entry must stay.
 * -EBADMSG: damaged, err says how; the entry should go. -ENOENT: there is
 * no entry. Another -errno: it could not be read; keep it. */
int cache_check(const char *entry, struct pv_err *err);
/* Remove entry now, in use or not: renamed into a work directory, removed
 * there. A process that has its files open or mapped keeps them until it
 * closes them; everyone else sees it whole or not at all. */
int cache_discard(const char *entry);
/* At start-up: the sweep, then the least recently used entries removed
 * until the cache fits in cache_max_size, skipping those a process uses.
 * Returns how many went. */
int cache_evict(const struct config *cfg);
/* `provium fixture list`: each entry's size, kind and key, then the total. */
void cache_list(const struct config *cfg);
