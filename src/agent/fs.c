/* File operations: read (streamed in chunks), write (replace or append),
 * stat. Errors come back as -errno so the host shows `ENOENT: /nope`. */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "agent.h"

#define SPECIAL_CAP (64ull << 20)

int agent_op_read_file(struct agent *a, uint32_t id, struct pv_rd *r)
{
    const char *path = pv_get_str(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    /* O_NONBLOCK: opening a FIFO must not wedge the agent */
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    /* FIFOs and devices are read without blocking, up to what they have
     * now, and no further than a cap (/dev/zero never ends) */
    bool special = !S_ISREG(st.st_mode);
    if (!special)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    _cleanup_free_ char *chunk = xmalloc(PV_CHUNK);
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, PV_CHUNK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (special && errno == EAGAIN && total)
                break;
            return -errno;
        }
        if (n == 0)
            break;
        if (special && total + (uint64_t)n > SPECIAL_CAP)
            return -EFBIG;
        agent_send_chunk(a, id, PV_DATA, chunk, (size_t)n);
        total += (uint64_t)n;
    }
    agent_reply_u64(a, id, total);
    return 0;
}

int agent_op_write_file(struct agent *a, uint32_t id, struct pv_rd *r)
{
    const char *path = pv_get_str(r);
    uint32_t mode = pv_get_u32(r);
    uint32_t flags = pv_get_u32(r);
    size_t len;
    const void *data = pv_get_bytes(r, &len);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    int oflags = O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
    if (flags & PV_WR_CREATE)
        oflags |= O_CREAT;
    if (flags & PV_WR_TRUNC)
        oflags |= O_TRUNC;
    if (flags & PV_WR_APPEND)
        oflags |= O_APPEND;
    mode_t create_mode = flags & PV_WR_MODE ? (mode_t)(mode & 07777) : 0644;
    _cleanup_close_ int fd = open(path, oflags, create_mode);
    if (fd < 0)
        return -errno;
    int ret = write_all(fd, data, len);
    if (ret < 0)
        return ret;
    /* open() applies the umask and keeps an existing file's mode; an
     * explicit mode means exactly that mode. */
    if ((flags & PV_WR_MODE) && fchmod(fd, (mode_t)(mode & 07777)) < 0)
        return -errno;
    if (close(steal_fd(&fd)) < 0)
        return -errno;
    agent_send_ok(a, id, NULL);
    return 0;
}

static uint32_t ftype(mode_t m)
{
    switch (m & S_IFMT) {
    case S_IFREG: return PV_FT_FILE;
    case S_IFDIR: return PV_FT_DIR;
    case S_IFLNK: return PV_FT_SYMLINK;
    case S_IFIFO: return PV_FT_FIFO;
    case S_IFSOCK: return PV_FT_SOCKET;
    case S_IFBLK: return PV_FT_BLOCK;
    case S_IFCHR: return PV_FT_CHAR;
    default: return PV_FT_OTHER;
    }
}

int agent_op_stat(struct agent *a, uint32_t id, struct pv_rd *r)
{
    const char *path = pv_get_str(r);
    uint32_t flags = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    struct stat st;
    if ((flags & PV_STAT_NOFOLLOW ? lstat(path, &st) : stat(path, &st)) < 0)
        return -errno;
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, ftype(st.st_mode));
    pv_put_u32(&w, st.st_mode & 07777);
    pv_put_u64(&w, (uint64_t)st.st_size);
    pv_put_i64(&w, (int64_t)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec);
    pv_put_u32(&w, st.st_uid);
    pv_put_u32(&w, st.st_gid);
    pv_put_u64(&w, (uint64_t)st.st_ino);
    pv_put_u32(&w, (uint32_t)st.st_nlink);
    agent_send_ok(a, id, &b);
    buf_release(&b);
    return 0;
}

/* File handles: the guest fds PV_OPEN made. Only those can be read, written
 * or closed through handles, so a test cannot close the agent's transport. */
static uint8_t handles[4096 / 8];

static bool is_handle(uint64_t h)
{
    return h < 4096 && (handles[h / 8] & (1u << (h % 8)));
}

static void set_handle(int fd, bool on)
{
    if (on)
        handles[fd / 8] |= (uint8_t)(1u << (fd % 8));
    else
        handles[fd / 8] &= (uint8_t) ~(1u << (fd % 8));
}

int agent_op_open(struct agent *a, uint32_t id, struct pv_rd *r)
{
    const char *path = pv_get_str(r);
    uint32_t mode = pv_get_u32(r), perm = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    bool rd = mode & PV_OPEN_READ, wr = mode & (PV_OPEN_WRITE | PV_OPEN_APPEND);
    if (!rd && !wr)
        return -EINVAL;
    int flags = O_CLOEXEC | O_NOCTTY | O_NONBLOCK | (rd && wr ? O_RDWR : wr ? O_WRONLY : O_RDONLY);
    if (mode & PV_OPEN_CREATE)
        flags |= O_CREAT;
    if (mode & PV_OPEN_TRUNCATE)
        flags |= O_TRUNC;
    if (mode & PV_OPEN_APPEND)
        flags |= O_APPEND;
    if (mode & PV_OPEN_EXCLUSIVE)
        flags |= O_EXCL;
    int fd = open(path, flags, (mode_t)(perm & 07777));
    if (fd < 0)
        return -errno;
    if (fd >= 4096) {
        close(fd);
        return -EMFILE;
    }
    /* O_NONBLOCK only so a FIFO's open cannot wedge the agent; regular
     * files behave the same either way, others stay non-blocking */
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    set_handle(fd, true);
    agent_reply_u64(a, id, (uint64_t)fd);
    return 0;
}

int agent_op_fread(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint64_t h = pv_get_u64(r);
    uint32_t max = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (!is_handle(h))
        return -EBADF;
    max = MIN(max, PV_CHUNK * 4);
    _cleanup_free_ char *data = xmalloc(max ? max : 1);
    ssize_t n;
    do
        n = read((int)h, data, max);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    agent_reply_bytes(a, id, data, (size_t)n);
    return 0;
}

int agent_op_fwrite(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint64_t h = pv_get_u64(r);
    size_t len;
    const void *data = pv_get_bytes(r, &len);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (!is_handle(h))
        return -EBADF;
    ssize_t n;
    do
        n = write((int)h, data, len);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    agent_reply_u32(a, id, (uint32_t)n);
    return 0;
}

int agent_op_seek(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint64_t h = pv_get_u64(r);
    int64_t off = pv_get_i64(r);
    uint32_t whence = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (!is_handle(h))
        return -EBADF;
    if (whence > PV_SEEK_END)
        return -EINVAL;
    static const int w[] = {
        [PV_SEEK_SET] = SEEK_SET, [PV_SEEK_CUR] = SEEK_CUR, [PV_SEEK_END] = SEEK_END};
    off_t pos = lseek((int)h, (off_t)off, w[whence]);
    if (pos < 0)
        return -errno;
    agent_reply_u64(a, id, (uint64_t)pos);
    return 0;
}

int agent_op_close(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint64_t h = pv_get_u64(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (!is_handle(h))
        return -EBADF;
    set_handle((int)h, false);
    if (close((int)h) < 0 && errno != EINTR)
        return -errno;
    agent_send_ok(a, id, NULL);
    return 0;
}

int agent_op_listdir(struct agent *a, uint32_t id, struct pv_rd *r)
{
    const char *path = pv_get_str(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    struct buf items = BUF_INIT;
    struct pv_wr w = {&items};
    uint32_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        struct stat st;
        uint32_t type = PV_FT_OTHER;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
            type = ftype(st.st_mode);
        pv_put_str(&w, e->d_name);
        pv_put_u32(&w, type);
        n++;
    }
    closedir(d);
    struct buf b = BUF_INIT;
    struct pv_wr wb = {&b};
    pv_put_u32(&wb, n);
    buf_add(&b, items.data, items.len);
    agent_send_ok(a, id, &b);
    buf_release(&b);
    buf_release(&items);
    return 0;
}

int agent_op_mkdir(struct agent *a, uint32_t id, struct pv_rd *r)
{
    const char *path = pv_get_str(r);
    uint32_t perm = pv_get_u32(r), flags = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    int ret = 0;
    if (flags & 1)
        ret = mkdir_p(path, (int)(perm & 07777));
    else if (mkdir(path, (mode_t)(perm & 07777)) < 0)
        ret = -errno;
    if (ret < 0)
        return ret;
    agent_send_ok(a, id, NULL);
    return 0;
}

int agent_op_unlink(struct agent *a, uint32_t id, struct pv_rd *r)
{
    const char *path = pv_get_str(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (unlink(path) < 0) {
        if (errno != EISDIR && errno != EPERM)
            return -errno;
        if (rmdir(path) < 0)
            return -errno;
    }
    agent_send_ok(a, id, NULL);
    return 0;
}

int agent_op_rename(struct agent *a, uint32_t id, struct pv_rd *r)
{
    const char *from = pv_get_str(r), *to = pv_get_str(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (rename(from, to) < 0)
        return -errno;
    agent_send_ok(a, id, NULL);
    return 0;
}
