/* The cache directory fixtures and boots share (src/host/cache.c): work
 * directories, entries in use, eviction, the verdict on a failed restore,
 * and the boot cache's handling of a resume that fails. Real directories
 * and real processes: "another process" is a child from fork() that holds
 * a lock the way another provium would, possibly from another container
 * (so its PID means nothing here). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include "hash.h"

#include "accel.h"
#include "bootcache.h"
#include "cache.h"
#include "qemu.h"
#include "vm.h"

static char *new_dir(void)
{
    char *d = xstrdup("/tmp/pv-test-cache-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void put(const char *path, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
}

/* A file of n bytes that takes disk blocks (eviction counts those). */
static void put_blocks(const char *path, size_t n)
{
    char *b = xmalloc(n);
    memset(b, 'x', n);
    put(path, b, n);
    free(b);
}

static char *entry_name(const char *dir, char c, const char *suffix)
{
    char key[65];
    memset(key, c, 64);
    key[64] = 0;
    return xasprintf("%s/%s%s", dir, key, suffix);
}

/* The names in dir, sorted, space separated ("" when empty or missing). */
static char *listing(const char *dir)
{
    struct dirent **v;
    int n = scandir(dir, &v, NULL, alphasort);
    struct buf b = BUF_INIT;
    for (int i = 0; i < n; i++) {
        if (strcmp(v[i]->d_name, ".") && strcmp(v[i]->d_name, ".."))
            buf_addf(&b, "%s%s", b.len ? " " : "", v[i]->d_name);
        free(v[i]);
    }
    if (n >= 0)
        free(v);
    return buf_steal(&b);
}

/* ---- another process ---- */

struct peer {
    pid_t pid;
    int release; /* closing it lets the peer exit */
};

/* Fork a peer that locks each path (how: LOCK_SH or LOCK_EX), says so,
 * and holds the locks until released. */
static struct peer peer_locking(const char *const *paths, int how)
{
    int ready[2], release[2];
    assert_int_equal(pipe2(ready, O_CLOEXEC), 0);
    assert_int_equal(pipe2(release, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(ready[0]);
        close(release[1]);
        for (size_t i = 0; paths[i]; i++) {
            int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
            if (fd < 0 || flock(fd, how | LOCK_NB) < 0)
                _exit(1);
        }
        (void)!write(ready[1], "r", 1);
        char c;
        (void)!read(release[0], &c, 1);
        _exit(0);
    }
    close(ready[1]);
    close(release[0]);
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    close(ready[0]);
    return (struct peer){pid, release[1]};
}

static void peer_release(struct peer *p)
{
    close(p->release);
    int status;
    assert_int_equal(waitpid(p->pid, &status, 0), p->pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A PID no process here has: a child's, reaped. In another PID namespace
 * a live process may well have it. */
static pid_t gone_pid(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(0);
    assert_int_equal(waitpid(pid, NULL, 0), pid);
    return pid;
}

/* ---- eviction ---- */

static void test_evict_skips_entries_in_use(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = new_dir();
    _cleanup_free_ char *boot = entry_name(dir, 'a', ".boot");
    _cleanup_free_ char *snap = entry_name(dir, 'b', ".snap");
    _cleanup_free_ char *lab = entry_name(dir, 'c', ".lab");
    _cleanup_free_ char *ram = xasprintf("%s/ram", boot);
    _cleanup_free_ char *index = xasprintf("%s/lab.json", lab);
    assert_int_equal(mkdir(boot, 0700), 0);
    assert_int_equal(mkdir(lab, 0700), 0);
    put_blocks(ram, 64 << 10);
    put_blocks(snap, 64 << 10);
    put_blocks(index, 64 << 10);
    /* the boot is the oldest: it would go first */
    struct timespec old[2] = {{1000, 0}, {1000, 0}};
    assert_int_equal(utimensat(AT_FDCWD, boot, old, 0), 0);
    struct config cfg = {.cache_dir = dir, .cache_max_size = 0};

    /* another process resumed a VM from the boot: it holds it while QEMU runs */
    struct peer p = peer_locking((const char *const[]){boot, NULL}, LOCK_SH);
    assert_int_equal(cache_evict(&cfg), 2);
    assert_true(cache_has(boot, true));
    assert_true(cache_has(ram, false));
    assert_false(cache_has(snap, false));
    assert_false(cache_has(lab, true));
    _cleanup_free_ char *tmp = xasprintf("%s/tmp", dir);
    _cleanup_free_ char *left = listing(tmp);
    assert_string_equal(left, "");

    /* its VM is gone: now the boot goes too */
    peer_release(&p);
    assert_int_equal(cache_evict(&cfg), 1);
    assert_false(cache_has(boot, true));
    _cleanup_free_ char *all = listing(dir);
    assert_string_equal(all, "tmp");
    rm_rf(dir);
}

/* Using an entry waits for nothing but an evictor's rename, and finds out
 * when the entry went meanwhile. */
static void test_use_and_discard(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = new_dir();
    _cleanup_free_ char *snap = entry_name(dir, 'd', ".snap");
    put(snap, "contents", 8);
    int fd = cache_use(snap);
    assert_true(fd >= 0);
    /* in use: no eviction, whatever the size */
    struct config cfg = {.cache_dir = dir, .cache_max_size = 0};
    assert_int_equal(cache_evict(&cfg), 0);
    assert_true(cache_has(snap, false));
    /* a discard (damaged bytes) does not wait: the user keeps its file */
    assert_int_equal(cache_discard(snap), 0);
    assert_false(cache_has(snap, false));
    char back[9] = "";
    assert_int_equal(pread(fd, back, 8, 0), 8);
    assert_string_equal(back, "contents");
    close(fd);
    assert_int_equal(cache_use(snap), -ENOENT);
    assert_int_equal(cache_discard(snap), -ENOENT);
    _cleanup_free_ char *tmp = xasprintf("%s/tmp", dir);
    _cleanup_free_ char *left = listing(tmp);
    assert_string_equal(left, "");
    rm_rf(dir);
}

/* ---- work directories ---- */

static void test_work_dir_is_private_and_locked(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = new_dir();
    struct cache_work w = CACHE_WORK_INIT;
    struct pv_err err = {0};
    assert_int_equal(cache_work_open(dir, &w, &err), 0);
    _cleanup_free_ char *tmp = xasprintf("%s/tmp/", dir);
    assert_memory_equal(w.path, tmp, strlen(tmp));
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    assert_null(strstr(w.path + strlen(tmp), pid));
    struct stat st;
    assert_int_equal(stat(w.path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    assert_int_equal(stat(tmp, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
    /* held: another process's sweep leaves it */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        cache_sweep(dir);
        int fd = open(w.path, O_RDONLY | O_CLOEXEC);
        _exit(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK ? 0 : 1);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_true(cache_has(w.path, true));
    _cleanup_free_ char *path = xstrdup(w.path);
    cache_work_close(&w);
    assert_false(cache_has(path, true));
    assert_int_equal(w.lock, -1);
    cache_work_close(&w); /* twice is fine */
    rm_rf(dir);
}

/* Two containers sharing a cache: a live process of the other one works
 * in a directory whose name may be a PID that no process here has. The
 * sweep goes by the lock alone. */
static void test_sweep_leaves_what_a_live_process_holds(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = new_dir();
    _cleanup_free_ char *tmp = xasprintf("%s/tmp", dir);
    assert_int_equal(mkdir(tmp, 0700), 0);
    _cleanup_free_ char *theirs = xasprintf("%s/%d", tmp, (int)gone_pid());
    _cleanup_free_ char *named = xasprintf("%s/Ab3xYz", tmp);
    _cleanup_free_ char *dead = xasprintf("%s/%d", tmp, (int)gone_pid());
    _cleanup_free_ char *dead_named = xasprintf("%s/Qq9w8e", tmp);
    const char *all[] = {theirs, named, dead, dead_named};
    for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
        assert_int_equal(mkdir(all[i], 0700), 0);
        _cleanup_free_ char *f = xasprintf("%s/out.snap", all[i]);
        put(f, "x", 1);
    }
    struct peer p = peer_locking((const char *const[]){theirs, named, NULL}, LOCK_EX);
    cache_sweep(dir);
    assert_true(cache_has(theirs, true));
    assert_true(cache_has(named, true));
    assert_false(cache_has(dead, true));
    assert_false(cache_has(dead_named, true));
    /* start-up sweeps too */
    struct config cfg = {.cache_dir = dir, .cache_max_size = 0};
    cache_evict(&cfg);
    assert_true(cache_has(theirs, true));
    assert_true(cache_has(named, true));
    peer_release(&p);
    cache_evict(&cfg);
    _cleanup_free_ char *left = listing(tmp);
    assert_string_equal(left, "");
    rm_rf(dir);
}

/* What a deleter killed mid-removal leaves in its work directory (the
 * entry, already renamed away) goes at the next sweep. */
static void test_sweep_removes_a_killed_deleters_trash(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = new_dir();
    _cleanup_free_ char *boot = entry_name(dir, 'e', ".boot");
    assert_int_equal(mkdir(boot, 0700), 0);
    _cleanup_free_ char *ram = xasprintf("%s/ram", boot);
    put_blocks(ram, 4096);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        struct cache_work w;
        struct pv_err err;
        if (cache_work_open(dir, &w, &err) < 0)
            _exit(1);
        char *trash = xasprintf("%s/%s", w.path, strrchr(boot, '/') + 1);
        _exit(rename(boot, trash) == 0 ? 0 : 2); /* and never removes it */
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_false(cache_has(boot, true));
    _cleanup_free_ char *tmp = xasprintf("%s/tmp", dir);
    _cleanup_free_ char *before = listing(tmp);
    assert_int_not_equal(strlen(before), 0);
    cache_sweep(dir);
    _cleanup_free_ char *after = listing(tmp);
    assert_string_equal(after, "");
    rm_rf(dir);
}

/* ---- the verdict on a failed restore ---- */

/* A snapshot directory as snapshot.c writes one: a sparse RAM file of 1
 * MiB, device state, one changed page, and the header that vouches for
 * them. extra: more header fields ("" for none). */
static void put_snap(const char *dir, const char *extra, const char *qemu)
{
    rm_rf(dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    _cleanup_free_ char *ram = xasprintf("%s/ram", dir);
    _cleanup_free_ char *devices = xasprintf("%s/devices", dir);
    _cleanup_free_ char *pages = xasprintf("%s/pages", dir);
    _cleanup_free_ char *machine = xasprintf("%s/machine", dir);
    put(ram, "", 0);
    assert_int_equal(truncate(ram, 1 << 20), 0);
    char dev[3000], rec[8 + 4096] = {3}; /* page 3 */
    for (size_t i = 0; i < sizeof(dev); i++)
        dev[i] = (char)(i * 7 % 251);
    memset(rec + 8, 'p', 4096);
    put(devices, dev, sizeof(dev));
    put(pages, rec, sizeof(rec));
    char dh[65], ph[65];
    sha256_hex(dev, sizeof(dev), dh);
    sha256_hex(rec, sizeof(rec), ph);
    struct stat st;
    assert_int_equal(stat(ram, &st), 0);
    _cleanup_free_ char *head = xasprintf(
        "PROVIUM-SNAPSHOT "
        "2\n{\"accel\":\"%s\",\"device_set\":\"%s\",\"devices\":{\"sha256\":\"%s\",\"size\":%zu},"
        "\"machine\":\"%s\",\"memory\":1048576,\"pages\":{\"count\":1,\"sha256\":\"%s\"},"
        "\"qemu\":\"%s\",\"ram\":{\"mtime_ns\":%lld,\"size\":1048576}%s}\n",
        accel_name(vm_globals.accel), qemu_device_set(), dh, sizeof(dev), vm_globals.machine, ph,
        qemu, (long long)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec, extra);
    put(machine, head, strlen(head));
}

static int check(const char *entry, const char *expect_in_msg)
{
    struct pv_err err = {0};
    int r = cache_check(entry, &err);
    if (expect_in_msg && !strstr(err.msg, expect_in_msg))
        fail_msg("cache_check(%s): `%s` lacks `%s`", entry, err.msg, expect_in_msg);
    return r;
}

/* Change one byte of the file at path, in place. */
static void poke(const char *dir, const char *name, off_t at)
{
    _cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "\xff", 1, at), 1);
    close(fd);
}

static void test_check_snapshot(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = new_dir();
    _cleanup_free_ char *snap = entry_name(dir, 'f', ".snap");
    _cleanup_free_ char *ram = xasprintf("%s/ram", snap);
    _cleanup_free_ char *pages = xasprintf("%s/pages", snap);
    put_snap(snap, "", qemu_version());
    assert_int_equal(check(snap, NULL), 0);
    /* the device state or a page changed in place, or the pages cut short */
    poke(snap, "devices", 10);
    assert_int_equal(check(snap, "devices does not match its hash"), -EBADMSG);
    put_snap(snap, "", qemu_version());
    poke(snap, "pages", 100);
    assert_int_equal(check(snap, "pages does not match its hash"), -EBADMSG);
    put_snap(snap, "", qemu_version());
    assert_int_equal(truncate(pages, 4096), 0);
    assert_int_equal(check(snap, "pages is not as long as its page count says"), -EBADMSG);
    /* the RAM file cut, or written after the snapshot (its time moves) */
    put_snap(snap, "", qemu_version());
    assert_int_equal(truncate(ram, 4096), 0);
    assert_int_equal(check(snap, "was changed or cut after the snapshot"), -EBADMSG);
    put_snap(snap, "", qemu_version());
    usleep(10000);
    poke(snap, "ram", 5);
    assert_int_equal(check(snap, "was changed or cut after the snapshot"), -EBADMSG);
    assert_int_equal(unlink(ram), 0);
    assert_int_equal(check(snap, "its guest RAM (ram) is gone"), -EBADMSG);
    /* taken with another QEMU than the key says */
    put_snap(snap, "", "0.0.1");
    assert_int_equal(check(snap, "taken with qemu 0.0.1"), -EBADMSG);
    /* or with other devices (a later field of a JSON object wins) */
    put_snap(snap, ",\"device_set\":\"0123456789abcdef\"", qemu_version());
    assert_int_equal(check(snap, "taken with device_set 0123456789abcdef"), -EBADMSG);
    /* a fixture restores with the plan its header records: its initrd must be there */
    _cleanup_free_ char *initrd = xasprintf("%s/initrd.cpio", dir);
    _cleanup_free_ char *names = xasprintf(",\"initrd\":\"%s\"", initrd);
    put_snap(snap, names, qemu_version());
    assert_int_equal(check(snap, "initrd.cpio, which is gone"), -EBADMSG);
    put(initrd, "070701", 6);
    assert_int_equal(check(snap, NULL), 0);
    _cleanup_free_ char *machine = xasprintf("%s/machine", snap);
    put(machine, "PROVIUM-SNAPSHOT 2\n{not json\n", 29);
    assert_int_equal(check(snap, "not a provium snapshot header"), -EBADMSG);
    /* a snapshot of an older provium: one file */
    rm_rf(snap);
    put(snap, "PROVIUM-SNAPSHOT 1\n{}\n", 22);
    assert_int_equal(check(snap, "a single file is one of an older provium"), -EBADMSG);
    assert_int_equal(unlink(snap), 0);
    assert_int_equal(check(snap, NULL), -ENOENT);
    rm_rf(dir);
}

/* A boot cache entry as vm_save_boot makes one: a snapshot directory. */
static void put_boot(const char *entry, uint64_t memory)
{
    assert_int_equal(memory, 1 << 20);
    put_snap(entry, "", qemu_version());
}

static void test_check_boot_and_lab(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = new_dir();
    _cleanup_free_ char *boot = entry_name(dir, '1', ".boot");
    put_boot(boot, 1 << 20);
    assert_int_equal(check(boot, NULL), 0);
    /* its header's initrd (a run's files image, long gone) is not what a resume uses */
    put_snap(boot, ",\"initrd\":\"/nonexistent/files-1-0.img\"", qemu_version());
    assert_int_equal(check(boot, NULL), 0);
    _cleanup_free_ char *machine = xasprintf("%s/machine", boot);
    assert_int_equal(unlink(machine), 0);
    assert_int_equal(check(boot, "is missing"), -EBADMSG);

    _cleanup_free_ char *lab = entry_name(dir, '2', ".lab");
    assert_int_equal(mkdir(lab, 0700), 0);
    _cleanup_free_ char *index = xasprintf("%s/lab.json", lab);
    _cleanup_free_ char *a = xasprintf("%s/a.snap", lab);
    const char *json = "{\"vms\":[{\"name\":\"a\",\"snap\":\"a.snap\"},{\"name\":\"b\"}]}\n";
    put(index, json, strlen(json));
    put_snap(a, "", qemu_version());
    assert_int_equal(check(lab, NULL), 0);
    poke(a, "devices", 0);
    assert_int_equal(check(lab, a), -EBADMSG);
    put(index, "[]", 2);
    assert_int_equal(check(lab, "not a lab snapshot's index"), -EBADMSG);
    rm_rf(dir);
}

/* ---- a resume that fails, in the boot cache ---- */

/* Resume from an intact entry a VM that the boot refuses before QEMU ever
 * starts (claim, kernel), after an earlier run of it died: the entry
 * stays. A damaged one goes. No QEMU runs in this test. */
static void test_failed_resume_keeps_an_intact_entry(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = new_dir();
    _cleanup_free_ char *rundir = new_dir();
    _cleanup_free_ char *kernel = xasprintf("%s/no-such-bzImage", rundir);
    vm_globals.rundir = rundir;
    struct vm_boot b = {.kernel = kernel,
                        .cmdline = (char *)"console=ttyS0",
                        .memory = 1 << 20,
                        .cpus = 1,
                        .agent_timeout = 10};
    char key[65];
    bootcache_key(&b, key);
    _cleanup_free_ char *entry = xasprintf("%s/%s.boot", dir, key);
    put_boot(entry, b.memory);
    struct vm *vm = vm_new("v", "default");
    struct pv_err err = {0};

    /* the file's claim refuses it (ENOMEM) */
    vm->state = VM_DEAD;
    vm_globals.claim_memory = 1;
    assert_int_equal(bootcache_boot(vm, &b, &b, dir, &err), -ENOMEM);
    assert_non_null(strstr(err.msg, "provium:claim"));
    assert_true(cache_has(entry, true));
    assert_int_equal(check(entry, NULL), 0);

    /* its kernel is missing: not the entry's fault either */
    vm->state = VM_DEAD;
    vm_globals.claim_memory = 0;
    assert_int_equal(bootcache_boot(vm, &b, &b, dir, &err), -ENOENT);
    assert_non_null(strstr(err.msg, kernel));
    assert_true(cache_has(entry, true));

    /* the RAM file cut short: the entry goes (and the cold boot that would
     * save it again finds no kernel) */
    _cleanup_free_ char *ram = xasprintf("%s/ram", entry);
    assert_int_equal(truncate(ram, 4096), 0);
    vm->state = VM_DEAD;
    assert_int_equal(bootcache_boot(vm, &b, &b, dir, &err), -ENOENT);
    assert_false(cache_has(entry, true));
    _cleanup_free_ char *tmp = xasprintf("%s/tmp", dir);
    _cleanup_free_ char *left = listing(tmp);
    assert_string_equal(left, "");
    vm_free(vm);
    vm_globals.rundir = NULL;
    rm_rf(dir);
    rm_rf(rundir);
}

/* A memo finds its file while every input it lists is unchanged, and
 * only then: an input rewritten, or the file gone, is a miss; trimming
 * keeps the most recently used (atime). */
static void test_memo_and_trim(void **state)
{
    (void)state;
    _cleanup_free_ char *dir = new_dir();
    _cleanup_free_ char *in = xasprintf("%s/busybox", dir), *out = xasprintf("%s/out.cpio", dir),
                        *memo = xasprintf("%s/k.memo", dir), *gone = xasprintf("%s/gone", dir);
    put(in, "one", 3);
    put(out, "archive", 7);
    struct buf inputs = BUF_INIT;
    cache_note_input(&inputs, in);
    cache_note_input(&inputs, gone); /* "missing" is an identity too */
    assert_null(cache_memo_get(memo));
    cache_memo_put(memo, out, &inputs);
    struct stat before, after;
    assert_int_equal(stat(out, &before), 0);
    char *hit = cache_memo_get(memo);
    assert_non_null(hit);
    assert_string_equal(hit, out);
    free(hit);
    /* a hit changes no mtime: the boot cache's key has the initrd's */
    assert_int_equal(stat(out, &after), 0);
    assert_true(before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
                before.st_mtim.tv_nsec == after.st_mtim.tv_nsec);

    put(gone, "", 0); /* an input that appears */
    assert_null(cache_memo_get(memo));
    unlink(gone);
    assert_non_null((hit = cache_memo_get(memo)));
    free(hit);
    put(in, "two", 3); /* the same size, a new mtime */
    struct timespec ts[2] = {{0, UTIME_OMIT}, {12345, 0}};
    assert_int_equal(utimensat(AT_FDCWD, in, ts, 0), 0);
    assert_null(cache_memo_get(memo));

    buf_consume(&inputs, inputs.len);
    cache_note_input(&inputs, in);
    cache_memo_put(memo, out, &inputs);
    assert_non_null((hit = cache_memo_get(memo)));
    free(hit);
    unlink(out);
    assert_null(cache_memo_get(memo));

    /* a path with a newline can never be checked: never a hit */
    _cleanup_free_ char *odd = xasprintf("%s/a\nb", dir);
    put(odd, "", 0);
    put(out, "archive", 7);
    buf_consume(&inputs, inputs.len);
    cache_note_input(&inputs, odd);
    cache_memo_put(memo, out, &inputs);
    assert_null(cache_memo_get(memo));
    buf_release(&inputs);

    /* trim: the oldest go first */
    for (int i = 0; i < 5; i++) {
        _cleanup_free_ char *f = xasprintf("%s/t%d", dir, i);
        put(f, "", 0);
        struct timespec t[2] = {{1000 + i, 0}, {0, UTIME_OMIT}};
        assert_int_equal(utimensat(AT_FDCWD, f, t, 0), 0);
    }
    unlink(in);
    unlink(out);
    unlink(memo);
    unlink(odd);
    cache_trim(dir, 2);
    _cleanup_free_ char *names = listing(dir);
    assert_string_equal(names, "t3 t4");
    rm_rf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_evict_skips_entries_in_use),
        cmocka_unit_test(test_use_and_discard),
        cmocka_unit_test(test_work_dir_is_private_and_locked),
        cmocka_unit_test(test_sweep_leaves_what_a_live_process_holds),
        cmocka_unit_test(test_sweep_removes_a_killed_deleters_trash),
        cmocka_unit_test(test_check_snapshot),
        cmocka_unit_test(test_check_boot_and_lab),
        cmocka_unit_test(test_failed_resume_keeps_an_intact_entry),
        cmocka_unit_test(test_memo_and_trim),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
