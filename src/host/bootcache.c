#include "bootcache.h"

#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "accel.h"
#include "cache.h"
#include "hash.h"

bool bootcache_eligible(const struct vm_boot *b)
{
    return !b->disks || !b->disks[0];
}

void bootcache_key(const struct vm_boot *b, char key[65])
{
    struct sha256 *h = sha256_new();
    sha256_update_str(h, "provium boot cache 2");
    sha256_update_str(h, cache_env_digest());
    cache_hash_file(h, b->kernel);
    cache_hash_file(h, b->initrd);
    sha256_update_str(h, b->cmdline);
    char shape[96];
    snprintf(shape, sizeof(shape), "%llu/%d/%s%llu", (unsigned long long)b->memory, b->cpus,
             b->has_rng_seed ? "seed " : "", (unsigned long long)b->rng_seed);
    sha256_update_str(h, shape);
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

/* Boot vm cold with plan b and save the boot as entry, which stops the VM:
 * 0 when saved, 1 when the cache could not take it (nothing is installed),
 * -errno when the boot failed. */
static int save(struct vm *vm, const struct vm_boot *b, const char *dir, const char *entry,
                struct pv_err *err)
{
    char why[sizeof(err->msg)] = "";
    struct statvfs fs;
    struct pv_err serr = {0};
    _cleanup_free_ char *work = NULL, *tmp = NULL;
    int r = 1;
    /* the entry holds what the guest's RAM holds */
    if (statvfs(dir, &fs) == 0 && (uint64_t)fs.f_bavail * fs.f_frsize < b->memory + (64u << 20))
        snprintf(why, sizeof(why), "%s has %llu MiB free, the guest's RAM may take %llu MiB", dir,
                 (unsigned long long)((uint64_t)fs.f_bavail * fs.f_frsize >> 20),
                 (unsigned long long)(b->memory >> 20));
    else if (cache_workdir(dir, &work, &serr) < 0)
        snprintf(why, sizeof(why), "%s", serr.msg);
    else if (mkdir((tmp = xasprintf("%s/%s", work, strrchr(entry, '/') + 1)), 0755) < 0)
        snprintf(why, sizeof(why), "%s: %s", tmp, strerror(errno));
    else {
        vm->quiet = true; /* the VM the test gets is the resume that follows */
        r = vm_save_boot(vm, b, tmp, err);
        vm->quiet = false;
        if (r > 0)
            snprintf(why, sizeof(why), "%s", err->msg);
        else if (r == 0 && rename(tmp, entry) < 0 && errno != EEXIST && errno != ENOTEMPTY) {
            snprintf(why, sizeof(why), "%s: %s", entry, strerror(errno));
            r = 1;
        }
    }
    if (tmp)
        rm_rf(tmp); /* what a peer's install made redundant, or a failed save */
    if (work)
        rmdir(work); /* unless a fixture build of this process works there too */
    if (r > 0)
        unsaved(vm, why);
    return r;
}

int bootcache_boot(struct vm *vm, const struct vm_boot *base, const struct vm_boot *plan,
                   const char *dir, struct pv_err *err)
{
    char key[65];
    bootcache_key(base, key);
    _cleanup_free_ char *entry = xasprintf("%s/%s.boot", dir, key);
    for (int attempt = 1;; attempt++) {
        int r;
        if (!cache_has(entry, true)) {
            if (unwritable)
                return vm_boot(vm, plan, err);
            if (mkdir_p(dir, 0755) < 0 && errno != EEXIST) {
                unsaved(vm, strerror(errno));
                return vm_boot(vm, plan, err);
            }
            if ((r = save(vm, base, dir, entry, err)) < 0)
                return r;
            if (r > 0)
                return vm_boot(vm, plan, err);
        }
        r = vm_resume_boot(vm, entry, plan, err);
        if (r == 0) {
            cache_touch(entry);
            return 0;
        }
        if (vm->state != VM_DEAD && r != -EINVAL)
            return r; /* it never started (a claim, a missing kernel): the entry is fine */
        if (attempt == 2)
            return r;
        fprintf(stderr,
                "provium: boot cache: vm `%s`: %s failed to resume (%.*s); dropped, booting "
                "cold\n",
                vm->name, entry, (int)strcspn(err->msg, "\n"), err->msg);
        cache_discard(entry);
    }
}
