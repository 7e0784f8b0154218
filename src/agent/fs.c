/* File operations: read (streamed in chunks), write (replace or append),
 * stat. Errors come back as -errno so the host shows `ENOENT: /nope`. */
#include <fcntl.h>
#include <sys/stat.h>

#include "agent.h"

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
    if (!S_ISREG(st.st_mode)) /* FIFOs and devices may block or never end */
        return -EINVAL;
    _cleanup_free_ char *chunk = xmalloc(PV_CHUNK);
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, PV_CHUNK);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;
        agent_send_chunk(a, id, PV_DATA, chunk, (size_t)n);
        total += (uint64_t)n;
    }
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, total);
    agent_send_ok(a, id, &b);
    buf_release(&b);
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
