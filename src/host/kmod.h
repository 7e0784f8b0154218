/* Which module files to load, in which order, for a list of module names,
 * read from a kernel's modules tree (the modules.dep and modules.builtin
 * files that depmod writes). No logging and no loading here. */
#pragma once

#include "util.h"

/* Resolve module names ("virtio_console", "virtio-rng": '-' and '_' are
 * equivalent) against modules_dir/modules.dep, modules_dir being a
 * lib/modules/<version> directory.
 *
 * On success *ret_paths is a NULL-terminated array of module file paths
 * relative to modules_dir (as modules.dep spells them: "kernel/.../x.ko",
 * ".ko.xz", ".ko.zst" or ".ko.gz"), in load order: every dependency before
 * its dependents, each module once. The order is deterministic: the names in
 * the order given, each preceded by its dependencies, which are visited in
 * the reverse of their modules.dep order as modprobe does. Free it with
 * kmod_free_paths().
 *
 * A name listed in modules.builtin (built into the kernel; the file may be
 * absent) is skipped. A name in neither file is -ENOENT naming it and
 * modules_dir. A malformed modules.dep line (no ':', a name that is not a
 * module file, an absolute path or a ".." component) is -EINVAL naming the
 * file and line; a dependency cycle is -ELOOP naming the modules in it. */
int kmod_order(const char *modules_dir, const char *const names[], size_t n, char ***ret_paths,
               struct pv_err *err);
/* The files of modules_dir that kmod_order reads, NULL-terminated: what a
 * cached result of it depends on (boot.c's initrd memo). */
extern const char *const kmod_index_files[];
/* Free an array from kmod_order(); NULL is a no-op. */
void kmod_free_paths(char **paths);
