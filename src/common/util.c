#include "util.h"

#include <poll.h>
#include <sys/file.h>

#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

static void oom(void)
{
    static const char msg[] = "provium: out of memory\n";
    (void)!write(2, msg, sizeof(msg) - 1);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        oom();
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        oom();
    return p;
}

void *xmemdup(const void *p, size_t n)
{
    return memcpy(xmalloc(n), p, n);
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *p;
    if (vasprintf(&p, fmt, ap) < 0)
        oom();
    va_end(ap);
    return p;
}

int pv_err_set(struct pv_err *err, int code, const char *fmt, ...)
{
    if (code <= 0)
        code = EIO;
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
        err->guest = false;
        err->story = NULL;
    }
    return -code;
}

const char *pv_err_story(const struct pv_err *err)
{
    return err && err->story ? err->story : "";
}

int pv_err_wrap(struct pv_err *err, const char *fmt, ...)
{
    if (!err)
        return -EIO;
    va_list ap;
    va_start(ap, fmt);
    char *prefix;
    if (vasprintf(&prefix, fmt, ap) < 0)
        oom();
    va_end(ap);
    /* cut to msg's size like pv_err_set; the story, if any, still follows */
    _cleanup_free_ char *both = xasprintf("%s: %s", prefix, err->msg);
    free(prefix);
    snprintf(err->msg, sizeof(err->msg), "%s", both);
    if (err->code <= 0)
        err->code = EIO;
    return -err->code;
}

/* Give back the consumed front: the content moves to the allocation's start. */
static void buf_compact(struct buf *b)
{
    if (!b->skip)
        return;
    char *base = b->data - b->skip;
    memmove(base, b->data, b->len + 1);
    b->data = base;
    b->cap += b->skip;
    b->skip = 0;
}

void buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra + 1 <= b->cap)
        return;
    /* Compacting only once the front is as large as what is left moves each
     * byte at most once for every byte consumed before it. */
    if (b->skip >= b->len) {
        buf_compact(b);
        if (b->len + extra + 1 <= b->cap)
            return;
    }
    size_t cap = b->cap + b->skip ? b->cap + b->skip : 64;
    while (cap < b->skip + b->len + extra + 1)
        cap *= 2;
    char *base = xrealloc(b->data ? b->data - b->skip : NULL, cap);
    b->data = base + b->skip;
    b->cap = cap - b->skip;
    b->data[b->len] = 0;
}

void buf_add(struct buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void buf_adds(struct buf *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

void buf_addf(struct buf *b, const char *fmt, ...)
{
    if (!fmt) /* also tells gcc's -Wformat-truncation under -fsanitize */
        return;
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    char probe[1];
    int n = vsnprintf(probe, sizeof(probe), fmt, ap);
    va_end(ap);
    if (n > 0) {
        buf_reserve(b, (size_t)n);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        if (b->data)
            buf_compact(b); /* nothing left to move */
    } else {
        b->data += n;
        b->cap -= n;
        b->skip += n;
        b->len -= n;
    }
    if (b->data)
        b->data[b->len] = 0;
}

ssize_t buf_read(struct buf *b, int fd)
{
    /* A fresh buffer gets 64 KiB with the NUL, then doubles only when less
     * than 16 KiB is free: asking for 64 KiB of room on every read doubled
     * it past 128 KiB, ASan's largest cached size class (the fuzz targets
     * that read a peer ran 2 to 4 times slower for the mmap, page faults
     * and munmap of each connection's buffer). */
    buf_reserve(b, b->cap ? 16384 : 65535);
    ssize_t r = read(fd, b->data + b->len, b->cap - b->len - 1);
    if (r > 0) {
        b->len += (size_t)r;
        b->data[b->len] = 0;
    }
    return r;
}

void buf_release(struct buf *b)
{
    free(b->data ? b->data - b->skip : NULL);
    b->data = NULL;
    b->len = b->cap = b->skip = 0;
}

char *buf_steal(struct buf *b)
{
    buf_reserve(b, 0);
    buf_compact(b);
    char *p = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

int read_file(const char *path, size_t max, struct buf *out)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    for (;;) {
        buf_reserve(out, 65536);
        ssize_t n = read(fd, out->data + out->len, out->cap - out->len - 1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        out->len += (size_t)n;
        out->data[out->len] = 0;
        if (out->len > max)
            return -EFBIG;
    }
    return 0;
}

int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The temporary file beside path, made exclusively: something already at
 * its name (a symlink planted by whoever else can write the directory) is
 * never followed. A plain file of the user's there is the leftover of a
 * writer killed before its rename whose pid this process now has: it goes. */
static int write_file_tmp(const char *tmp, int mode)
{
    for (int tries = 0; tries < 2; tries++) {
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd >= 0 || errno != EEXIST)
            return fd < 0 ? -errno : fd;
        struct stat st;
        if (tries || lstat(tmp, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid() ||
            unlink(tmp) < 0)
            break;
    }
    return -EEXIST;
}

int write_file_atomic(const char *path, const void *data, size_t len, int mode)
{
    _cleanup_free_ char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
    int fd = write_file_tmp(tmp, mode);
    if (fd < 0)
        return fd;
    int r = write_all(fd, data, len);
    if (r == 0 && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r == 0 && rename(tmp, path) < 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    return r;
}

int mkdir_p(const char *path, int mode)
{
    _cleanup_free_ char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int user_home_dir(char **ret, struct pv_err *err)
{
    *ret = NULL;
    const char *h = getenv("HOME");
    if (h && h[0] == '/') {
        *ret = xstrdup(h);
        return 0;
    }
    struct passwd *pw = getpwuid(getuid());
    if (pw && pw->pw_dir && pw->pw_dir[0] == '/') {
        *ret = xstrdup(pw->pw_dir);
        return 0;
    }
    return pv_err_set(err, ENOENT,
                      "cannot find your home directory: HOME is %s and uid %u has no home in "
                      "the password database; set HOME (or PROVIUM_CACHE and cache_dir)",
                      h && *h ? "not an absolute path" : "not set", (unsigned)getuid());
}

/* A directory whoever else owns or can write (without the sticky bit) can
 * have its entries swapped under us: not for a cache. */
static int user_dir_parent_check(const char *dir, struct pv_err *err)
{
    struct stat st;
    if (stat(dir, &st) < 0)
        return pv_err_set(err, errno, "%s: %s", dir, strerror(errno));
    if (st.st_uid != getuid() && st.st_uid != 0)
        return pv_err_set(err, EPERM,
                          "%s belongs to uid %u, not to you (uid %u): refusing to keep a cache "
                          "in it; set XDG_CACHE_HOME or HOME to a directory of yours",
                          dir, (unsigned)st.st_uid, (unsigned)getuid());
    if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX))
        return pv_err_set(
            err, EPERM,
            "%s is writable by group or others (mode %04o): refusing to keep a cache in "
            "it; set XDG_CACHE_HOME or HOME to a directory of yours",
            dir, (unsigned)(st.st_mode & 07777));
    return 0;
}

/* dir exists now, made 0700 if it was missing; an existing one is the
 * user's alone, or refused. */
static int user_dir_make(const char *dir, struct pv_err *err)
{
    _cleanup_free_ char *parent = xstrdup(dir);
    *strrchr(parent, '/') = 0;
    int r = mkdir_p(parent, 0700);
    if (r < 0)
        return pv_err_set(err, -r, "cannot make %s: %s", parent, strerror(-r));
    if ((r = user_dir_parent_check(parent, err)) < 0)
        return r;
    if (mkdir(dir, 0700) == 0)
        return 0;
    if (errno != EEXIST)
        return pv_err_set(err, errno, "cannot make %s: %s", dir, strerror(errno));
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 && (errno == ELOOP || errno == ENOTDIR))
        return pv_err_set(err, EPERM,
                          "%s is a symlink or not a directory: refusing it as "
                          "provium's cache; remove it",
                          dir);
    if (fd < 0 || fstat(fd, &st) < 0)
        return pv_err_set(err, errno, "%s: %s", dir, strerror(errno));
    if (st.st_uid != getuid())
        return pv_err_set(err, EPERM,
                          "%s belongs to uid %u, not to you (uid %u): someone else made it; "
                          "refusing it as provium's cache (remove it, or set PROVIUM_CACHE)",
                          dir, (unsigned)st.st_uid, (unsigned)getuid());
    if (st.st_mode & 022)
        return pv_err_set(err, EPERM,
                          "%s is writable by group or others (mode %04o): refusing it as provium's "
                          "cache; if nothing in it is someone else's, chmod 700 it",
                          dir, (unsigned)(st.st_mode & 07777));
    /* made 0755 by an earlier provium: only we could write it; close it */
    if ((st.st_mode & 077) && fchmod(fd, st.st_mode & 0700) < 0)
        return pv_err_set(err, errno, "chmod 700 %s: %s", dir, strerror(errno));
    return 0;
}

int user_cache_dir(unsigned flags, char **ret, struct pv_err *err)
{
    *ret = NULL;
    _cleanup_free_ char *dir = NULL;
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg && xdg[0] == '/') { /* relative values are invalid per the XDG spec */
        dir = xasprintf("%s/provium", xdg);
    } else {
        _cleanup_free_ char *home = NULL;
        int r = user_home_dir(&home, err);
        if (r < 0)
            return r;
        dir = xasprintf("%s/.cache/provium", strcmp(home, "/") ? home : "");
    }
    if (flags & USER_DIR_MAKE) {
        int r = user_dir_make(dir, err);
        if (r < 0)
            return r;
    }
    *ret = steal_pointer(&dir);
    return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        rmdir(path);
    else
        unlink(path);
    return 0;
}

int rm_rf(const char *path)
{
    if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

bool fd_at_path(int fd, const char *path)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && a.st_nlink > 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

static bool inode_seen(struct inode_set *s, const struct stat *st)
{
    if (!s)
        return false;
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].dev == st->st_dev && s->v[i].ino == st->st_ino)
            return true;
    s->v = xrealloc(s->v, (s->n + 1) * sizeof(*s->v));
    s->v[s->n++] = (struct inode_id){st->st_dev, st->st_ino};
    return false;
}

static uint64_t usage_at(int at, const char *name, struct inode_set *seen, int depth)
{
    struct stat st;
    if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return 0;
    if (S_ISREG(st.st_mode))
        return inode_seen(seen, &st) ? 0 : (uint64_t)st.st_blocks * 512;
    if (!S_ISDIR(st.st_mode) || depth == 0)
        return 0;
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd < 0 ? NULL : fdopendir(fd);
    if (!d) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            total += usage_at(dirfd(d), e->d_name, seen, depth - 1);
    closedir(d);
    return total;
}

uint64_t disk_usage(const char *path, struct inode_set *seen)
{
    return usage_at(AT_FDCWD, path, seen, 8);
}

void inode_set_release(struct inode_set *s)
{
    free(s->v);
    *s = (struct inode_set){0};
}

int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t now_ms(void)
{
    return now_ns() / 1000000;
}

int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

size_t utf8_seq_len(const void *p, size_t n)
{
    const unsigned char *s = p;
    if (!n)
        return 0;
    if (s[0] < 0x80)
        return 1;
    size_t len = s[0] >= 0xc2 && s[0] <= 0xdf   ? 2
                 : s[0] >= 0xe0 && s[0] <= 0xef ? 3
                 : s[0] >= 0xf0 && s[0] <= 0xf4 ? 4
                                                : 0;
    if (!len || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    /* the second byte's range rules out overlong forms, surrogates
     * (U+D800-U+DFFF) and code points past U+10FFFF */
    if ((s[0] == 0xe0 && s[1] < 0xa0) || (s[0] == 0xed && s[1] > 0x9f) ||
        (s[0] == 0xf0 && s[1] < 0x90) || (s[0] == 0xf4 && s[1] > 0x8f))
        return 0;
    return len;
}

uint64_t load_be(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | b[i];
    return v;
}

void buf_add_shell_word(struct buf *b, const char *s)
{
    if (*s &&
        !s[strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./:@%+=,-")]) {
        buf_adds(b, s);
        return;
    }
    buf_add(b, "'", 1);
    for (const char *q; (q = strchr(s, '\'')); s = q + 1) {
        buf_add(b, s, (size_t)(q - s));
        buf_adds(b, "'\\''");
    }
    buf_adds(b, s);
    buf_add(b, "'", 1);
}

void buf_add_escaped(struct buf *b, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq_len(s + i, n - i);
        unsigned char c = s[i];
        bool control = len == 1   ? (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f
                       : len == 2 ? c == 0xc2 && s[i + 1] < 0xa0
                       : len == 3 ? c == 0xef && s[i + 1] == 0xbf && s[i + 2] >= 0xbe
                                  : false;
        if (c == '\r' && i + 1 < n && s[i + 1] == '\n') {
            /* CR LF ends a line on a terminal as LF alone does */
            buf_add(b, "\r", 1);
        } else if (c == '\r') {
            buf_adds(b, "\\r");
        } else if (!len || control) {
            for (size_t k = 0; k < (len ? len : 1); k++)
                buf_addf(b, "\\x%02x", s[i + k]);
        } else {
            buf_add(b, s + i, len);
        }
        i += len ? len : 1;
    }
}

int parse_size(const char *s, uint64_t *ret)
{
    if (!s || !*s)
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || v < 0 || !isfinite(v))
        return -EINVAL;
    double mult = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mult = 1024.0;
        end++;
        break;
    case 'm':
    case 'M':
        mult = 1024.0 * 1024;
        end++;
        break;
    case 'g':
    case 'G':
        mult = 1024.0 * 1024 * 1024;
        end++;
        break;
    case 't':
    case 'T':
        mult = 1024.0 * 1024 * 1024 * 1024;
        end++;
        break;
    default: break;
    }
    if (mult > 1 && *end == 'i')
        end++;
    if (*end == 'B' || *end == 'b')
        end++;
    if (*end)
        return -EINVAL;
    v *= mult;
    if (v > 18446744073709549568.0)
        return -EINVAL;
    *ret = (uint64_t)v;
    return 0;
}

int parse_duration(const char *s, double *ret_seconds)
{
    if (!s || !*s)
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0)
        return -EINVAL;
    if (!strcmp(end, "") || !strcmp(end, "s"))
        ;
    else if (!strcmp(end, "ms"))
        v /= 1000.0;
    else if (!strcmp(end, "m"))
        v *= 60.0;
    else if (!strcmp(end, "h"))
        v *= 3600.0;
    else
        return -EINVAL;
    if (v > PV_DURATION_MAX)
        return -ERANGE;
    *ret_seconds = v;
    return 0;
}

int flock_wait(int fd, int op, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    while (flock(fd, op | LOCK_NB) < 0) {
        if (errno != EWOULDBLOCK && errno != EINTR)
            return -errno;
        if (now_ms() >= deadline)
            return -ETIMEDOUT;
        poll(NULL, 0, 20);
    }
    return 0;
}
