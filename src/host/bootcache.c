#include "bootcache.h"

#include <stdio.h>
#include <sys/stat.h>

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
    sha256_update_str(h, "provium boot cache 1");
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

/* Boot vm cold with plan b and save the boot as entry; 0 when saved, 1
 * when the cache could not take it. The VM runs on either way. */
static int save(struct vm *vm, const struct vm_boot *b, const char *dir, const char *entry,
                struct pv_err *err)
{
    vm->quiet = true; /* the VM the test gets is the resume that follows */
    int r = vm_boot(vm, b, err);
    vm->quiet = false;
    if (r < 0)
        return r;
    _cleanup_free_ char *work = NULL;
    struct pv_err serr = {0};
    r = cache_workdir(dir, &work, &serr);
    _cleanup_free_ char *tmp = work ? xasprintf("%s/%s", work, strrchr(entry, '/') + 1) : NULL;
    if (r == 0 && mkdir(tmp, 0755) < 0)
        r = pv_err_set(&serr, errno, "%s: %s", tmp, strerror(errno));
    if (r == 0)
        r = vm_save_boot(vm, tmp, &serr);
    if (r == 0 && rename(tmp, entry) < 0 && errno != EEXIST && errno != ENOTEMPTY)
        r = pv_err_set(&serr, errno, "%s: %s", entry, strerror(errno));
    if (tmp) {
        rm_rf(tmp); /* what a peer's install made redundant, or a failed save */
        rmdir(work); /* unless a fixture build of this process works there too */
    }
    if (r == 0)
        return 0;
    if (vm->state != VM_BOOTED) /* the VM died while it was saved */
        return pv_err_set(err, -r, "%s", serr.msg);
    unsaved(vm, serr.msg);
    return 1;
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
            vm_kill(vm);
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
