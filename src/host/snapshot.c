/* Saved machines (docs/snapshots.md, docs/boot-cache.md). A snapshot is a
 * directory: the guest's RAM as a sparse file that a restore maps
 * copy-on-write (nothing is loaded: the guest faults in what it touches),
 * the pages the guest changed since that file was made, and QEMU's state of
 * the CPUs and devices without the RAM (xen-save-devices-state, which any
 * QEMU build has). Every kind of saved machine (boot-cache entries,
 * fixtures, reset_between_tests baselines, vm:snapshot) is one of these,
 * and every restore takes the one path in restore().
 *
 *   machine  "PROVIUM-SNAPSHOT 2\n", then a JSON line: what the VM was
 *            booted with, and what the other three files must be
 *   ram      the RAM when the VM's memory was last a file of its own: a
 *            hard link to the file its QEMU mapped (shared with the boot
 *            cache's entry or the snapshot it was restored from), or a new
 *            sparse file holding the non-zero pages of a VM booted cold
 *   pages    the pages that differ from ram: records of an 8-byte page
 *            number (little-endian) and the 4096-byte page
 *   devices  QEMU's device state */
#include <ctype.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>

#include "accel.h"
#include "disk/disk.h"
#include "guest.h"
#include "hash.h"
#include "vm.h"
#include "vm_priv.h"

#define SNAP_MAGIC "PROVIUM-SNAPSHOT 2\n"
enum {
    PAGE = 4096,
    RECORD = 8 + PAGE, /* a page number, then the page */
    BATCH = 64,        /* pages per process_vm_readv/writev */
};

/* The page number at the head of record i (little-endian), and setting it. */
static uint64_t record_page(const char *rec, size_t i)
{
    uint64_t pno = 0;
    for (int b = 7; b >= 0; b--)
        pno = pno << 8 | (unsigned char)rec[i * RECORD + (size_t)b];
    return pno;
}

static void set_record_page(char *rec, size_t i, uint64_t pno)
{
    for (int b = 0; b < 8; b++)
        rec[i * RECORD + (size_t)b] = (char)(pno >> (8 * b));
}

/* How long loading a snapshot's device state may take. */
static int64_t migration_deadline(void)
{
    return now_ns() + (int64_t)(120e9 * vm_globals.timeout_scale);
}

/* Wait for the migration to end: 0 when it completed. */
static int wait_migration(struct vm *vm, const char *what, struct pv_err *err)
{
    int64_t deadline = migration_deadline();
    /* a device state loads within milliseconds: ask often at first */
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

/* aa:bb:cc:dd:ee:ff, in a static buffer */
static const char *mac_text(const uint8_t m[6])
{
    static char s[18];
    snprintf(s, sizeof(s), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
    return s;
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
    json_object_set_new(h, "device_set", json_string(qemu_device_set()));
    json_object_set_new(h, "initrd", b->initrd ? json_string(b->initrd) : json_null());
    json_object_set_new(h, "modules_dir",
                        b->modules_dir ? json_string(b->modules_dir) : json_null());
    json_object_set_new(h, "agent_timeout", json_real(b->agent_timeout));
    if (b->has_rng_seed)
        json_object_set_new(h, "rng_seed", json_integer((json_int_t)b->rng_seed));
    if (b->no_pvh)
        json_object_set_new(h, "pvh", json_false());
    json_object_set_new(h, "vm", json_string(vm->name));
    json_t *nics = json_array();
    for (size_t i = 0; i < b->nnics; i++)
        json_array_append_new(nics, json_pack("{s:s, s:s}", "bridge", b->nics[i].bridge_name, "mac",
                                              mac_text(b->nics[i].mac)));
    json_object_set_new(h, "nics", nics);
    return h;
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

static bool disk_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > VM_DISK_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && !strchr("._-", id[i]))
            return false;
    return true;
}

int vm_snapshot_disks(json_t *h, struct vm_snap_disk out[], size_t *ret_n)
{
    json_t *list = json_object_get(h, "attached");
    *ret_n = 0;
    if (!list)
        return 0;
    if (!json_is_array(list) || json_array_size(list) > VM_MAX_DISKS)
        return -EINVAL;
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i);
        const char *id = json_string_value(json_object_get(e, "id"));
        const char *file = json_string_value(json_object_get(e, "file"));
        json_int_t slot = json_integer_value(json_object_get(e, "slot"));
        json_int_t size = json_integer_value(json_object_get(e, "size"));
        const char *format = json_string_value(json_object_get(e, "format"));
        struct vm_snap_disk *d = &out[i];
        if (!id || !disk_id_ok(id) || !file || slot < VM_DISK_SLOT0 ||
            slot >= VM_DISK_SLOT0 + VM_MAX_DISKS || size <= 0 || size % DISK_SECTOR ||
            !json_is_integer(json_object_get(e, "mtime_ns")) ||
            (format && strcmp(format, "raw") && strcmp(format, "qcow2")))
            return -EINVAL;
        *d = (struct vm_snap_disk){
            .slot = (uint8_t)slot,
            .size = (uint64_t)size,
            .mtime_ns = json_integer_value(json_object_get(e, "mtime_ns")),
            .readonly = json_is_true(json_object_get(e, "readonly")),
            .mediated = json_is_true(json_object_get(e, "mediated")),
            .qcow2 = format && !strcmp(format, "qcow2"),
        };
        snprintf(d->id, sizeof(d->id), "%s", id);
        snprintf(d->file, sizeof(d->file), "disk-%s", id);
        if (strcmp(file, d->file)) /* the one name it may have: nothing outside dir */
            return -EINVAL;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(out[j].id, d->id) || out[j].slot == d->slot)
                return -EINVAL;
    }
    *ret_n = json_array_size(list);
    return 0;
}

/* A file's modification time in ns: what a snapshot records of its RAM file. */
static int64_t mtime_ns(const struct stat *st)
{
    return st->st_mtim.tv_sec * 1000000000ll + st->st_mtim.tv_nsec;
}

static int damaged(struct pv_err *err, const char *fmt, const char *dir, const char *what)
{
    return pv_err_set(err, EBADMSG, fmt, dir, what);
}

int vm_snapshot_check(const char *dir, bool deep, json_t **ret_h, struct pv_err *err)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        return pv_err_set(err, errno, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return pv_err_set(err, EBADMSG,
                          "%s is not a provium snapshot (a snapshot is a directory; a single "
                          "file is one of an older provium: take it again)",
                          dir);
    _cleanup_free_ char *machine = xasprintf("%s/machine", dir);
    struct buf text = BUF_INIT;
    json_t *h = NULL;
    size_t len;
    int r = read_file(machine, VM_SNAP_HEADER_MAX, &text);
    if (r == -ENOENT)
        r = pv_err_set(err, ENOENT, "%s holds no snapshot (no `machine` file)", dir);
    else if (r < 0 || vm_snapshot_parse_header(text.data, text.len, &h, &len) < 0)
        r = damaged(err, "%s: %s is not a provium snapshot header", dir, "machine");
    buf_release(&text);
    if (r < 0)
        return r;
    json_t *ram = json_object_get(h, "ram"), *dev = json_object_get(h, "devices"),
           *pg = json_object_get(h, "pages");
    _cleanup_free_ char *rp = xasprintf("%s/ram", dir);
    _cleanup_free_ char *dp = xasprintf("%s/devices", dir);
    _cleanup_free_ char *pp = xasprintf("%s/pages", dir);
    uint64_t count = (uint64_t)json_integer_value(json_object_get(pg, "count"));
    char hex[65];
    /* the RAM file is as long as it was and was not written since: what a
     * restore can check without reading it (docs/snapshots.md) */
    if (stat(rp, &st) < 0)
        r = damaged(err, "%s: its guest RAM (%s) is gone", dir, "ram");
    else if (st.st_size != json_integer_value(json_object_get(ram, "size")) ||
             mtime_ns(&st) != json_integer_value(json_object_get(ram, "mtime_ns")))
        r = damaged(err, "%s: its guest RAM (%s) was changed or cut after the snapshot", dir,
                    "ram");
    else if (sha256_file_hex(dp, hex) < 0 ||
             strcmp(hex, json_string_value(json_object_get(dev, "sha256")) ?: ""))
        r = damaged(err, "%s: %s does not match its hash in the snapshot", dir, "devices");
    else if (count && (stat(pp, &st) < 0 || (uint64_t)st.st_size != count * RECORD))
        r = damaged(err, "%s: %s is not as long as its page count says", dir, "pages");
    else if (count && deep &&
             (sha256_file_hex(pp, hex) < 0 ||
              strcmp(hex, json_string_value(json_object_get(pg, "sha256")) ?: "")))
        r = damaged(err, "%s: %s does not match its hash in the snapshot", dir, "pages");
    struct vm_snap_disk sd[VM_MAX_DISKS];
    size_t nsd = 0;
    if (r == 0 && vm_snapshot_disks(h, sd, &nsd) < 0)
        r = damaged(err, "%s: %s lists its disks wrongly", dir, "machine");
    for (size_t i = 0; r == 0 && i < nsd; i++) {
        /* as for ram: its length and time, not its bytes */
        _cleanup_free_ char *fp = xasprintf("%s/%s", dir, sd[i].file);
        if (stat(fp, &st) < 0)
            r = damaged(err, "%s: its frozen disk %s is gone", dir, sd[i].file);
        else if ((uint64_t)st.st_size != sd[i].size || mtime_ns(&st) != sd[i].mtime_ns)
            r = damaged(err, "%s: its frozen disk %s was changed or cut after the snapshot", dir,
                        sd[i].file);
    }
    if (r < 0 || !ret_h)
        json_decref(h);
    else
        *ret_h = h;
    return r;
}

/* Where QEMU (pid) maps the guest's RAM, size bytes: its mapping of the
 * file st, or (st NULL) its one anonymous private mapping that long. */
static int ram_mapping(pid_t pid, const struct stat *st, uint64_t size, uintptr_t *addr,
                       struct pv_err *err)
{
    _cleanup_free_ char *path = xasprintf("/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return pv_err_set(err, errno, "%s: %s", path, strerror(errno));
    char line[512], perms[8];
    int found = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi, off, ino;
        unsigned maj, mnr;
        int name = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu %n", &lo, &hi, perms, &off, &maj, &mnr, &ino,
                   &name) < 7 ||
            hi - lo != size || off != 0)
            continue;
        bool anon = ino == 0 && !line[name] && !strcmp(perms, "rw-p"); /* no name */
        if (st ? ino == st->st_ino && maj == major(st->st_dev) && mnr == minor(st->st_dev) : anon) {
            *addr = lo;
            found++;
        }
    }
    fclose(f);
    if (found != 1)
        return pv_err_set(err, ENOENT, "QEMU (pid %d) has %s mapping of the guest's RAM", (int)pid,
                          found ? "more than one candidate" : "no");
    return 0;
}

/* process_vm_readv/writev on QEMU moved only done bytes (-1: errno says
 * why). They need the ptrace access a parent has over its child. */
static int qemu_memory_failed(struct vm *vm, const char *what, ssize_t done, struct pv_err *err)
{
    int e = done < 0 ? errno : EIO;
    return pv_err_set(err, e, "%s the guest's RAM in QEMU (pid %d): %s%s", what, (int)vm->pid,
                      done < 0 ? strerror(e) : "cut short",
                      e == EPERM ? " (provium needs ptrace access to its QEMU: Yama's "
                                   "kernel.yama.ptrace_scope 0 or 1, docs/snapshots.md)"
                                 : "");
}

/* Pass to fn, in batches of up to BATCH records (a page number, then the
 * page), the guest's pages that QEMU holds privately: with a file mapped
 * copy-on-write, the pages the guest changed; with anonymous RAM, every page
 * it touched. They are found in /proc/<pid>/pagemap (present and not the
 * file's page, or swapped out) and read across with process_vm_readv;
 * untouched pages cost nothing. */
static int private_pages(struct vm *vm, uintptr_t addr,
                         int (*fn)(void *ctx, const char *rec, size_t n, struct pv_err *err),
                         void *ctx, struct pv_err *err)
{
    _cleanup_free_ char *pm_path = xasprintf("/proc/%d/pagemap", (int)vm->pid);
    _cleanup_close_ int pm = open(pm_path, O_RDONLY | O_CLOEXEC);
    if (pm < 0)
        return pv_err_set(err, errno, "%s: %s", pm_path, strerror(errno));
    uint64_t npages = vm->plan.memory / PAGE;
    _cleanup_free_ uint64_t *map = xmalloc(512 * sizeof(uint64_t));
    _cleanup_free_ char *rec = xmalloc((size_t)BATCH * RECORD);
    struct iovec local[BATCH], remote[BATCH];
    size_t n = 0;
    int r = 0;
    for (uint64_t at = 0; at < npages && r == 0; at += 512) {
        size_t want = (size_t)MIN(512, npages - at) * sizeof(uint64_t);
        off_t off = (off_t)((addr / PAGE + at) * sizeof(uint64_t));
        if (pread(pm, map, want, off) != (ssize_t)want)
            return pv_err_set(err, errno ? errno : EIO, "%s: %s", pm_path, strerror(errno ?: EIO));
        for (size_t i = 0; i < want / sizeof(uint64_t) && r == 0; i++) {
            if ((map[i] >> 63 & 1 && !(map[i] >> 61 & 1)) || map[i] >> 62 & 1) {
                uint64_t pno = at + i;
                set_record_page(rec, n, pno);
                local[n] = (struct iovec){rec + n * RECORD + 8, PAGE};
                remote[n] = (struct iovec){(void *)(addr + pno * PAGE), PAGE};
                n++;
            }
            if (n == BATCH || (n && at + i + 1 == npages)) {
                ssize_t got = process_vm_readv(vm->pid, local, n, remote, n, 0);
                r = got == (ssize_t)(n * PAGE) ? fn(ctx, rec, n, err)
                                               : qemu_memory_failed(vm, "reading", got, err);
                n = 0;
            }
        }
    }
    return r;
}

/* The pages file: records as they come, hashed and counted. */
struct records {
    int fd;
    struct sha256 *hash;
    uint64_t count;
};

static int put_records(void *ctx, const char *rec, size_t n, struct pv_err *err)
{
    struct records *o = ctx;
    int r = write_all(o->fd, rec, n * RECORD);
    if (r < 0)
        return pv_err_set(err, -r, "writing the guest's pages: %s", strerror(-r));
    sha256_update(o->hash, rec, n * RECORD);
    o->count += n;
    return 0;
}

/* A new RAM file: each page at its place, the zero ones left as holes. */
static int put_sparse(void *ctx, const char *rec, size_t n, struct pv_err *err)
{
    static const char zero[PAGE];
    int fd = *(int *)ctx;
    for (size_t i = 0; i < n; i++) {
        const char *page = rec + i * RECORD + 8;
        uint64_t pno = record_page(rec, i);
        if (memcmp(page, zero, PAGE) && pwrite(fd, page, PAGE, (off_t)(pno * PAGE)) != PAGE)
            return pv_err_set(err, errno ? errno : ENOSPC, "writing the guest's RAM: %s",
                              strerror(errno ? errno : ENOSPC));
    }
    return 0;
}

/* Copy the pages of the file fd that are not all zeros into a new sparse
 * file at path, as long as fd's (size). */
static int copy_nonzero(int fd, const char *path, uint64_t size, struct pv_err *err)
{
    _cleanup_close_ int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0 || ftruncate(out, (off_t)size) < 0)
        return pv_err_set(err, errno, "%s: %s", path, strerror(errno));
    enum { CHUNK = 256 * PAGE };
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

/* Hard-link to: the file at path, if it is still the one open as fd. */
static bool same_file(const char *path, int fd, const char *to)
{
    if (link(path, to) < 0)
        return false;
    if (fd_at_path(fd, to))
        return true;
    unlink(to);
    return false;
}

/* The guest's RAM into dir: ram and pages, and what the header says of them. */
static int save_ram(struct vm *vm, const char *dir, json_t *head, struct pv_err *err)
{
    _cleanup_free_ char *ram = xasprintf("%s/ram", dir);
    _cleanup_free_ char *pages = xasprintf("%s/pages", dir);
    struct records rc = {.fd = -1};
    struct stat st;
    uintptr_t addr;
    if (vm->ram_base && fstat(vm->ram_fd, &st) < 0)
        return pv_err_set(err, errno, "%s: %s", vm->ram_base, strerror(errno));
    int r = ram_mapping(vm->pid, vm->ram_base ? &st : NULL, vm->plan.memory, &addr, err);
    if (r < 0)
        return r;
    if (!vm->ram_base) {
        /* booted cold: every page it touched goes into a new RAM file */
        _cleanup_close_ int fd = open(ram, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 || ftruncate(fd, (off_t)vm->plan.memory) < 0)
            return pv_err_set(err, errno, "%s: %s", ram, strerror(errno));
        r = private_pages(vm, addr, put_sparse, &fd, err);
    } else {
        /* the file it was restored from, shared (copied if its path went
         * or names another file now); then what the guest changed */
        if (!same_file(vm->ram_base, vm->ram_fd, ram) &&
            (r = copy_nonzero(vm->ram_fd, ram, vm->plan.memory, err)) < 0)
            return r;
        rc.fd = open(pages, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (rc.fd < 0)
            return pv_err_set(err, errno, "%s: %s", pages, strerror(errno));
        rc.hash = sha256_new();
        r = private_pages(vm, addr, put_records, &rc, err);
        close(rc.fd);
    }
    char hex[65] = "";
    if (rc.hash)
        sha256_final_hex(rc.hash, hex);
    if (r == 0 && stat(ram, &st) < 0)
        r = pv_err_set(err, errno, "%s: %s", ram, strerror(errno));
    if (r < 0)
        return r;
    json_object_set_new(head, "ram",
                        json_pack("{s:I, s:I}", "size", (json_int_t)st.st_size, "mtime_ns",
                                  (json_int_t)mtime_ns(&st)));
    json_object_set_new(
        head, "pages",
        json_pack("{s:I, s:s}", "count", (json_int_t)rc.count, "sha256", rc.count ? hex : ""));
    return 0;
}

/* Each attached disk of the stopped machine frozen into dir as disk-<id>
 * (QEMU flushed its disks when it stopped, a plain disk's image too), and
 * listed in the header: a restore serves it under an overlay of its own,
 * or gives QEMU a qcow2 overlay over a plain qcow2 one
 * (docs/snapshots.md#disks). */
static int save_disks(struct vm *vm, const char *dir, json_t *head, struct pv_err *err)
{
    const struct vm_boot *b = &vm->plan;
    if (!b->nattached)
        return 0;
    json_t *list = json_array();
    json_object_set_new(head, "attached", list);
    for (size_t i = 0; i < b->nattached; i++) {
        const struct vm_disk *d = &b->attached[i];
        _cleanup_free_ char *file = xasprintf("disk-%s", d->id);
        _cleanup_free_ char *path = xasprintf("%s/%s", dir, file);
        struct disk_frozen f;
        if (disk_freeze(d->disk, path, &f, err) < 0)
            return pv_err_wrap(err, "disk `%s`", d->id);
        json_array_append_new(
            list, json_pack("{s:s, s:s, s:i, s:I, s:I, s:b, s:b, s:s}", "id", d->id, "file", file,
                            "slot", d->slot, "size", (json_int_t)f.size, "mtime_ns",
                            (json_int_t)f.mtime_ns, "readonly", f.readonly, "mediated", f.mediated,
                            "format", f.qcow2 ? "qcow2" : "raw"));
    }
    return 0;
}

/* Save the stopped machine into the directory dir, which exists and is
 * empty; its attached disks too, unless a boot-cache entry (which holds
 * none: the resumed guest re-reads them). */
static int save_machine(struct vm *vm, const char *dir, bool disks, struct pv_err *err)
{
    const char *version = qemu_version();
    json_t *head = snap_header(vm, version ? version : "?");
    _cleanup_free_ char *devices = xasprintf("%s/devices", dir);
    char hex[65];
    struct stat st;
    int r = save_ram(vm, dir, head, err);
    if (r == 0 && disks)
        r = save_disks(vm, dir, head, err);
    if (r == 0)
        r = vm_qmp(vm, "xen-save-devices-state",
                   json_pack("{s:s, s:b}", "filename", devices, "live", false), err);
    if (r == 0 && (chmod(devices, 0600) < 0 || stat(devices, &st) < 0 ||
                   (r = sha256_file_hex(devices, hex)) < 0))
        r = pv_err_set(err, r < 0 ? -r : errno, "%s: %s", devices, strerror(r < 0 ? -r : errno));
    if (r == 0) {
        json_object_set_new(head, "devices",
                            json_pack("{s:I, s:s}", "size", (json_int_t)st.st_size, "sha256", hex));
        _cleanup_free_ char *text = json_dumps(head, JSON_COMPACT | JSON_SORT_KEYS);
        _cleanup_free_ char *all = xasprintf("%s%s\n", SNAP_MAGIC, text);
        _cleanup_free_ char *machine = xasprintf("%s/machine", dir);
        if ((r = write_file_atomic(machine, all, strlen(all), 0600)) < 0)
            pv_err_set(err, -r, "%s: %s", machine, strerror(-r));
    }
    json_decref(head);
    return r < 0 ? pv_err_wrap(err, "vm `%s`: snapshot", vm->name) : 0;
}

int vm_snapshot(struct vm *vm, const char *path, struct pv_err *err)
{
    int r = vm_need_state(vm, "snapshot", VM_BOOTED, err);
    if (r < 0)
        return r;
    /* made beside path and renamed over it: no half snapshot at path */
    _cleanup_free_ char *tmp = xasprintf("%s.tmp-XXXXXX", path);
    if (!mkdtemp(tmp))
        return pv_err_set(err, errno, "vm `%s`: snapshot: %s: %s", vm->name, tmp, strerror(errno));
    r = vm_qmp(vm, "stop", NULL, err);
    if (r == 0)
        r = save_machine(vm, tmp, true, err);
    struct pv_err cerr = {0}; /* a failed snapshot's story is its own */
    int c = vm->state == VM_BOOTED ? vm_qmp(vm, "cont", NULL, r < 0 ? &cerr : err) : 0;
    struct stat st;
    if (r == 0 && lstat(path, &st) == 0 && (r = rm_rf(path)) < 0)
        pv_err_set(err, -r, "vm `%s`: snapshot: replacing %s: %s", vm->name, path, strerror(-r));
    if (r == 0 && rename(tmp, path) < 0)
        r = pv_err_set(err, errno, "vm `%s`: snapshot: %s: %s", vm->name, path, strerror(errno));
    if (r < 0)
        rm_rf(tmp);
    return r < 0 ? r : c;
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
        .no_pvh = json_is_false(json_object_get(h, "pvh")),
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

/* The VM's attached disks for a restore of dir: the snapshot's, by id and
 * in its order (lua/disk.lua made them, each under an overlay), each in
 * the PCI slot it had, since the device state says where a device is. */
static int restore_disks(struct vm *vm, const char *dir, json_t *h, struct vm_boot *own,
                         struct pv_err *err)
{
    struct vm_snap_disk sd[VM_MAX_DISKS];
    size_t n = 0;
    vm_snapshot_disks(h, sd, &n); /* checked by vm_snapshot_check */
    bool same = n == vm->ndisks;
    for (size_t i = 0; same && i < n; i++)
        same = !strcmp(sd[i].id, vm->disks[i].id);
    if (!same)
        return pv_err_set(err, EINVAL,
                          "vm `%s`: restore: %s has %zu attached disk(s), the VM %zu that differ",
                          vm->name, dir, n, vm->ndisks);
    for (size_t i = 0; i < n; i++)
        vm->disks[i].slot = sd[i].slot;
    memcpy(own->attached, vm->disks, sizeof(own->attached));
    own->nattached = n;
    return 0;
}

/* Read dir/machine and check it against this run (profile unless plan,
 * machine, accelerator, QEMU) and the files beside it (ram's size and time,
 * devices' hash): *ret_plan is plan, or the header's own in *own. */
static int check_machine(struct vm *vm, const char *dir, json_t **ret_h, const struct vm_boot *plan,
                         struct vm_boot *own, const struct vm_boot **ret_plan, struct pv_err *err)
{
    json_t *h;
    struct pv_err cerr = {0};
    if (vm_snapshot_check(dir, false, &h, &cerr) < 0)
        return pv_err_set(err, cerr.code, "vm `%s`: restore: %s", vm->name, cerr.msg);
    *ret_h = h;
    const char *v;
    const char *qemu = qemu_version() ? qemu_version() : "?";
    if (!plan && strcmp((v = json_string_value(json_object_get(h, "profile"))) ?: "", vm->profile))
        return snap_mismatch(vm, dir, "profile", v, vm->profile, err);
    if (strcmp((v = json_string_value(json_object_get(h, "machine"))) ?: "", vm_globals.machine))
        return snap_mismatch(vm, dir, "machine", v, vm_globals.machine, err);
    if (strcmp((v = json_string_value(json_object_get(h, "device_set"))) ?: "", qemu_device_set()))
        return snap_mismatch(vm, dir, "device set", v, qemu_device_set(), err);
    if (strcmp((v = json_string_value(json_object_get(h, "accel"))) ?: "",
               accel_name(vm_globals.accel)))
        return snap_mismatch(vm, dir, "accelerator", v, accel_name(vm_globals.accel), err);
    if (strcmp((v = json_string_value(json_object_get(h, "qemu"))) ?: "", qemu))
        return snap_mismatch(vm, dir, "QEMU", v, qemu_version(), err);
    if (!plan) {
        header_plan(h, own);
        /* NICs: the VM's own, which the caller set to the snapshot's
         * (lua/net.lua), each on a bridge of this run */
        json_t *nics = json_object_get(h, "nics");
        bool same = json_array_size(nics) == vm->nnics;
        for (size_t i = 0; same && i < vm->nnics; i++)
            same = !strcmp(json_string_value(json_object_get(json_array_get(nics, i), "mac")) ?: "",
                           mac_text(vm->nics[i].mac));
        if (!same)
            return pv_err_set(err, EINVAL,
                              "vm `%s`: restore: %s has %zu NIC(s), the VM %zu that differ: "
                              "attach it to the snapshot's bridges first",
                              vm->name, dir, json_array_size(nics), vm->nnics);
        memcpy(own->nics, vm->nics, sizeof(own->nics));
        own->nnics = vm->nnics;
        if (restore_disks(vm, dir, h, own, err) < 0)
            return -EINVAL;
        plan = own;
        if (own->initrd && access(own->initrd, R_OK) < 0)
            return pv_err_set(err, ENOENT,
                              "vm `%s`: restore: %s needs the initrd %s, which is gone", vm->name,
                              dir, own->initrd);
    }
    *ret_plan = plan;
    if ((uint64_t)json_integer_value(json_object_get(json_object_get(h, "ram"), "size")) !=
        plan->memory)
        return pv_err_set(err, EINVAL, "vm `%s`: restore: %s holds %llu MiB of RAM, not %llu",
                          vm->name, dir,
                          (unsigned long long)json_integer_value(
                              json_object_get(json_object_get(h, "ram"), "size")) >>
                              20,
                          (unsigned long long)(plan->memory >> 20));
    return 0;
}

/* Write the snapshot's changed pages into the RAM QEMU maps, before the
 * devices load (virtio reads its rings from guest memory then). Their hash
 * is checked as they go; a mismatch kills the VM before it ever runs. */
static int load_pages(struct vm *vm, const char *dir, json_t *h, struct pv_err *err)
{
    json_t *pg = json_object_get(h, "pages");
    uint64_t count = (uint64_t)json_integer_value(json_object_get(pg, "count"));
    if (!count)
        return 0;
    _cleanup_free_ char *ram = xasprintf("%s/ram", dir);
    _cleanup_free_ char *path = xasprintf("%s/pages", dir);
    struct stat st;
    uintptr_t addr;
    if (stat(ram, &st) < 0)
        return pv_err_set(err, errno, "%s: %s", ram, strerror(errno));
    int r = ram_mapping(vm->pid, &st, vm->plan.memory, &addr, err);
    _cleanup_close_ int fd = r < 0 ? -1 : open(path, O_RDONLY | O_CLOEXEC);
    if (r == 0 && fd < 0)
        r = pv_err_set(err, errno, "%s: %s", path, strerror(errno));
    _cleanup_free_ char *rec = xmalloc((size_t)BATCH * RECORD);
    struct iovec local[BATCH], remote[BATCH];
    struct sha256 *hash = sha256_new();
    uint64_t npages = vm->plan.memory / PAGE;
    for (uint64_t done = 0; r == 0 && done < count;) {
        size_t n = (size_t)MIN(BATCH, count - done);
        ssize_t got = read(fd, rec, n * RECORD);
        if (got != (ssize_t)(n * RECORD)) {
            r = pv_err_set(err, EBADMSG, "%s is cut short", path);
            break;
        }
        sha256_update(hash, rec, n * RECORD);
        for (size_t i = 0; i < n && r == 0; i++) {
            uint64_t pno = record_page(rec, i);
            if (pno >= npages)
                r = pv_err_set(err, EBADMSG, "%s names page %llu of %llu", path,
                               (unsigned long long)pno, (unsigned long long)npages);
            local[i] = (struct iovec){rec + i * RECORD + 8, PAGE};
            remote[i] = (struct iovec){(void *)(addr + pno * PAGE), PAGE};
        }
        ssize_t put = r < 0 ? 0 : process_vm_writev(vm->pid, local, n, remote, n, 0);
        if (r == 0 && put != (ssize_t)(n * PAGE))
            r = qemu_memory_failed(vm, "writing", put, err);
        done += n;
    }
    char hex[65];
    sha256_final_hex(hash, hex);
    if (r == 0 && (read(fd, rec, 1) != 0 ||
                   strcmp(hex, json_string_value(json_object_get(pg, "sha256")) ?: "")))
        r = pv_err_set(err, EBADMSG, "%s does not match its hash in the snapshot", path);
    return r;
}

/* Load the device state into the QEMU that waits for it (-incoming): an
 * incoming migration of a stream without RAM. (xen-load-devices-state would
 * do it too, but QEMU 7.2 aborts in it when Xen is not in use.) */
static int load_devices(struct vm *vm, const char *path, struct pv_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pv_err_set(err, errno, "%s: %s", path, strerror(errno));
    int64_t d = migration_deadline();
    int r = qmp_exec_fd(&vm->qmp, "getfd", json_pack("{s:s}", "fdname", "snap"), fd, d, NULL, err);
    if (r == 0)
        r = qmp_exec(&vm->qmp, "migrate-incoming", json_pack("{s:s}", "uri", "fd:snap"), d, NULL,
                     err);
    if (r == 0)
        r = wait_migration(vm, "restore", err);
    if (r < 0 && vm->state == VM_BOOTED) {
        _cleanup_free_ char *what = xasprintf("restore from %s failed (%s)", path, err->msg);
        vm_died(vm, err, what);
    }
    return r;
}

/* A QEMU started while the VM runs, waiting to restore the snapshot dir
 * (docs/snapshots.md, reset_between_tests): the next restore of dir
 * takes it instead of starting QEMU, 0.1 s of the restore here. */
struct standby {
    struct qemu_proc p;
    char *snap;
    struct stat machine, ram; /* dir's files as they were: a snapshot replaced since is not it */
};

void vm_standby_drop(struct vm *vm)
{
    if (!vm->standby)
        return;
    vm_proc_release(&vm->standby->p);
    free(vm->standby->snap);
    free(vm->standby);
    vm->standby = NULL;
}

int vm_standby(struct vm *vm, const char *dir, struct pv_err *err)
{
    vm_standby_drop(vm);
    int r = vm_need_state(vm, "standby", VM_BOOTED, err);
    if (r < 0)
        return r;
    /* A restore serves each attached disk under a new overlay, made at the
     * restore: a QEMU started before would have the old ones. */
    if (vm->ndisks)
        return 0;
    _cleanup_free_ char *sockdir = xasprintf("%s/standby", vm->dir);
    _cleanup_free_ char *ram = xasprintf("%s/ram", dir);
    _cleanup_free_ char *machine = xasprintf("%s/machine", dir);
    struct standby *s = xcalloc(1, sizeof(*s));
    if ((mkdir(sockdir, 0700) < 0 && errno != EEXIST) || stat(machine, &s->machine) < 0 ||
        stat(ram, &s->ram) < 0) {
        free(s);
        return pv_err_set(err, errno, "vm `%s`: standby for %s: %s", vm->name, dir,
                          strerror(errno));
    }
    /* QEMU starts on its own; nothing here waits for it */
    r = vm_spawn(vm, &vm->plan, &(struct start){.incoming = true, .ram_file = ram}, sockdir, &s->p,
                 err);
    if (r < 0) {
        free(s);
        return pv_err_wrap(err, "vm `%s`: standby for %s", vm->name, dir);
    }
    s->snap = xstrdup(dir);
    vm->standby = s;
    return s->p.pid;
}

static bool same_stat(const struct stat *a, const char *path)
{
    struct stat b;
    return stat(path, &b) == 0 && a->st_dev == b.st_dev && a->st_ino == b.st_ino &&
           a->st_mtim.tv_sec == b.st_mtim.tv_sec && a->st_mtim.tv_nsec == b.st_mtim.tv_nsec;
}

/* The standby QEMU for a restore of dir, if there is one that is still
 * alive and dir is still the snapshot it was started for. */
static struct qemu_proc *standby_for(struct vm *vm, const char *dir)
{
    struct standby *s = vm->standby;
    if (!s)
        return NULL;
    _cleanup_free_ char *ram = xasprintf("%s/ram", dir);
    _cleanup_free_ char *machine = xasprintf("%s/machine", dir);
    struct pollfd ended = {s->p.pidfd, POLLIN, 0};
    if (strcmp(s->snap, dir) || !same_stat(&s->machine, machine) || !same_stat(&s->ram, ram) ||
        poll(&ended, 1, 0) != 0) {
        vm_standby_drop(vm);
        return NULL;
    }
    return &s->p;
}

/* Start vm from the snapshot directory dir: with the plan its header
 * records, or (plan) with that one, which the caller vouches is the same
 * machine. fresh: the logs start empty (else they go on). since: what the
 * agent's deadline counts from, for the error. On failure the VM is dead:
 * a damaged snapshot never leaves a half-started guest. */
static int restore(struct vm *vm, const char *dir, const struct vm_boot *plan, bool fresh,
                   const char *since, struct pv_err *err)
{
    json_t *h = NULL;
    struct vm_boot own = {0};
    _cleanup_free_ char *ram = xasprintf("%s/ram", dir);
    _cleanup_free_ char *devices = xasprintf("%s/devices", dir);
    int agent_l = -1;
    int r = check_machine(vm, dir, &h, plan, &own, &plan, err);
    struct qemu_proc *standby = r == 0 ? standby_for(vm, dir) : NULL;
    if (r == 0)
        r = vm_launch(
            vm, plan,
            &(struct start){.incoming = true, .fresh = fresh, .ram_file = ram, .adopt = standby},
            &agent_l, err);
    if (standby)
        vm_standby_drop(vm); /* taken, or not usable */
    vm_boot_release(&own);
    if (r == 0 && (r = load_pages(vm, dir, h, err)) < 0)
        pv_err_wrap(err, "vm `%s`: restore", vm->name);
    json_decref(h);
    if (r == 0)
        r = load_devices(vm, devices, err);
    if (r == 0)
        r = vm_qmp(vm, "cont", NULL, err);
    if (r < 0) {
        if (agent_l >= 0)
            close(agent_l);
        if (vm->state == VM_BOOTED) {
            vm_kill(vm);
            vm->state = VM_DEAD;
        }
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
    return restore(vm, entry, b, false, "the resume from the boot cache", err);
}

int vm_save_boot(struct vm *vm, const struct vm_boot *b, const char *dir, struct pv_err *err)
{
    int r = vm_boot_as(vm, b, &(struct start){.fresh = true}, err);
    if (r < 0)
        return r;
    r = guest_ping(&(struct target){vm, 0}, err); /* the kernel log so far has arrived */
    if (r == 0)
        r = vm_qmp(vm, "stop", NULL, err);
    if (r == 0)
        r = save_machine(vm, dir, false, err);
    if (r == 0)
        r = vm_copy_logs(vm->dir, dir, err);
    vm_kill(vm);
    return r < 0 ? 1 : 0;
}
