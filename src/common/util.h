/* Small helpers shared by the host program, the agent and the tests:
 * cleanup attributes, checked allocation, a growable byte buffer and the
 * error record that the core fills on failure. No logging here. */
#pragma once

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define PV_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define PV_UNUSED __attribute__((unused))
#define PV_STR_(x) #x
#define PV_STR(x) PV_STR_(x)

static inline void freep(void *p)
{
    free(*(void **)p);
}
static inline void closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

/* Take ownership of *pp, leaving NULL behind (so a cleanup does nothing). */
#define steal_pointer(pp)                                                                          \
    ({                                                                                             \
        __typeof__(*(pp)) _p = *(pp);                                                              \
        *(pp) = NULL;                                                                              \
        _p;                                                                                        \
    })
static inline int steal_fd(int *fd)
{
    int r = *fd;
    *fd = -1;
    return r;
}

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
void *xmemdup(const void *p, size_t n);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) PV_PRINTF(1, 2);

/* The error record: code is a positive errno-style value (or 0), msg a
 * human sentence naming the thing that failed. Callers wrap it with context
 * via pv_err_wrap() on the way up. */
struct pv_err {
    int code;
    bool guest;    /* code is the guest's answer (the agent's errno), not a host failure */
    char msg[768]; /* what failed, in a sentence or two (longer is cut) */
    /* A dead VM's story (QEMU's words, the last console lines), lines that
     * follow msg. Borrowed from the VM (vm->story), which outlives any report
     * of its death; NULL for every other error. */
    const char *story;
};

/* Set err (which may be NULL) and return -code, so `return pv_err_set(...)`
 * reads naturally in functions returning 0 / -errno. */
int pv_err_set(struct pv_err *err, int code, const char *fmt, ...) PV_PRINTF(3, 4);
/* Prefix the existing message: "<context>: <old message>". Returns -code. */
int pv_err_wrap(struct pv_err *err, const char *fmt, ...) PV_PRINTF(2, 3);
/* The lines that follow msg when the error is shown in full: "" or
 * "\n" + the story. */
const char *pv_err_story(const struct pv_err *err);

/* A growable byte buffer. data is always NUL-terminated (not counted in len)
 * so text can be used as a C string. cap counts from data. buf_consume moves
 * data forward over the allocation's first skip bytes instead of moving the
 * rest down, so reading a stream frame by frame costs what it reads, not
 * the square of it (a peer's thousands of small frames in one read). */
struct buf {
    char *data;
    size_t len, cap, skip;
};
#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }
void buf_reserve(struct buf *b, size_t extra);
void buf_add(struct buf *b, const void *p, size_t n);
void buf_adds(struct buf *b, const char *s);
void buf_addf(struct buf *b, const char *fmt, ...) PV_PRINTF(2, 3);
void buf_consume(struct buf *b, size_t n); /* drop n bytes from the front */
/* One read(2) from fd appended to b; returns what read returned (errno kept). */
ssize_t buf_read(struct buf *b, int fd);
void buf_release(struct buf *b);
char *buf_steal(struct buf *b); /* returns data (never NULL), leaves b empty */

/* The big-endian unsigned number in the n (at most 8) bytes at p. */
uint64_t load_be(const void *p, size_t n);

/* Append s as one word a POSIX shell reads back as s: as it is when it
 * holds only letters, digits and _./:@%+=,-, else in single quotes. For
 * commands printed for the user to paste (docs/debugging.md). */
void buf_add_shell_word(struct buf *b, const char *s);

/* The length of the valid UTF-8 sequence at p (at most n bytes), or 0.
 * Strict: overlong forms, UTF-16 surrogates and code points past U+10FFFF
 * are not valid. */
size_t utf8_seq_len(const void *p, size_t n);
/* Append the n bytes at p to b as text that is safe to print on a terminal
 * and carries no byte that XML or YAML refuse (docs/cli.md#guest-bytes):
 * the bytes a terminal acts on become visible escapes. A CR becomes `\r`
 * unless a LF follows it; every other C0 control but '\n' and '\t' (ESC
 * starts colours, titles, OSC 52 clipboard writes), DEL, the C1 controls
 * U+0080-U+009F, the noncharacters U+FFFE and U+FFFF, and every byte that is
 * not part of valid UTF-8 become `\xNN`, one per byte. */
void buf_add_escaped(struct buf *b, const void *p, size_t n);

/* Whole-file helpers; return 0 or -errno. read_file caps the size at max. */
int read_file(const char *path, size_t max, struct buf *out);
/* Through <path>.tmp.<pid>, made exclusively (O_EXCL | O_NOFOLLOW: -EEXIST
 * when something not ours is at that name), then renamed over path. */
int write_file_atomic(const char *path, const void *data, size_t len, int mode);
int write_all(int fd, const void *p, size_t n);
int mkdir_p(const char *path, int mode);

/* The user's home directory: $HOME when it is an absolute path, else the
 * password database's entry for the real uid (cron jobs and services often
 * run without HOME). -ENOENT with err when neither has one. Caller frees. */
int user_home_dir(char **ret, struct pv_err *err);
/* provium's directory in the user's cache: $XDG_CACHE_HOME/provium when that
 * is absolute, else <home>/.cache/provium; never a fixed path in /tmp.
 * Without flags only the path is computed. With USER_DIR_MAKE the directory
 * is made (0700) when missing, and one that exists must be the user's alone:
 * a directory, not a symlink, owned by the user, writable by nobody else
 * (read and search bits for others are taken away), in a parent owned by
 * the user or root that others cannot write (or sticky). Otherwise -EPERM
 * with err naming the directory and the fix. Caller frees. */
enum { USER_DIR_MAKE = 1 << 0 };
int user_cache_dir(unsigned flags, char **ret, struct pv_err *err);
int rm_rf(const char *path);
/* Whether fd is still the file or directory at path: not removed, nor
 * renamed away and replaced, since it was opened. */
bool fd_at_path(int fd, const char *path);

/* Files already counted by disk_usage, by device and inode. */
struct inode_set {
    size_t n;
    struct inode_id {
        dev_t dev;
        ino_t ino;
    } * v;
};
/* The disk space path takes (a file, or a directory's files, recursively),
 * counting a file that is already in seen (a hard link to it) as nothing
 * and adding the others; seen may be NULL. Entries that vanish meanwhile
 * count as nothing. */
uint64_t disk_usage(const char *path, struct inode_set *seen);
void inode_set_release(struct inode_set *s);
/* flock(fd, op) that waits at most timeout_ms: 0, -ETIMEDOUT, or -errno. */
int flock_wait(int fd, int op, int timeout_ms);
/* Monotonic clock in nanoseconds / milliseconds. */
int64_t now_ns(void);
int64_t now_ms(void);
/* Realtime clock in nanoseconds since the epoch. */
int64_t wall_ns(void);

/* Parse "512M", "2G", "1024" (bytes; K/M/G/T are powers of 1024, an optional
 * trailing 'i'/'iB'/'B' is accepted). Returns 0 or -EINVAL. */
int parse_size(const char *s, uint64_t *ret);
/* The longest duration provium takes, in seconds: 1e9 s, about 31 years.
 * Anything longer is a typo ("1e300h"), and a deadline of now plus it in
 * nanoseconds, times the TCG scale of default waits, must stay far inside
 * int64_t (about 292 years). lua/util.lua holds the same limit. */
#define PV_DURATION_MAX 1e9
/* Parse "30s", "500ms", "5m", "2h" or a bare number of seconds. Returns 0,
 * -EINVAL for malformed, negative or non-finite values, or -ERANGE for a
 * duration over PV_DURATION_MAX. */
int parse_duration(const char *s, double *ret_seconds);
