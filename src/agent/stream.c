/* PV_TAIL: bytes of a file, a descriptor or a process's output, sent as
 * PV_DATA chunks as they appear, until the source ends (PV_OK) or the host
 * cancels the request. A regular file has no end: it is followed, checked
 * every TAIL_POLL_MS, and read from the start again if it shrinks (as
 * `tail -F` does). Pipes, sockets and devices are read when poll() says so
 * and end at their EOF. The agent's own fd is never read directly: a tail
 * has a duplicate, so it survives a close of the handle and never moves a
 * regular file's offset (pread). */
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

#include "agent.h"

#define TAIL_POLL_MS 50
#define TAIL_READ (64u << 10)

struct tail {
    struct tail *next;
    uint32_t id;
    int fd;       /* -1 for a process stream */
    bool regular; /* followed with pread from pos, every TAIL_POLL_MS */
    uint64_t pos;
    int64_t next_ms;
    uint64_t handle; /* process streams: the process, and which of its pipes */
    int which;
};

static void tail_free(struct agent *a, uint32_t id, bool ok)
{
    for (struct tail **pp = &a->tails; *pp; pp = &(*pp)->next) {
        struct tail *t = *pp;
        if (t->id != id)
            continue;
        *pp = t->next;
        if (ok)
            agent_send_ok(a, t->id, NULL);
        if (t->fd >= 0)
            close(t->fd);
        free(t);
        return;
    }
}

void stream_cancel(struct agent *a, uint32_t id)
{
    tail_free(a, id, false);
}

static void add(struct agent *a, struct tail *t)
{
    t->next = a->tails;
    a->tails = t;
}

int agent_op_tail(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint32_t kind = pv_get_u32(r);
    struct tail t = {.id = id, .fd = -1};
    if (kind == PV_TAIL_PROC) {
        t.handle = pv_get_u64(r);
        t.which = (int)pv_get_u32(r);
        if (pv_rd_done(r) < 0)
            return -EBADMSG;
        const struct buf *backlog;
        bool open;
        if (!proc_backlog(a, t.handle, t.which, &backlog, &open))
            return -ESRCH;
        for (size_t off = 0; off < backlog->len; off += PV_CHUNK)
            agent_send_chunk(a, id, PV_DATA, backlog->data + off,
                             MIN((size_t)PV_CHUNK, backlog->len - off));
        if (!open) {
            agent_send_ok(a, id, NULL);
            return 0;
        }
        add(a, xmemdup(&t, sizeof(t)));
        return 0;
    }
    int64_t offset = 0;
    uint32_t from_end = 0;
    if (kind == PV_TAIL_PATH) {
        const char *path = pv_get_str(r);
        offset = pv_get_i64(r);
        from_end = pv_get_u32(r);
        if (pv_rd_done(r) < 0)
            return -EBADMSG;
        t.fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    } else if (kind == PV_TAIL_FD) {
        uint64_t fd = pv_get_u64(r);
        if (pv_rd_done(r) < 0)
            return -EBADMSG;
        if (fd > INT32_MAX)
            return -EBADF;
        t.fd = fcntl((int)fd, F_DUPFD_CLOEXEC, 3);
        if (t.fd >= 0)
            offset = lseek((int)fd, 0, SEEK_CUR);
    } else {
        return -EINVAL;
    }
    if (t.fd < 0)
        return -errno;
    struct stat st;
    if (fstat(t.fd, &st) < 0) {
        int e = errno;
        close(t.fd);
        return -e;
    }
    t.regular = S_ISREG(st.st_mode);
    t.next_ms = now_ms(); /* first read at once (0 would mean "no deadline") */
    if (t.regular) {
        if (from_end)
            offset = offset < -st.st_size ? 0 : st.st_size + offset;
        t.pos = offset < 0 ? 0 : (uint64_t)offset;
    }
    add(a, xmemdup(&t, sizeof(t)));
    return 0;
}

void stream_proc_data(struct agent *a, uint64_t handle, int which, const void *p, size_t n)
{
    for (struct tail *t = a->tails; t; t = t->next)
        if (t->fd < 0 && t->handle == handle && t->which == which)
            agent_send_chunk(a, t->id, PV_DATA, p, n);
}

void stream_proc_end(struct agent *a, uint64_t handle, int which)
{
    for (struct tail *t = a->tails, *next; t; t = next) {
        next = t->next;
        if (t->fd < 0 && t->handle == handle && t->which == which)
            tail_free(a, t->id, true);
    }
}

int stream_pollfds(struct agent *a, struct pollfd *fds, int max, int64_t *deadline_ms)
{
    int n = 0;
    for (struct tail *t = a->tails; t; t = t->next) {
        if (t->fd < 0)
            continue;
        if (!t->regular && n < max)
            fds[n++] = (struct pollfd){t->fd, POLLIN, 0};
        else if (t->regular && (!*deadline_ms || t->next_ms < *deadline_ms))
            *deadline_ms = t->next_ms;
    }
    return n;
}

/* Read what one tail has now. Returns false when the source ended. */
static bool tail_read(struct agent *a, struct tail *t)
{
    char chunk[TAIL_READ];
    if (t->regular) {
        struct stat st;
        if (fstat(t->fd, &st) == 0 && (uint64_t)st.st_size < t->pos)
            t->pos = 0; /* truncated: start again */
        t->next_ms = now_ms() + TAIL_POLL_MS;
        ssize_t n;
        /* catch up, as far as the host keeps up */
        while ((n = pread(t->fd, chunk, sizeof(chunk), (off_t)t->pos)) > 0) {
            agent_send_chunk(a, t->id, PV_DATA, chunk, (size_t)n);
            t->pos += (uint64_t)n;
            if (agent_congested(a))
                break;
        }
        return n >= 0 || errno == EINTR || errno == EAGAIN;
    }
    ssize_t n = read(t->fd, chunk, sizeof(chunk));
    if (n > 0)
        agent_send_chunk(a, t->id, PV_DATA, chunk, (size_t)n);
    return n > 0 || (n < 0 && (errno == EINTR || errno == EAGAIN));
}

void stream_events(struct agent *a, struct pollfd *fds, int n)
{
    int64_t now = now_ms();
    for (struct tail *t = a->tails, *next; t; t = next) {
        next = t->next;
        if (t->fd < 0)
            continue;
        bool ready = t->regular && now >= t->next_ms && !agent_congested(a);
        for (int k = 0; k < n && !ready; k++)
            ready = fds[k].fd == t->fd && fds[k].revents;
        if (ready && !tail_read(a, t))
            tail_free(a, t->id, true);
    }
}

void stream_close_all(struct agent *a)
{
    while (a->tails)
        tail_free(a, a->tails->id, false);
}
