/* The cache of snapshots that fixtures (fixture.c) and the boot cache
 * (bootcache.c) share: one directory, cache_dir, holding
 *   <key>.snap      a VM fixture
 *   <key>.lab/      a lab fixture (lab.json and one .snap per VM)
 *   <key>.boot/     a cached boot (vm.snap and the boot's logs)
 *   *.lock          per-key build locks
 *   tmp/<pid>/      work in progress of a live process
 * Entries appear whole (rename) and go oldest first (cache_evict). */
#pragma once

#include "config.h"

struct sha256;

/* A regular file, or (dir) a directory, at p. */
bool cache_has(const char *p, bool dir);
/* Hash what says a host file changed: its path, size and mtime. */
void cache_hash_file(struct sha256 *h, const char *path);
/* The digest of what every key of this process shares, computed once:
 * the agent binary, QEMU's version, the machine, the accelerator and the
 * transport. */
const char *cache_env_digest(void);
/* This process's work directory, tmp/<pid> under dir (made now), after
 * removing those of processes that are gone. */
int cache_workdir(const char *dir, char **ret, struct pv_err *err);

/* A restore used the entry: its atime says so (eviction keeps the popular). */
void cache_touch(const char *entry);
/* Drop an entry that failed to restore. */
void cache_discard(const char *entry);
/* At start-up: the least recently used entries removed until the cache
 * fits in cache_max_size. Returns how many went. */
int cache_evict(const struct config *cfg);
/* `provium fixture list`: each entry's size, kind and key, then the total. */
void cache_list(const struct config *cfg);
