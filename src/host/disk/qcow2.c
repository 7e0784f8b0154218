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

/* How long qemu-img may take to write an image's header. */
#define QEMU_IMG_TIMEOUT_MS 60000

/* qemu-img with argv (its name first): 0, or -errno with err saying what
 * it said, less the name path it gives each line (the caller's is better). */
static int qemu_img(const char *const argv[], const char *path, struct pv_err *err)
{
    struct buf out = {0};
    int status = 0;
    int r = spawn_run(argv, NULL, &out, 4096, QEMU_IMG_TIMEOUT_MS, &status, err);
    if (r == 0 && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char how[64];
        spawn_describe_status(status, how, sizeof(how));
        while (out.len && (out.data[out.len - 1] == '\n' || out.data[out.len - 1] == '\r'))
            out.len--;
        _cleanup_free_ char *prefix = xasprintf("qemu-img: %s: ", path);
        size_t skip = out.len >= strlen(prefix) && !memcmp(out.data, prefix, strlen(prefix))
                          ? strlen(prefix)
                          : 0;
        struct buf said = {0};
        buf_add_escaped(&said, out.data + skip, out.len - skip);
        buf_add(&said, "", 1);
        r = pv_err_set(err, EIO, "qemu-img %s %s %s: %s", argv[1], how,
                       said.len > 1 ? "saying" : "", said.len > 1 ? said.data : "(no output)");
        buf_release(&said);
    } else if (r == -ETIMEDOUT) {
        r = pv_err_set(err, ETIMEDOUT, "qemu-img %s did not finish in %d s", argv[1],
                       QEMU_IMG_TIMEOUT_MS / 1000);
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

/* A new empty file beside path (or in dir), its name in *ret_tmp: where
 * qemu-img writes before the image has its name. The same errors as a raw
 * image's creation (a directory missing, not writable). */
static int temp_beside(const char *dir, const char *what, char **ret_tmp, struct pv_err *err)
{
    char *tmp = xasprintf("%s/.provium-qcow2-XXXXXX", dir);
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return pv_err_set(err, e, "%s: %s", what, strerror(e));
    }
    close(fd);
    *ret_tmp = tmp;
    return 0;
}

int dk_qcow2_create(const char *path, uint64_t size, struct pv_err *err)
{
    _cleanup_free_ char *copy = xstrdup(path);
    _cleanup_free_ char *what = xasprintf("disk image %s: creating it", path);
    _cleanup_free_ char *tmp = NULL;
    int r = temp_beside(dirname(copy), what, &tmp, err);
    if (r < 0)
        return r;
    r = qemu_img_create(tmp, NULL, size, err);
    /* the name only once the image is whole; an image made meanwhile by
     * someone else is theirs, and the one opened */
    if (r == 0 && link(tmp, path) < 0 && errno != EEXIST)
        r = pv_err_set(err, errno, "%s: %s", what, strerror(errno));
    else if (r < 0)
        pv_err_wrap(err, "%s", what);
    unlink(tmp);
    return r;
}

int dk_qcow2_overlay(const char *base, const char *dir, struct pv_err *err)
{
    _cleanup_free_ char *abs = realpath(base, NULL);
    if (!abs)
        return pv_err_set(err, errno, "disk image %s: %s", base, strerror(errno));
    _cleanup_free_ char *tmp = NULL;
    _cleanup_free_ char *what = xasprintf("an overlay over %s in %s", base, dir);
    int r = temp_beside(dir, what, &tmp, err);
    if (r < 0)
        return r;
    if ((r = qemu_img_create(tmp, abs, 0, err)) < 0) {
        pv_err_wrap(err, "%s", what);
    } else if ((r = open(tmp, O_RDWR | O_CLOEXEC)) < 0) {
        r = pv_err_set(err, errno, "%s: %s", what, strerror(errno));
    }
    /* no name reaches it: QEMU opens it by provium's descriptor */
    unlink(tmp);
    return r;
}

static uint64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int dk_qcow2_alone(int fd)
{
    unsigned char h[80];
    int r = dk_pread_all(fd, h, sizeof(h), 0);
    if (r < 0)
        return r;
    if (memcmp(h, "QFI\xfb", 4))
        return -EINVAL;
    uint32_t version = (uint32_t)(be64(h + 4) >> 32);
    /* a backing file (its name may be relative to the image's directory),
     * or an external data file (incompatible feature bit 2): the image
     * alone is not the disk */
    if (be64(h + 8) || (version >= 3 && (be64(h + 72) & 4)))
        return -EXDEV;
    return 0;
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
