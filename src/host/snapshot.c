/* Saved machines (docs/snapshots.md, docs/boot-cache.md): a snapshot is a
 * header saying what the VM was booted with, then QEMU's migration stream,
 * zstd-compressed on the way by a thread (zpipe.c); a restore streams it
 * back into a new QEMU. The boot cache's saving boot runs with its RAM in a
 * memfd, so that its snapshot holds only the devices and its RAM becomes a
 * sparse file that resumes map copy-on-write. */
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "accel.h"
#include "guest.h"
#include "vm.h"
#include "vm_priv.h"
#include "zpipe.h"

#define SNAP_MAGIC "PROVIUM-SNAPSHOT 1\n"

/* How long a migration may take, compression included. */
static int64_t migration_deadline(void)
{
    return now_ns() + (int64_t)(120e9 * vm_globals.timeout_scale);
}

/* Wait for the migration to end: 0 when it completed. */
static int wait_migration(struct vm *vm, const char *what, struct pv_err *err)
{
    int64_t deadline = migration_deadline();
    /* a boot cache's stream ends within milliseconds: ask often at first */
    for (int ms = 1;; ms = MIN(ms * 2, 20)) {
        json_t *ret = NULL;
        int r = qmp_exec(&vm->qmp, "query-migrate", NULL, deadline, &ret, err);
        if (r < 0)
            return r;
        const char *st = json_string_value(json_object_get(ret, "status"));
        if (st && !strcmp(st, "completed")) {
            json_decref(ret);
            return 0;
        }
        if (st && (!strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
            const char *why = json_string_value(json_object_get(ret, "error-desc"));
            r = pv_err_set(err, EIO, "vm `%s`: %s failed: %s", vm->name, what, why ? why : st);
            json_decref(ret);
            return r;
        }
        json_decref(ret);
        if (now_ns() > deadline)
            return pv_err_set(err, ETIMEDOUT, "vm `%s`: %s timed out", vm->name, what);
        poll(NULL, 0, ms);
    }
}

/* The header: what a restore needs to start the same machine. */
static json_t *snap_header(struct vm *vm, const char *version)
{
    const struct vm_boot *b = &vm->plan;
    json_t *disks = json_array();
    for (size_t i = 0; b->disks && b->disks[i]; i++)
        json_array_append_new(
            disks, json_pack("{s:s, s:b}", "path", b->disks[i], "ro", b->disk_ro && b->disk_ro[i]));
    json_t *h = json_pack("{s:s, s:s, s:s, s:s, s:I, s:i, s:s, s:s, s:o}", "qemu", version,
                          "machine", vm_globals.machine, "accel", accel_name(vm_globals.accel),
                          "profile", vm->profile, "memory", (json_int_t)b->memory, "cpus", b->cpus,
                          "kernel", b->kernel, "cmdline", b->cmdline, "disks", disks);
    json_object_set_new(h, "initrd", b->initrd ? json_string(b->initrd) : json_null());
    json_object_set_new(h, "modules_dir",
                        b->modules_dir ? json_string(b->modules_dir) : json_null());
    json_object_set_new(h, "agent_timeout", json_real(b->agent_timeout));
    if (b->has_rng_seed)
        json_object_set_new(h, "rng_seed", json_integer((json_int_t)b->rng_seed));
    json_object_set_new(h, "vm", json_string(vm->name));
    return h;
}

/* Before a migration. x-ignore-shared: the stream leaves out guest RAM
 * that lives in a shared file (a boot the boot cache saves, and its
 * resumes); QEMU keeps a capability from one migration to the next, so
 * each sets it. An outgoing stream is not throttled: QEMU's default of 128
 * MiB/s made a snapshot of a fresh 512 MiB guest take 0.7 s, not 0.4. */
static int migration_setup(struct vm *vm, bool outgoing, bool ignore_shared, struct pv_err *err)
{
    int r = outgoing ? vm_qmp(vm, "migrate-set-parameters",
                              json_pack("{s:I}", "max-bandwidth", (json_int_t)1 << 40), err)
                     : 0;
    return r < 0 ? r
                 : vm_qmp(vm, "migrate-set-capabilities",
                          json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
                                    "x-ignore-shared", "state", ignore_shared),
                          err);
}

/* Stop the machine and write its snapshot to path. ram: the name, beside
 * path, of the shared file the VM's RAM lives in, which the stream then
 * leaves out; NULL: the stream carries the RAM. The VM stays stopped. */
static int save_machine(struct vm *vm, const char *path, const char *ram, struct pv_err *err)
{
    const char *version = qemu_version();
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return pv_err_set(err, errno, "vm `%s`: snapshot: %s: %s", vm->name, path, strerror(errno));
    json_t *h = snap_header(vm, version ? version : "?");
    json_object_set_new(h, "compression", json_string("zstd"));
    if (ram)
        json_object_set_new(h, "ram", json_string(ram));
    char *text = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(h);
    struct buf head = BUF_INIT;
    buf_adds(&head, SNAP_MAGIC);
    buf_adds(&head, text);
    buf_adds(&head, "\n");
    free(text);
    int r = write_all(fd, head.data, head.len);
    buf_release(&head);
    if (r < 0)
        return pv_err_set(err, -r, "vm `%s`: snapshot: %s: %s", vm->name, path, strerror(-r));
    /* QEMU writes the stream into a pipe; a thread compresses it into the file */
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return pv_err_set(err, errno, "vm `%s`: snapshot: %s", vm->name, strerror(errno));
    struct zpipe z;
    int zfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (zfd < 0) {
        r = pv_err_set(err, errno, "vm `%s`: snapshot: %s", vm->name, strerror(errno));
        close(p[0]);
        close(p[1]);
        return r;
    }
    if ((r = zpipe_start(&z, p[0], zfd, true, migration_deadline(), err)) < 0) {
        close(p[1]);
        return r;
    }
    /* stopped, the state is consistent and the copy one pass */
    r = vm_qmp(vm, "stop", NULL, err);
    if (r == 0)
        r = migration_setup(vm, true, ram != NULL, err);
    int64_t d = now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale);
    if (r == 0)
        r = qmp_exec_fd(&vm->qmp, "getfd", json_pack("{s:s}", "fdname", "snap"), p[1], d, NULL,
                        err);
    close(p[1]); /* QEMU holds its own copy now: EOF comes when it closes it */
    if (r == 0)
        r = qmp_exec(&vm->qmp, "migrate", json_pack("{s:s}", "uri", "fd:snap"), d, NULL, err);
    if (r == 0)
        r = wait_migration(vm, "snapshot", err);
    if (r < 0 && vm->state == VM_BOOTED)
        qmp_exec(&vm->qmp, "closefd", json_pack("{s:s}", "fdname", "snap"), d, NULL, NULL);
    struct pv_err zerr = {0};
    int zr = zpipe_join(&z, "compressing", &zerr);
    if (r == 0 && zr < 0)
        r = pv_err_set(err, -zr, "vm `%s`: snapshot to %s: %s", vm->name, path, zerr.msg);
    if (r < 0)
        unlink(path);
    return r;
}

int vm_snapshot(struct vm *vm, const char *path, struct pv_err *err)
{
    int r = vm_need_state(vm, "snapshot", VM_BOOTED, err);
    if (r < 0)
        return r;
    r = save_machine(vm, path, NULL, err);
    struct pv_err cerr = {0}; /* a failed snapshot's story is its own */
    int c = vm->state == VM_BOOTED ? vm_qmp(vm, "cont", NULL, r < 0 ? &cerr : err) : 0;
    return r < 0 ? r : c;
}

int vm_snapshot_parse_header(const char *buf, size_t n, json_t **ret_header, size_t *ret_len)
{
    size_t m = strlen(SNAP_MAGIC);
    const char *nl = n > m ? memchr(buf + m, '\n', n - m) : NULL;
    if (n < m || memcmp(buf, SNAP_MAGIC, m) || !nl)
        return -EINVAL;
    json_error_t je;
    json_t *h = json_loadb(buf + m, (size_t)(nl - buf) - m, 0, &je);
    if (!json_is_object(h)) {
        json_decref(h);
        return -EINVAL;
    }
    *ret_header = h;
    *ret_len = (size_t)(nl + 1 - buf);
    return 0;
}

/* Read and check a snapshot's header; *fd is left at the migration stream. */
static int snap_open(struct vm *vm, const char *path, json_t **header, int *ret_fd,
                     struct pv_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pv_err_set(err, errno, "vm `%s`: restore: %s: %s", vm->name, path, strerror(errno));
    _cleanup_free_ char *buf = xmalloc(VM_SNAP_HEADER_MAX);
    ssize_t n = pread(fd, buf, VM_SNAP_HEADER_MAX, 0);
    size_t len;
    if (n < 0 || vm_snapshot_parse_header(buf, (size_t)n, header, &len) < 0)
        return pv_err_set(err, EINVAL, "vm `%s`: restore: %s is not a provium snapshot", vm->name,
                          path);
    lseek(fd, (off_t)len, SEEK_SET);
    *ret_fd = steal_fd(&fd);
    return 0;
}

static int snap_mismatch(struct vm *vm, const char *path, const char *what, const char *was,
                         const char *is, struct pv_err *err)
{
    return pv_err_set(err, EINVAL, "vm `%s`: restore: %s was taken with %s %s, this is %s %s",
                      vm->name, path, what, was ? was : "?", what, is ? is : "?");
}

/* The boot plan a snapshot's header records. */
static void header_plan(json_t *h, struct vm_boot *b)
{
    const char *v;
    *b = (struct vm_boot){
        .kernel = xstrdup(json_string_value(json_object_get(h, "kernel")) ?: ""),
        .cmdline = xstrdup(json_string_value(json_object_get(h, "cmdline")) ?: ""),
        .memory = (uint64_t)json_integer_value(json_object_get(h, "memory")),
        .cpus = (int)json_integer_value(json_object_get(h, "cpus")),
        .agent_timeout = json_number_value(json_object_get(h, "agent_timeout")),
        .has_rng_seed = json_object_get(h, "rng_seed") != NULL,
        .rng_seed = (uint64_t)json_integer_value(json_object_get(h, "rng_seed")),
    };
    if ((v = json_string_value(json_object_get(h, "initrd"))))
        b->initrd = xstrdup(v);
    if ((v = json_string_value(json_object_get(h, "modules_dir"))))
        b->modules_dir = xstrdup(v);
    json_t *disks = json_object_get(h, "disks");
    if (json_array_size(disks)) {
        size_t n = json_array_size(disks);
        b->disks = xcalloc(n + 1, sizeof(char *));
        b->disk_ro = xcalloc(n + 1, sizeof(bool));
        for (size_t i = 0; i < n; i++) {
            json_t *d = json_array_get(disks, i);
            b->disks[i] = xstrdup(json_string_value(json_object_get(d, "path")) ?: "");
            b->disk_ro[i] = json_is_true(json_object_get(d, "ro"));
        }
    }
    if (b->agent_timeout <= 0)
        b->agent_timeout = 60 * vm_globals.timeout_scale;
}

/* Check a snapshot's header h against this run (profile unless plan,
 * machine, accelerator, QEMU) and find what the restore needs: *ret_plan
 * (plan, or the header's own in *own) and *ret_ram, the RAM file beside
 * it when the stream leaves the RAM out. */
static int check_header(struct vm *vm, const char *path, json_t *h, const struct vm_boot *plan,
                        struct vm_boot *own, const struct vm_boot **ret_plan, char **ret_ram,
                        struct pv_err *err)
{
    const char *v;
    const char *qemu = qemu_version() ? qemu_version() : "?";
    if (!plan && strcmp((v = json_string_value(json_object_get(h, "profile"))) ?: "", vm->profile))
        return snap_mismatch(vm, path, "profile", v, vm->profile, err);
    if (strcmp((v = json_string_value(json_object_get(h, "machine"))) ?: "", vm_globals.machine))
        return snap_mismatch(vm, path, "machine", v, vm_globals.machine, err);
    if (strcmp((v = json_string_value(json_object_get(h, "accel"))) ?: "",
               accel_name(vm_globals.accel)))
        return snap_mismatch(vm, path, "accelerator", v, accel_name(vm_globals.accel), err);
    if (strcmp((v = json_string_value(json_object_get(h, "qemu"))) ?: "", qemu))
        return snap_mismatch(vm, path, "QEMU", v, qemu_version(), err);
    if (!plan) {
        header_plan(h, own);
        plan = own;
        if (own->initrd && access(own->initrd, R_OK) < 0)
            return pv_err_set(err, ENOENT,
                              "vm `%s`: restore: %s needs the initrd %s, which is gone", vm->name,
                              path, own->initrd);
    }
    *ret_plan = plan;
    /* RAM kept in a file beside the snapshot: mapped copy-on-write */
    if (!(v = json_string_value(json_object_get(h, "ram"))))
        return 0;
    if (strchr(v, '/')) /* a name beside it, nothing else */
        return pv_err_set(err, EINVAL, "vm `%s`: restore: %s is not a provium snapshot", vm->name,
                          path);
    _cleanup_free_ char *dir = xstrdup(path);
    _cleanup_free_ char *ram = xasprintf("%s/%s", dirname(dir), v);
    struct stat st;
    bool gone = stat(ram, &st) < 0;
    if (gone || (uint64_t)st.st_size != plan->memory)
        return pv_err_set(err, EINVAL,
                          "vm `%s`: restore: %s needs its guest RAM in %s (%llu MiB), which is %s",
                          vm->name, path, ram, (unsigned long long)(plan->memory >> 20),
                          gone ? "gone" : "cut short");
    *ret_ram = steal_pointer(&ram);
    return 0;
}

/* Stream the migration at fd (zstd: decompressed on the way, through a
 * pipe) into the QEMU that waits for it, and let the guest run. On failure
 * the VM is dead: a damaged snapshot never leaves it half started. */
static int stream_in(struct vm *vm, const char *path, int fd, bool zstd, bool ram,
                     struct pv_err *err)
{
    int r = 0, qfd = fd, p[2] = {-1, -1};
    struct zpipe z;
    if (zstd) {
        int zfd = -1;
        if (pipe2(p, O_CLOEXEC) < 0 || (zfd = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0) {
            r = pv_err_set(err, errno, "vm `%s`: restore: %s", vm->name, strerror(errno));
            if (p[0] >= 0) {
                close(p[0]);
                close(p[1]);
            }
        } else if ((r = zpipe_start(&z, zfd, p[1], false, migration_deadline(), err)) < 0) {
            close(p[0]);
        } else {
            qfd = p[0];
        }
        zstd = r == 0;
    }
    int64_t d = now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale);
    if (r == 0)
        r = migration_setup(vm, false, ram, err);
    if (r == 0)
        r = qmp_exec_fd(&vm->qmp, "getfd", json_pack("{s:s}", "fdname", "snap"), qfd, d, NULL, err);
    if (zstd)
        close(p[0]);
    if (r == 0)
        r = qmp_exec(&vm->qmp, "migrate-incoming", json_pack("{s:s}", "uri", "fd:snap"), d, NULL,
                     err);
    if (r == 0)
        r = wait_migration(vm, "restore", err);
    if (r < 0 && vm->state == VM_BOOTED) {
        /* before the join: the thread may be blocked writing to QEMU */
        char what[sizeof(err->msg)];
        snprintf(what, sizeof(what), "restore from %s failed (%.300s)", path, err->msg);
        vm_died(vm, err, what);
    }
    if (zstd) {
        struct pv_err zerr = {0};
        int zr = zpipe_join(&z, "decompressing", &zerr);
        if (r == 0 && zr < 0)
            r = pv_err_set(err, -zr, "vm `%s`: restore from %s: %s", vm->name, path, zerr.msg);
    }
    if (r == 0)
        r = vm_qmp(vm, "cont", NULL, err);
    if (r < 0 && vm->state == VM_BOOTED) {
        vm_kill(vm);
        vm->state = VM_DEAD;
    }
    return r;
}

/* Start vm from the snapshot at path: with the plan its header records,
 * or (plan) with that one, which the caller vouches is the same machine.
 * fresh: the logs start empty (else they go on). since: what the agent's
 * deadline counts from, for the error. */
static int restore(struct vm *vm, const char *path, const struct vm_boot *plan, bool fresh,
                   const char *since, struct pv_err *err)
{
    json_t *h = NULL;
    _cleanup_close_ int fd = -1;
    int r = snap_open(vm, path, &h, &fd, err);
    if (r < 0)
        return r;
    bool zstd = !strcmp(json_string_value(json_object_get(h, "compression")) ?: "", "zstd");
    struct vm_boot own = {0};
    _cleanup_free_ char *ram = NULL;
    r = check_header(vm, path, h, plan, &own, &plan, &ram, err);
    json_decref(h);
    int agent_l = -1;
    if (r == 0)
        r = vm_launch(vm, plan, &(struct start){.incoming = true, .fresh = fresh, .ram_file = ram},
                      &agent_l, err);
    vm_boot_release(&own);
    if (r == 0)
        r = stream_in(vm, path, fd, zstd, ram != NULL, err);
    if (r < 0) {
        if (agent_l >= 0)
            close(agent_l);
        return r;
    }
    return vm_handshake(vm, agent_l, vm->plan.agent_timeout, since, err);
}

int vm_restore(struct vm *vm, const char *path, struct pv_err *err)
{
    int r = vm_need_stopped(vm, "restore", err);
    if (r < 0)
        return r;
    vm->from_boot_cache = false;
    return restore(vm, path, NULL, vm->state == VM_CREATED, "the restore", err);
}

int vm_resume_boot(struct vm *vm, const char *entry, const struct vm_boot *b, struct pv_err *err)
{
    int r = vm_need_stopped(vm, "boot", err);
    if (r == 0)
        r = vm_make_dir(vm, err);
    if (r < 0)
        return r;
    vm_drop_logs(vm);
    vm_copy_logs(entry, vm->dir, NULL); /* a log it lacks stays empty */
    vm->from_boot_cache = true;
    _cleanup_free_ char *snap = xasprintf("%s/vm.snap", entry);
    return restore(vm, snap, b, false, "the resume from the boot cache", err);
}

/* Copy the pages of the file fd that are not all zeros into a new sparse
 * file at path, as long as fd's (size). */
static int copy_nonzero(int fd, const char *path, uint64_t size, struct pv_err *err)
{
    _cleanup_close_ int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0 || ftruncate(out, (off_t)size) < 0)
        return pv_err_set(err, errno, "%s: %s", path, strerror(errno));
    enum { PAGE = 4096, CHUNK = 256 * PAGE };
    static const char zero[PAGE];
    _cleanup_free_ char *buf = xmalloc(CHUNK);
    for (off_t at = 0; (at = lseek(fd, at, SEEK_DATA)) >= 0;) {
        ssize_t n = pread(fd, buf, CHUNK, at);
        if (n <= 0)
            return pv_err_set(err, n < 0 ? errno : EIO, "reading the guest's RAM: %s",
                              n < 0 ? strerror(errno) : "cut short");
        for (ssize_t i = 0, j; i<n; i = j> i ? j : i + PAGE) {
            for (j = i; j < n && memcmp(buf + j, zero, (size_t)MIN(PAGE, n - j));)
                j += MIN(PAGE, n - j); /* the non-zero pages from i, written at once */
            ssize_t w = j > i ? pwrite(out, buf + i, (size_t)(j - i), at + i) : 0;
            if (w != j - i)
                return pv_err_set(err, w < 0 ? errno : ENOSPC, "%s: %s", path,
                                  w < 0 ? strerror(errno) : "short write");
        }
        at += n;
    }
    return 0;
}

int vm_save_boot(struct vm *vm, const struct vm_boot *b, const char *dir, struct pv_err *err)
{
    /* While it boots, the guest's RAM is a memfd that QEMU opens through
     * /proc: as fast as anonymous memory (a file on disk costs the boot
     * 0.7 s in page faults), and nothing is left behind if provium dies. */
    _cleanup_close_ int mfd = memfd_create("provium-ram", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, (off_t)b->memory) < 0) {
        pv_err_set(err, errno, "a memfd for the guest's RAM: %s", strerror(errno));
        return 1;
    }
    _cleanup_free_ char *memfd = xasprintf("/proc/%d/fd/%d", (int)getpid(), mfd);
    int r = vm_boot_as(vm, b, &(struct start){.fresh = true, .ram_file = memfd, .ram_shared = true},
                       err);
    if (r < 0)
        return r;
    _cleanup_free_ char *snap = xasprintf("%s/vm.snap", dir);
    _cleanup_free_ char *ram = xasprintf("%s/ram", dir);
    r = guest_ping(&(struct target){vm, 0}, err); /* the kernel log so far has arrived */
    if (r == 0)
        r = save_machine(vm, snap, "ram", err);
    if (r == 0)
        r = vm_copy_logs(vm->dir, dir, err);
    vm_kill(vm); /* stopped: the memfd holds the RAM as the snapshot left it */
    if (r == 0)
        r = copy_nonzero(mfd, ram, b->memory, err);
    return r < 0 ? 1 : 0;
}
