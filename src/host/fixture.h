/* Persistent fixtures (docs/fixtures.md): a *.fixture.lua
 * file that boots and prepares a VM and returns its snapshot, built once
 * per cache key and restored by every test file that asks for it. */
#pragma once

#include "config.h"

/* The file of fixture `name` ("fixtures/base"): under each root, then
 * under from_dir (the asking file's directory). NULL when none exists. */
char *fixture_find(const struct config *cfg, const char *name, const char *from_dir);

/* The cache key (64 hex digits) of the fixture file at path: its source,
 * the keys of the fixtures it names, the helpers it requires (transitively),
 * the host files it pushes or depends on (path, mtime, size), the agent,
 * QEMU's version, the machine, the accelerator and the transport; then the
 * kernel and initrd of each profile its last build booted (recorded at
 * build time, see docs/fixtures.md). */
int fixture_key(const struct config *cfg, const char *path, char key[65], struct pv_err *err);

struct fixture_result {
    char *snap; /* the cached snapshot to restore */
    bool built; /* built now (else a cache hit) */
};

/* The snapshot of fixture `name` (a lab fixture's directory when lab),
 * built if the cache does not have it:
 * under a per-key lock (another process building the same key is waited
 * for; a crashed holder's lock is simply taken over), in a separate
 * process with its own Lua state, installed atomically. display names the
 * asking file (for fixture_build_waiting). */
int fixture_get(const struct config *cfg, const char *name, const char *from_dir, bool lab,
                const char *display, struct fixture_result *res, struct pv_err *err);
/* Whether the fixture file at path is a lab fixture: its source (code, not
 * comments or strings) calls provium:snapshot (docs/fixtures.md). For the
 * `provium fixture` commands, which have no asking call to tell them. */
bool fixture_is_lab(const char *path);
/* In a fixture's build: a VM of this profile booted (the build records the
 * profiles, fixture_key folds in their kernels). */
void fixture_note_boot(const char *profile);
