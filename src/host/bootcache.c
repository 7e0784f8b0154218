#include "bootcache.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "accel.h"
#include "disk/disk.h"
#include "cache.h"
#include "hash.h"

bool bootcache_eligible(const struct vm_boot *b)
{
    /* A profile's disk may be the root file system, mounted at boot. An
     * attached disk is not in the entry: the guest re-reads it after the
     * resume (lua/disk.lua), and its size is in the key; a qcow2 image's
     * virtual size is not known here. */
    if (b->disks && b->disks[0])
        return false;
    for (size_t i = 0; i < b->nattached; i++) {
        char file[48];
        const char *format;
        uint64_t size;
        if (disk_size(b->attached[i].disk, &size) < 0 ||
            (disk_plain(b->attached[i].disk, file, sizeof(file), &format) == 1 &&
             !strcmp(format, "qcow2")))
            return false;
    }
    return true;
}

void bootcache_key(const struct vm_boot *b, char key[65])
{
    struct sha256 *h = sha256_new();
    sha256_update_str(h, "provium boot cache 3");
    sha256_update_str(h, cache_env_digest());
    cache_hash_file(h, b->kernel);
    cache_hash_file(h, b->initrd);
    sha256_update_str(h, b->cmdline);
    char shape[96];
    snprintf(shape, sizeof(shape), "%llu/%d/%s%llu", (unsigned long long)b->memory, b->cpus,
             b->has_rng_seed ? "seed " : "", (unsigned long long)b->rng_seed);
    sha256_update_str(h, shape);
    if (b->no_pvh) /* the kernel unpacked itself, and chose its layout */
        sha256_update_str(h, "bzimage");
    /* NICs are devices of the machine saved: its MACs, in their slots */
    for (size_t i = 0; i < b->nnics; i++) {
        const uint8_t *m = b->nics[i].mac;
        snprintf(shape, sizeof(shape), "nic %02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3],
                 m[4], m[5]);
        sha256_update_str(h, shape);
    }
    /* attached disks are devices too: each slot's serial, size and mode */
    for (size_t i = 0; i < b->nattached; i++) {
        const struct vm_disk *d = &b->attached[i];
        uint64_t size = 0;
        disk_size(d->disk, &size);
        snprintf(shape, sizeof(shape), "disk %u %s %llu %d", d->slot, d->id,
                 (unsigned long long)size, d->readonly);
        sha256_update_str(h, shape);
    }
    sha256_final_hex(h, key);
}

/* Set when the cache could not take a boot: this process boots cold. */
static bool unwritable;

static void unsaved(struct vm *vm, const char *why)
{
    fprintf(stderr, "provium: boot cache: vm `%s`: boot not saved (%s); booting cold from now on\n",
            vm->name, why);
    unwritable = true;
}

/* The entry's files are the guest's memory: its owner's alone. vm.c writes
 * the RAM file 0644 (umask applied); the rest 0600. */
static void make_private(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            fchmodat(dirfd(d), e->d_name, 0600, AT_SYMLINK_NOFOLLOW);
    if (d)
        closedir(d);
}

/* Boot vm cold with plan b and save the boot as entry, which stops the VM:
 * 0 when saved, with *ret_use the entry in use (cache_use); 1 when the cache
 * could not take it (nothing is installed); -errno when the boot failed. */
static int save(struct vm *vm, const struct vm_boot *b, const char *dir, const char *entry,
                int *ret_use, struct pv_err *err)
{
    char why[sizeof(err->msg)] = "";
    struct statvfs fs;
    struct pv_err serr = {0};
    _cleanup_(cache_work_close) struct cache_work work = CACHE_WORK_INIT;
    _cleanup_free_ char *tmp = NULL;
    int r = 1;
    /* the entry holds what the guest's RAM holds */
    if (statvfs(dir, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < b->memory + (64u << 20))
        snprintf(why, sizeof(why), "%s has %llu MiB free, the guest's RAM may take %llu MiB", dir,
                 (unsigned long long)((uint64_t)fs.f_bavail * fs.f_frsize >> 20),
                 (unsigned long long)(b->memory >> 20));
    else if (cache_work_open(dir, &work, &serr) < 0)
        snprintf(why, sizeof(why), "%s", serr.msg);
    else if (mkdir((tmp = xasprintf("%s/%s", work.path, strrchr(entry, '/') + 1)), 0700) < 0)
        snprintf(why, sizeof(why), "%s: %s", tmp, strerror(errno));
    else {
        vm->quiet = true; /* the VM the test gets is the resume that follows */
        r = vm_save_boot(vm, b, tmp, err);
        vm->quiet = false;
        if (r > 0)
            snprintf(why, sizeof(why), "%s", err->msg);
        if (r == 0) {
            make_private(tmp);
            int use = cache_install(tmp, entry, &serr);
            if (use == -EEXIST) /* a peer saved the same boot first: that one, then */
                use = cache_use(entry);
            if (use < 0) {
                snprintf(why, sizeof(why), "%s", use == -ENOENT ? strerror(ENOENT) : serr.msg);
                r = 1;
            }
            *ret_use = use;
        }
    }
    if (r > 0)
        unsaved(vm, why);
    return r; /* the work directory goes, with what a peer's install made redundant */
}

/* What a failed resume says about its entry. */
enum verdict {
    KEEP,    /* not the entry's fault: the claim, the host, the kernel, QEMU, the agent */
    DISCARD, /* its own bytes are damaged */
    GONE,    /* another process discarded it meanwhile */
};

/* The entry goes only when its bytes are found wrong (cache_check): a
 * resume the claim refused, or that the host had no memory for (ENOMEM),
 * or whose kernel is missing, QEMU could not start or agent did not answer,
 * leaves an intact entry that the next boot can use (docs/boot-cache.md). */
static enum verdict judge(int r, const char *entry)
{
    if (r == -ENOMEM)
        return KEEP; /* the claim's refusal, or the host's: never the bytes */
    struct pv_err why = {0};
    int c = cache_check(entry, &why);
    return c == -EBADMSG ? DISCARD : c == -ENOENT ? GONE : KEEP;
}

int bootcache_boot(struct vm *vm, const struct vm_boot *base, const struct vm_boot *plan,
                   const char *dir, struct pv_err *err)
{
    char key[65];
    bootcache_key(base, key);
    _cleanup_free_ char *entry = xasprintf("%s/%s.boot", dir, key);
    for (int attempt = 1;; attempt++) {
        int r;
        /* in use from before the resume opens its files until QEMU ends */
        _cleanup_close_ int use = cache_use(entry);
        if (use < 0) {
            if (unwritable)
                return vm_boot(vm, plan, err);
            if ((r = mkdir_p(dir, 0700)) < 0) {
                unsaved(vm, strerror(-r));
                return vm_boot(vm, plan, err);
            }
            if ((r = save(vm, base, dir, entry, &use, err)) < 0)
                return r;
            if (r > 0)
                return vm_boot(vm, plan, err);
        }
        r = vm_resume_boot(vm, entry, plan, err);
        if (r == 0) {
            /* the VM's QEMU maps the entry's RAM: in use while it runs */
            vm->cache_hold = steal_fd(&use);
            cache_touch(entry);
            return 0;
        }
        enum verdict v = judge(r, entry);
        if (v == KEEP || attempt == 2)
            return r;
        if (v == DISCARD) {
            fprintf(stderr,
                    "provium: boot cache: vm `%s`: %s failed to resume (%.*s); dropped, booting "
                    "cold\n",
                    vm->name, entry, (int)strcspn(err->msg, "\n"), err->msg);
            cache_discard(entry);
        }
    }
}
