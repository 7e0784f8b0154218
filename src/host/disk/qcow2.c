/* qcow2 images for plain disks (docs/disks.md#plain-disks): one made when
 * an attached image does not exist, an overlay over a snapshot's frozen
 * image at each restore, both by `qemu-img create`, and such an overlay
 * flattened into one image when a snapshot freezes it, by `qemu-img
 * convert` (spawn.h: execvp, no shell, a timeout); and the check that an
 * image the user gave can be frozen alone.
 * Provium never reads or writes a qcow2 image's contents: QEMU does. */
#include "disk/disk_priv.h"

#include "spawn.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/wait.h>

/* How long qemu-img may take to write an image's header, and to copy a
 * disk's data (at least 10 MiB/s for a 4 GiB disk full of it). */
#define QEMU_IMG_TIMEOUT_MS 60000
#define QEMU_IMG_CONVERT_TIMEOUT_MS 600000

/* What qemu-img printed, for an error: each line less "qemu-img: <path>: "
 * (the caller names the image better), a line about the file it could not
 * delete dropped (a file with no name, here), "; " between, escaped. */
static void said(const struct buf *out, const char *path, struct buf *to)
{
    _cleanup_free_ char *prefix = xasprintf("qemu-img: %s: ", path);
    _cleanup_free_ char *deleting = xasprintf("qemu-img: Error when deleting file %s:", path);
    for (size_t at = 0; at < out->len;) {
        const char *line = out->data + at;
        const char *nl = memchr(line, '\n', out->len - at);
        size_t n = nl ? (size_t)(nl - line) : out->len - at;
        at += n + (nl ? 1 : 0);
        while (n && line[n - 1] == '\r')
            n--;
        if (!n || (n >= strlen(deleting) && !memcmp(line, deleting, strlen(deleting))))
            continue;
        if (n >= strlen(prefix) && !memcmp(line, prefix, strlen(prefix))) {
            line += strlen(prefix);
            n -= strlen(prefix);
        }
        if (to->len)
            buf_add(to, "; ", 2);
        buf_add_escaped(to, line, n);
    }
}

/* qemu-img with argv (its name first), path the file it writes: 0, or
 * -errno with err saying what it said. */
static int qemu_img(const char *const argv[], const char *path, struct pv_err *err)
{
    struct buf out = {0};
    int status = 0;
    int ms = !strcmp(argv[1], "convert") ? QEMU_IMG_CONVERT_TIMEOUT_MS : QEMU_IMG_TIMEOUT_MS;
    int r = spawn_run(argv, NULL, &out, 4096, ms, &status, err);
    if (r == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char how[64];
        spawn_describe_status(status, how, sizeof(how));
        struct buf words = {0};
        said(&out, path, &words);
        buf_add(&words, "", 1);
        r = pv_err_set(err, EIO, "qemu-img %s %s %s: %s", argv[1], how,
                       words.len > 1 ? "saying" : "", words.len > 1 ? words.data : "(no output)");
        buf_release(&words);
    } else if (r == -ETIMEDOUT) {
        r = pv_err_set(err, ETIMEDOUT, "qemu-img %s did not finish in %d s", argv[1], ms / 1000);
    } else if (r == -ENOENT) {
        r = pv_err_set(err, ENOENT, "qemu-img is not installed (Debian: qemu-utils)");
    }
    buf_release(&out);
    return r;
}

/* qemu-img create -q -f qcow2 [-b backing -F qcow2] path [size] */
static int qemu_img_create(const char *path, const char *backing, uint64_t size, struct pv_err *err)
{
    char sz[32];
    snprintf(sz, sizeof(sz), "%llu", (unsigned long long)size);
    const char *with_size[] = {"qemu-img", "create", "-q", "-f", "qcow2", "--", path, sz, NULL};
    const char *with_base[] = {"qemu-img", "create", "-q",    "-f", "qcow2", "-b",
                               backing,    "-F",     "qcow2", "--", path,    NULL};
    return qemu_img(backing ? with_base : with_size, path, err);
}

/* A new empty file in dir for qemu-img to write before the image has a
 * name: O_TMPFILE, which no name reaches (nothing is left behind, even if
 * provium is killed meanwhile), that qemu-img opens as /proc/<pid>/fd/<n>;
 * else (a file system without O_TMPFILE) a hidden name, removed after.
 * The same errors as a raw image's creation (a directory missing, not
 * writable). */
struct temp {
    int fd;
    char *name; /* the fallback's name, else NULL */
    char *path; /* what qemu-img is given */
};

static int temp_in(const char *dir, mode_t mode, const char *what, struct temp *t,
                   struct pv_err *err)
{
    *t = (struct temp){.fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode)};
    if (t->fd >= 0) {
        t->path = xasprintf("/proc/%d/fd/%d", (int)getpid(), t->fd);
        return 0;
    }
    if (errno == EISDIR || errno == EOPNOTSUPP || errno == EINVAL) {
        t->name = xasprintf("%s/.provium-qcow2-XXXXXX", dir);
        if ((t->fd = mkostemp(t->name, O_CLOEXEC)) >= 0) {
            t->path = xstrdup(t->name);
            return 0;
        }
        free(t->name);
        t->name = NULL;
    }
    return pv_err_set(err, errno, "%s: %s", what, strerror(errno));
}

/* The temporary file's descriptor closed (unless keep), its name gone. */
static void temp_drop(struct temp *t, bool keep)
{
    if (t->name)
        unlink(t->name);
    if (!keep && t->fd >= 0)
        close(t->fd);
    free(t->name);
    free(t->path);
}

int dk_qcow2_create(const char *path, uint64_t size, struct pv_err *err)
{
    _cleanup_free_ char *copy = xstrdup(path);
    _cleanup_free_ char *what = xasprintf("disk image %s: creating it", path);
    struct temp t;
    int r = temp_in(dirname(copy), 0644, what, &t, err);
    if (r < 0)
        return r;
    r = qemu_img_create(t.path, NULL, size, err);
    /* the name only once the image is whole; an image made meanwhile by
     * someone else is theirs, and the one opened */
    char self[64];
    snprintf(self, sizeof(self), "/proc/self/fd/%d", t.fd);
    if (r < 0)
        pv_err_wrap(err, "%s", what);
    else if ((t.name ? link(t.name, path)
                     : linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW)) < 0 &&
             errno != EEXIST)
        r = pv_err_set(err, errno, "%s: %s", what, strerror(errno));
    temp_drop(&t, false);
    return r;
}

int dk_qcow2_overlay(const char *base, const char *dir, struct pv_err *err)
{
    _cleanup_free_ char *abs = realpath(base, NULL);
    if (!abs)
        return pv_err_set(err, errno, "disk image %s: %s", base, strerror(errno));
    _cleanup_free_ char *what = xasprintf("an overlay over %s in %s", base, dir);
    struct temp t;
    int r = temp_in(dir, 0600, what, &t, err);
    if (r < 0)
        return r;
    /* no name reaches it: QEMU opens it by provium's descriptor */
    r = qemu_img_create(t.path, abs, 0, err);
    if (r < 0)
        pv_err_wrap(err, "%s", what);
    temp_drop(&t, r == 0);
    return r < 0 ? r : t.fd;
}

/* The first 80 bytes of the qcow2 image on fd (through its v3 feature
 * fields; a shorter file reads as zeros past its end): 0, -EINVAL when it
 * is no qcow2, or -errno. */
static int qcow2_header(int fd, unsigned char h[80])
{
    int r = dk_pread_all(fd, h, 80, 0);
    if (r == 0 && memcmp(h, "QFI\xfb", 4))
        r = -EINVAL;
    return r;
}

int dk_qcow2_alone(int fd)
{
    unsigned char h[80];
    int r = qcow2_header(fd, h);
    if (r < 0)
        return r;
    uint32_t version = (uint32_t)load_be(h + 4, 4);
    /* a backing file (its name may be relative to the image's directory),
     * or an external data file (incompatible feature bit 2): the image
     * alone is not the disk */
    if (load_be(h + 8, 8) || (version >= 3 && (load_be(h + 72, 8) & 4)))
        return -EXDEV;
    return 0;
}

int dk_qcow2_size(int fd, uint64_t *ret)
{
    unsigned char h[80];
    int r = qcow2_header(fd, h);
    if (r == 0)
        *ret = load_be(h + 24, 8);
    return r;
}

int dk_qcow2_flatten(int fd, const char *out, struct pv_err *err)
{
    char src[64];
    snprintf(src, sizeof(src), "/proc/%d/fd/%d", (int)getpid(), fd);
    /* -U: the stopped QEMU still holds the image's lock */
    const char *argv[] = {"qemu-img", "convert", "-U", "-f", "qcow2", "-O",
                          "qcow2",    "--",      src,  out,  NULL};
    return qemu_img(argv, src, err);
}
