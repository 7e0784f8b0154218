#include "cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "accel.h"
#include "hash.h"
#include "qemu.h"
#include "vm.h"

extern const char pv_agent_bin[], pv_agent_bin_end[];

bool cache_has(const char *p, bool dir)
{
    struct stat st;
    return stat(p, &st) == 0 && (dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode));
}

/* What says a host file changed: "size/mtime", or "missing". */
static void file_id(const char *path, char id[96])
{
    struct stat st;
    if (path && stat(path, &st) == 0)
        snprintf(id, 96, "%lld/%lld.%09ld", (long long)st.st_size, (long long)st.st_mtim.tv_sec,
                 st.st_mtim.tv_nsec);
    else
        snprintf(id, 96, "missing");
}

void cache_hash_file(struct sha256 *h, const char *path)
{
    char id[96];
    file_id(path, id);
    sha256_update_str(h, path ? path : "");
    sha256_update_str(h, id);
}

void cache_note_input(struct buf *inputs, const char *path)
{
    char id[96];
    file_id(path, id);
    /* a path a line cannot hold: a line that never matches */
    if (strchr(path, '\n'))
        buf_adds(inputs, "- \n");
    else
        buf_addf(inputs, "%s %s\n", id, path);
}

char *cache_memo_get(const char *memo)
{
    struct buf b = BUF_INIT;
    char *out = NULL;
    if (read_file(memo, 1 << 20, &b) < 0 || !b.len || b.data[b.len - 1] != '\n')
        goto done;
    char *nl = strchr(b.data, '\n');
    *nl = 0;
    if (access(b.data, R_OK) < 0)
        goto done;
    for (char *line = nl + 1; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        *nl = 0;
        char *path = strchr(line, ' '), id[96];
        if (!path)
            goto done;
        *path++ = 0;
        file_id(path, id);
        if (strcmp(id, line))
            goto done;
    }
    out = xstrdup(b.data);
    /* used (the atime: out's mtime is part of the boot cache's key) */
    cache_touch(memo);
    cache_touch(out);
done:
    buf_release(&b);
    return out;
}

void cache_memo_put(const char *memo, const char *out, const struct buf *inputs)
{
    if (strchr(out, '\n'))
        return;
    struct buf b = BUF_INIT;
    buf_addf(&b, "%s\n", out);
    buf_add(&b, inputs->data, inputs->len);
    write_file_atomic(memo, b.data, b.len, 0644);
    buf_release(&b);
}

void cache_trim(const char *dir, size_t keep)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct old {
        char name[NAME_MAX + 1];
        struct timespec used;
    } v[256];
    size_t n = 0;
    for (struct dirent *e; (e = readdir(d)) && n < ARRAY_SIZE(v);) {
        struct stat st;
        if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
            !S_ISREG(st.st_mode))
            continue;
        snprintf(v[n].name, sizeof(v[n].name), "%s", e->d_name);
        v[n++].used = st.st_atim;
    }
    while (n > keep) {
        size_t o = 0;
        for (size_t i = 1; i < n; i++)
            if (v[i].used.tv_sec < v[o].used.tv_sec ||
                (v[i].used.tv_sec == v[o].used.tv_sec && v[i].used.tv_nsec < v[o].used.tv_nsec))
                o = i;
        unlinkat(dirfd(d), v[o].name, 0);
        v[o] = v[--n];
    }
    closedir(d);
}

const char *cache_env_digest(void)
{
    static char digest[65];
    if (digest[0])
        return digest;
    struct sha256 *h = sha256_new();
    char agent[65];
    sha256_hex(pv_agent_bin, (size_t)(pv_agent_bin_end - pv_agent_bin), agent);
    sha256_update_str(h, agent);
    const char *qv = qemu_version();
    sha256_update_str(h, qv ? qv : "?");
    sha256_update_str(h, vm_globals.machine);
    sha256_update_str(h, qemu_device_set());
    sha256_update_str(h, accel_name(vm_globals.accel));
    sha256_update_str(h, transport_name(vm_globals.transport));
    sha256_final_hex(h, digest);
    return digest;
}

void cache_sweep(const char *dir)
{
    _cleanup_free_ char *tmpdir = xasprintf("%s/tmp", dir);
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        _cleanup_free_ char *p = xasprintf("%s/%s", tmpdir, e->d_name);
        _cleanup_close_ int fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        /* held: its owner lives, whatever its PID says here. Taking the lock
         * first means no two sweeps remove one directory at once. */
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 && fd_at_path(fd, p))
            rm_rf(p);
    }
    if (d)
        closedir(d);
}

int cache_work_open(const char *dir, struct cache_work *w, struct pv_err *err)
{
    *w = (struct cache_work)CACHE_WORK_INIT;
    _cleanup_free_ char *tmpdir = xasprintf("%s/tmp", dir);
    int r = mkdir_p(tmpdir, 0700);
    if (r < 0)
        return pv_err_set(err, -r, "%s: %s", tmpdir, strerror(-r));
    cache_sweep(dir);
    /* A sweep elsewhere may remove a new directory before its owner has
     * locked it: then the lock finds it gone, and another is made. */
    for (int tries = 0; tries < 8; tries++) {
        char *p = xasprintf("%s/XXXXXX", tmpdir);
        if (!mkdtemp(p)) {
            int e = errno;
            free(p);
            return pv_err_set(err, e, "%s: %s", tmpdir, strerror(e));
        }
        int fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 && fd_at_path(fd, p)) {
            w->path = p;
            w->lock = fd;
            return 0;
        }
        if (fd >= 0)
            close(fd);
        free(p);
    }
    return pv_err_set(err, EAGAIN, "%s: every new work directory was removed before it was locked",
                      tmpdir);
}

void cache_work_close(struct cache_work *w)
{
    if (w->path)
        rm_rf(w->path);
    if (w->lock >= 0)
        close(w->lock); /* after the removal: a sweep would race it */
    free(w->path);
    *w = (struct cache_work)CACHE_WORK_INIT;
}

int cache_use(const char *entry)
{
    int fd = open(entry, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    /* an evictor holds its exclusive lock only while it moves the entry away */
    while (flock(fd, LOCK_SH) < 0) {
        if (errno != EINTR) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    if (!fd_at_path(fd, entry)) {
        close(fd);
        return -ENOENT;
    }
    return fd;
}

int cache_install(const char *tmp, const char *entry, struct pv_err *err)
{
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pv_err_set(err, errno, "%s: %s", tmp, strerror(errno));
    flock(fd, LOCK_SH); /* nobody else knows tmp: this does not wait */
    if (rename(tmp, entry) < 0) {
        int e = errno;
        close(fd);
        if (e == EEXIST || e == ENOTEMPTY)
            return -EEXIST;
        return pv_err_set(err, e, "installing %s: %s", entry, strerror(e));
    }
    return fd;
}

void cache_touch(const char *entry)
{
    struct timespec t[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    utimensat(AT_FDCWD, entry, t, 0);
}

/* ---- the verdict on a failed restore ---- */

/* The part of a snapshot's header a field of the environment must match. */
static int check_field(const char *path, json_t *h, const char *field, const char *now,
                       struct pv_err *err)
{
    const char *was = json_string_value(json_object_get(h, field));
    if (now && (!was || strcmp(was, now)))
        return pv_err_set(err, EBADMSG, "%s: taken with %s %s, this is %s", path, field,
                          was ? was : "(none)", now);
    return 0;
}

/* The snapshot directory at path, read whole (vm_snapshot_check, deep),
 * and the environment its header names. own_plan: a restore boots what the
 * header records (a fixture's; a boot's resume brings its own plan), so the
 * initrd it names must still be there. */
static int check_snap(const char *path, bool own_plan, struct pv_err *err)
{
    json_t *h = NULL;
    int r = vm_snapshot_check(path, true, &h, err);
    if (r == -ENOENT)
        return pv_err_set(err, EBADMSG, "%s is missing", path);
    if (r < 0)
        return r;
    r = check_field(path, h, "qemu", qemu_version(), err);
    if (r == 0)
        r = check_field(path, h, "machine", vm_globals.machine, err);
    if (r == 0)
        r = check_field(path, h, "device_set", qemu_device_set(), err);
    if (r == 0)
        r = check_field(path, h, "accel", accel_name(vm_globals.accel), err);
    const char *initrd = json_string_value(json_object_get(h, "initrd"));
    if (r == 0 && own_plan && initrd && access(initrd, R_OK) < 0)
        r = pv_err_set(err, EBADMSG, "%s needs the initrd %s, which is gone", path, initrd);
    json_decref(h);
    return r;
}

/* A lab's entry: lab.json, and every snapshot it names. */
static int check_lab(const char *entry, struct pv_err *err)
{
    _cleanup_free_ char *index = xasprintf("%s/lab.json", entry);
    json_t *lab = json_load_file(index, 0, NULL);
    json_t *vms = json_object_get(lab, "vms");
    int r = 0;
    if (!json_is_array(vms))
        r = pv_err_set(err, EBADMSG, "%s: not a lab snapshot's index", index);
    size_t i;
    json_t *v;
    json_array_foreach(vms, i, v)
    {
        const char *snap = json_string_value(json_object_get(v, "snap"));
        if (r < 0 || !snap)
            continue;
        _cleanup_free_ char *p = xasprintf("%s/%s", entry, snap);
        if (strchr(snap, '/'))
            r = pv_err_set(err, EBADMSG, "%s: names %s, not a file beside it", index, snap);
        else
            r = check_snap(p, true, err);
    }
    json_decref(lab);
    return r;
}

int cache_check(const char *entry, struct pv_err *err)
{
    struct stat st;
    if (stat(entry, &st) < 0)
        return pv_err_set(err, errno, "%s: %s", entry, strerror(errno));
    const char *dot = strrchr(entry, '.');
    if (dot && !strcmp(dot, ".lab"))
        return check_lab(entry, err);
    /* a boot's resume brings its own plan */
    return check_snap(entry, !dot || strcmp(dot, ".boot"), err);
}

int cache_discard(const char *entry)
{
    _cleanup_free_ char *dir = xstrdup(entry);
    char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : entry;
    if (slash)
        *slash = 0;
    _cleanup_(cache_work_close) struct cache_work w = CACHE_WORK_INIT;
    struct pv_err err;
    int r = cache_work_open(slash ? dir : ".", &w, &err);
    if (r < 0)
        return r;
    _cleanup_free_ char *trash = xasprintf("%s/%s", w.path, base);
    return rename(entry, trash) < 0 ? -errno : 0; /* removed with w */
}

/* The disk space a file takes (a boot's RAM file is sparse). */

/* The kind of entry a name in the cache is ("vm", "lab", "boot"), or NULL
 * for locks, records and work files. */
static const char *entry_kind(const char *name)
{
    static const char *const kinds[][2] = {{".snap", "vm"}, {".lab", "lab"}, {".boot", "boot"}};
    size_t len = strlen(name);
    for (size_t i = 0; i < ARRAY_SIZE(kinds); i++)
        if (len == 64 + strlen(kinds[i][0]) && !strcmp(name + 64, kinds[i][0]))
            return kinds[i][1];
    return NULL;
}

struct entry {
    char *path;
    const char *kind;
    uint64_t size;
    struct timespec atime;
};

/* Every entry of the cache, with its size (n of them; NULL if none). */
static struct entry *entries(const char *dir, size_t *ret_n)
{
    DIR *d = opendir(dir);
    struct entry *v = NULL;
    size_t n = 0;
    struct dirent *e;
    /* a RAM file a fixture shares with its boot's entry counts once */
    struct inode_set seen = {0};
    while (d && (e = readdir(d))) {
        const char *kind = entry_kind(e->d_name);
        if (!kind)
            continue;
        char *p = xasprintf("%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) < 0) {
            free(p);
            continue;
        }
        /* a directory's atime is its own: a restore touches the directory */
        uint64_t size = disk_usage(p, &seen);
        v = xrealloc(v, (n + 1) * sizeof(*v));
        v[n++] = (struct entry){p, kind, size, st.st_atim};
    }
    if (d)
        closedir(d);
    inode_set_release(&seen);
    *ret_n = n;
    return v;
}

static int by_atime(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->atime.tv_sec != y->atime.tv_sec)
        return x->atime.tv_sec < y->atime.tv_sec ? -1 : 1;
    return x->atime.tv_nsec < y->atime.tv_nsec ? -1 : x->atime.tv_nsec > y->atime.tv_nsec;
}

/* Remove the entry at path unless a process uses it: 0 when it went,
 * -EWOULDBLOCK when it is in use. */
static int evict(const char *path)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (flock(fd, LOCK_EX | LOCK_NB) < 0)
        return -errno;
    if (!fd_at_path(fd, path)) /* discarded meanwhile, maybe replaced: not ours to judge */
        return -ENOENT;
    return cache_discard(path);
}

int cache_evict(const struct config *cfg)
{
    cache_sweep(cfg->cache_dir);
    size_t n;
    struct entry *v = entries(cfg->cache_dir, &n);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i].size;
    if (n)
        qsort(v, n, sizeof(*v), by_atime);
    int evicted = 0;
    for (size_t i = 0; i < n; i++) {
        /* the build locks stay: a builder may hold one */
        if (total > cfg->cache_max_size && evict(v[i].path) == 0) {
            total -= v[i].size;
            evicted++;
        }
        free(v[i].path);
    }
    free(v);
    return evicted;
}

void cache_list(const struct config *cfg)
{
    size_t n;
    struct entry *v = entries(cfg->cache_dir, &n);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) {
        printf("%10.2fMiB  %-4s %.64s\n", (double)v[i].size / (1 << 20), v[i].kind,
               strrchr(v[i].path, '/') + 1);
        total += v[i].size;
        free(v[i].path);
    }
    free(v);
    printf("%zu entries, %.2fMiB\n", n, (double)total / (1 << 20));
}
