/* provium.toml: the [provium] settings and the kernel profiles.
 *
 *   [provium]
 *   roots = ["tests"]            # absolute once loaded
 *   cache_dir = "~/.cache/x"     # default $XDG_CACHE_HOME/provium/fixtures
 *   cache_max_size = "20G"       # or integer bytes
 *   boot_cache = true            # false: every boot is cold (docs/boot-cache.md)
 *
 *   [profiles.peios]             # [profile.peios] is the legacy spelling
 *   kernel = "bzImage"           # required unless root/rootfs is set; checked at boot
 *   cmdline = "console=ttyS0"    # optional; whitespace-only is an error
 *
 *   [profiles]
 *   from_dir = "profiles"        # one profile per profiles/<name>/profile.provium.toml
 *
 * Profile keys: kernel, initrd, rootfs (alias root), cmdline, append (legacy:
 * added after cmdline), cmdline_file, init, guest_os ("linux", the default,
 * or "peios"), inject_agent, agent_overlay_path, modules, vmlinux, disks,
 * build, build_out, agent_boot_timeout (seconds, or a string such as "90s").
 *
 * Relative paths resolve against the directory of the file that names them
 * and "~/" against $HOME; relative paths are folded lexically ("a/../b" is
 * "b"), absolute ones and those starting with {out} are kept as written.
 * Unknown keys and wrong types are errors. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define CONFIG_FILE_NAME "provium.toml"
#define CONFIG_PROFILE_FILE_NAME "profile.provium.toml"

struct profile {
    char *name;
    char *source; /* path of the file that defined it */
    int line;     /* line of its table header (1 for a from_dir profile file) */
    char *dir;    /* directory relative paths were resolved against (and build runs in) */
    /* Paths (kernel, initrd, rootfs, agent_overlay_path, modules, vmlinux,
     * build_out, cmdline_file, disks) are resolved, except that a path starting with
     * the token "{out}" is kept as written for the caller to expand to the
     * build output directory. init is a guest path, kept as written. Unset
     * strings are NULL. kernel may be NULL when rootfs (or its alias root)
     * is set: the kernel is then to be found inside that root. */
    char *kernel, *initrd, *rootfs, *cmdline, *init, *guest_os, *agent_overlay_path, *modules;
    char *vmlinux;   /* the kernel's ELF image with debug info (symbolize.h), or NULL */
    char *build;     /* from "build": a command such as "./build.sh {out}", verbatim */
    char *build_out; /* from "build_out": the directory {out} names; NULL = caller's default */
    /* cmdline_file is read at load and its text (whitespace collapsed) put
     * before cmdline, unless the path starts with {out}: the build makes
     * that file, so cmdline_file_pending is set and the caller reads it
     * after the build, putting its text first. */
    char *cmdline_file;
    bool cmdline_file_pending;
    char **disks; /* paths, resolved */
    size_t ndisks;
    char **disk_ids;     /* per disk: the "id" of a { path, id, readonly } entry, or NULL */
    bool *disk_readonly; /* per disk: "readonly" of such an entry, default false */
    bool inject_agent;   /* default true */
    bool pvh;            /* default true: false boots the bzImage as it is (vm_boot.no_pvh) */
    /* initrd = "none": the overlay alone (the agent, no shell); unset, a
     * profile gets the default profile's busybox (docs/configuration.md) */
    bool initrd_none;
    double agent_boot_timeout; /* seconds, 0 = unset */
};

struct config {
    char *path, *dir; /* the file and its directory (absolute); path NULL if none */
    char **roots;     /* absolute */
    size_t nroots;
    char *cache_dir;          /* absolute */
    uint64_t cache_max_size;  /* bytes, default 20 GiB */
    bool boot_cache;          /* default true; --no-boot-cache turns it off */
    struct profile *profiles; /* sorted by name */
    size_t nprofiles;
};

/* Load the provium.toml at path. On failure err says why, in one of these
 * forms (err->code is EINVAL except for read errors, which keep the errno):
 *   read `<path>`: <strerror>
 *   parse `<path>`:<line>:<col>: <what>
 *   invalid config in `<path>`:<line>: <message>
 * <path> is the file at fault: provium.toml or a from_dir profile file.
 * Returns 0 and a new config in *ret, or -errno. */
int config_load(const char *path, struct config **ret, struct pv_err *err);

/* Find the nearest provium.toml in start_dir (NULL = the current directory)
 * or its parents. Returns 0 and a new absolute path in *ret_path, or
 * -ENOENT. */
int config_find(const char *start_dir, char **ret_path);

/* A config without a file: no roots, no profiles, defaults set; dir is
 * start_dir (NULL = the current directory) made absolute. */
struct config *config_empty(const char *dir);

/* The profile called name, or NULL. */
const struct profile *config_profile(const struct config *c, const char *name);

/* Free c and everything in it. NULL is a no-op. */
void config_free(struct config *c);
