#include "cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
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

void cache_hash_file(struct sha256 *h, const char *path)
{
    struct stat st;
    char id[96] = "missing";
    if (path && stat(path, &st) == 0)
        snprintf(id, sizeof(id), "%lld/%lld.%09ld", (long long)st.st_size,
                 (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    sha256_update_str(h, path ? path : "");
    sha256_update_str(h, id);
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
    sha256_update_str(h, accel_name(vm_globals.accel));
    sha256_update_str(h, transport_name(vm_globals.transport));
    sha256_final_hex(h, digest);
    return digest;
}

/* Whether pid is gone (a zombie that nobody reaps counts as gone). */
static bool gone(pid_t pid)
{
    if (kill(pid, 0) < 0 && errno != EPERM)
        return true;
    char path[64], stat[256] = "";
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return false;
    size_t n = fread(stat, 1, sizeof(stat) - 1, f);
    fclose(f);
    stat[n] = 0;
    const char *close_paren = strrchr(stat, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z';
}

int cache_workdir(const char *dir, char **ret, struct pv_err *err)
{
    _cleanup_free_ char *tmpdir = xasprintf("%s/tmp", dir);
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || !gone((pid_t)pid))
            continue;
        _cleanup_free_ char *p = xasprintf("%s/%s", tmpdir, e->d_name);
        rm_rf(p);
    }
    if (d)
        closedir(d);
    char *work = xasprintf("%s/%d", tmpdir, (int)getpid());
    if (mkdir_p(work, 0700) < 0 && errno != EEXIST) {
        int r = pv_err_set(err, errno, "%s: %s", work, strerror(errno));
        free(work);
        return r;
    }
    *ret = work;
    return 0;
}

void cache_touch(const char *entry)
{
    struct timespec t[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    utimensat(AT_FDCWD, entry, t, 0);
}

void cache_discard(const char *entry)
{
    rm_rf(entry);
}

/* The disk space a file takes (a boot's RAM file is sparse). */
static uint64_t disk_bytes(const struct stat *st)
{
    return (uint64_t)st->st_blocks * 512;
}

/* The disk space of the files directly in dir (a lab's or a boot's entry). */
static uint64_t dir_size(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, e->d_name);
        struct stat st;
        if (e->d_name[0] != '.' && stat(p, &st) == 0 && S_ISREG(st.st_mode))
            total += disk_bytes(&st);
    }
    closedir(d);
    return total;
}

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
        uint64_t size = S_ISDIR(st.st_mode) ? dir_size(p) : disk_bytes(&st);
        v = xrealloc(v, (n + 1) * sizeof(*v));
        v[n++] = (struct entry){p, kind, size, st.st_atim};
    }
    if (d)
        closedir(d);
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

int cache_evict(const struct config *cfg)
{
    size_t n;
    struct entry *v = entries(cfg->cache_dir, &n);
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += v[i].size;
    qsort(v, n, sizeof(*v), by_atime);
    int evicted = 0;
    for (size_t i = 0; i < n; i++) {
        /* the lock stays: a builder may hold it */
        if (total > cfg->cache_max_size && rm_rf(v[i].path) == 0) {
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
