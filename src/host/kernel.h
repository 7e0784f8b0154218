/* The kernel cache and the rule that picks the default kernel. Cached
 * kernels live in <cache_root>/kernels/<version>/: a vmlinuz and
 * lib/modules/<version>/ with modules.dep. A directory there is complete or
 * absent: fetches build it under a temporary name and rename it. */
#pragma once

#include "util.h"

struct kernel_info {
    char *version;     /* "6.1.0-56-cloud-amd64"; never NULL once filled */
    char *vmlinuz;     /* absolute path of the bzImage */
    char *modules_dir; /* absolute lib/modules/<version>; NULL if none */
};

/* The cache root: $PROVIUM_CACHE as given, else provium's directory in the
 * user's cache (user_cache_dir: $XDG_CACHE_HOME/provium or
 * ~/.cache/provium, made 0700, refused when someone else could have
 * planted something in it). Resolved once per process. Caller frees. */
int kernel_cache_dir(char **ret, struct pv_err *err);
/* The same for the callers after main's start-up, which called
 * kernel_cache_dir and stopped on its error: NULL only without that. */
char *kernel_cache_root(void);

/* Fetch Debian's cloud kernel (the package linux-image-cloud-amd64 depends
 * on) into <cache_root>/kernels/<version>/ with apt-get download, dpkg-deb
 * and depmod; no root needed, network needed. If that version is cached
 * already, nothing is downloaded. Fills *ret (release it with
 * kernel_info_release()). On failure nothing is left behind. */
int kernel_fetch(const char *cache_root, struct kernel_info *ret, struct pv_err *err);

/* Every complete cached kernel, newest first (strverscmp on the version).
 * *ret is NULL and *ret_n 0 when there are none; free the array with
 * kernel_info_free_array(). */
int kernel_list(const char *cache_root, struct kernel_info **ret, size_t *ret_n,
                struct pv_err *err);

/* The built-in default profile's kernel: $PROVIUM_KERNEL (a bzImage; its
 * modules from $PROVIUM_MODULES, a lib/modules/<version> directory, if set),
 * else the newest cached kernel, else /boot/vmlinuz-$(uname -r) when
 * readable (with /lib/modules/$(uname -r) if it has modules.dep), else
 * -ENOENT. The version of a PROVIUM_KERNEL or /boot kernel is read from the
 * bzImage header when possible. */
int kernel_find_default(const char *cache_root, struct kernel_info *ret, struct pv_err *err);

/* Free the strings and zero *k; safe on a zeroed or released struct. */
void kernel_info_release(struct kernel_info *k);
/* Release n entries and free the array; NULL is a no-op. */
void kernel_info_free_array(struct kernel_info *k, size_t n);

/* The release string in a bzImage's setup header (its kernel_version
 * field: "6.1.0-56-cloud-amd64" of "6.1.0-56-cloud-amd64 (debian-kernel@...)
 * #1 SMP ..."), or NULL when path is no bzImage. Caller frees. */
char *kernel_image_version(const char *path);

/* Why the file at path cannot be booted as a kernel, as the end of a
 * sentence ("is an ELF file (a vmlinux?), not a bzImage: use
 * arch/x86/boot/bzImage"), or NULL when it is a bzImage (or unreadable:
 * the caller's open says so). */
const char *kernel_not_bzimage(const char *path);

/* The configuration file of the kernel at vmlinuz, of version (may be
 * NULL), where one is kept: `config` beside it (a fetched kernel),
 * `config-<version>` beside it, /boot/config-<version>, Debian's
 * /usr/src/linux-headers-<version>/.config, or the tree's .config of an
 * arch/x86/boot/bzImage. NULL when none exists. Caller frees. */
char *kernel_find_config(const char *vmlinuz, const char *version);

/* What can be known before booting vmlinuz with modules_dir (may be NULL):
 * that it is a bzImage, that modules_dir is not the parent of the
 * versioned folder (lib/modules rather than lib/modules/<version>), and
 * that its version (the folder's name) is the bzImage's. -errno with err
 * naming the file and the fix. */
int kernel_check_boot(const char *vmlinuz, const char *modules_dir, struct pv_err *err);

/* The modules of the bzImage at vmlinuz where the default profile finds
 * them: lib/modules/<version> beside it (a fetched kernel, or `make
 * modules_install INSTALL_MOD_PATH=` its directory), else the host's
 * /lib/modules/<version>; NULL when neither has a modules.dep. */
char *kernel_modules_for(const char *vmlinuz);

/* `provium kernel SUB ...` (argv[2] is SUB): the exit status
 * (src/host/kernel_cmd.c). */
int cmd_kernel(int argc, char **argv);
