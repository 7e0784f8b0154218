/* Captures: a classic pcap savefile written by the switch into a pipe whose
 * read end the caller holds. The switch never waits for the reader: a
 * record that finds the pipe full is dropped and counted, a record the pipe
 * took in part is finished before any other (the stream stays whole), and
 * a reader that closed its end ends the capture (docs/networks.md). */
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "net/switch_priv.h"

/* The file's header and each record's, in the host's byte order: the magic
 * tells a reader which it is. */
struct pcap_file_hdr {
    uint32_t magic;
    uint16_t major, minor;
    int32_t thiszone;
    uint32_t sigfigs, snaplen, linktype;
};
struct pcap_rec_hdr {
    uint32_t ts_sec, ts_usec, incl_len, orig_len;
};
#define PCAP_SNAPLEN 65535
#define PCAP_LINKTYPE_ETHERNET 1
/* The pipe's size asked for: about 700 full-size frames, or 12,000 small
 * ones, between two reads. */
#define PIPE_SIZE (1 << 20)

static struct sw_capture *capture_find(struct sw_state *s, int id)
{
    struct sw_capture *c;
    for (c = TAILQ_FIRST(&s->captures); c; c = TAILQ_NEXT(c, link))
        if (c->id == id)
            return c;
    return NULL;
}

static void capture_free(struct sw_state *s, struct sw_capture *c)
{
    if (c->fd >= 0) {
        epoll_ctl(s->loop.epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    } else {
        s->ended_captures--;
    }
    TAILQ_REMOVE(&s->captures, c, link);
    free(c->pend);
    free(c);
}

/* Its bridge or port is gone: the reader sees the end of the file, and can
 * still ask what was lost (up to SW_ENDED_CAPTURES such). */
static void capture_end(struct sw_state *s, struct sw_capture *c)
{
    epoll_ctl(s->loop.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    free(c->pend);
    c->pend = NULL;
    c->pend_len = c->pend_off = 0;
    s->ended_captures++;
}

/* The oldest ended captures beyond SW_ENDED_CAPTURES are forgotten. */
static void captures_trim(struct sw_state *s)
{
    struct sw_capture *c, *next;
    for (c = TAILQ_FIRST(&s->captures); c && s->ended_captures > SW_ENDED_CAPTURES; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->fd < 0)
            capture_free(s, c);
    }
}

/* The rest of a record the pipe took in part. false when the capture is
 * over (its reader left) and was freed. */
static bool capture_drain(struct sw_state *s, struct sw_capture *c)
{
    ssize_t n = write(c->fd, c->pend + c->pend_off, c->pend_len - c->pend_off);
    if (n < 0) {
        if (errno == EAGAIN)
            return true;
        capture_free(s, c);
        return false;
    }
    c->pend_off += (size_t)n;
    if (c->pend_off == c->pend_len) {
        free(c->pend);
        c->pend = NULL;
        c->pend_len = c->pend_off = 0;
        evloop_set(&s->loop, c->fd, 0, SW_EV(SW_EV_CAPTURE, c->id));
    }
    return true;
}

/* Keep what the pipe did not take of hdr + data, and wait for room. */
static void capture_keep(struct sw_state *s, struct sw_capture *c, const struct pcap_rec_hdr *h,
                         const unsigned char *data, size_t written)
{
    size_t total = sizeof(*h) + h->incl_len;
    c->pend = xmalloc(total);
    memcpy(c->pend, h, sizeof(*h));
    memcpy(c->pend + sizeof(*h), data, h->incl_len);
    c->pend_len = total;
    c->pend_off = written;
    evloop_set(&s->loop, c->fd, EPOLLOUT, SW_EV(SW_EV_CAPTURE, c->id));
}

static void capture_write(struct sw_state *s, struct sw_capture *c, int64_t ts,
                          const unsigned char *data, uint32_t len)
{
    if (c->pend) {
        if (!capture_drain(s, c))
            return;
        if (c->pend) {
            c->lost++;
            return;
        }
    }
    struct pcap_rec_hdr h = {
        .ts_sec = (uint32_t)(ts / 1000000000),
        .ts_usec = (uint32_t)(ts % 1000000000 / 1000),
        .incl_len = MIN(len, PCAP_SNAPLEN),
        .orig_len = len,
    };
    struct iovec iov[2] = {{&h, sizeof(h)}, {(void *)data, h.incl_len}};
    ssize_t n = writev(c->fd, iov, 2);
    if (n < 0) {
        if (errno == EAGAIN)
            c->lost++;
        else
            capture_free(s, c); /* EPIPE: the reader left */
        return;
    }
    if ((size_t)n < sizeof(h) + h.incl_len)
        capture_keep(s, c, &h, data, (size_t)n);
}

void sw_capture_frame(struct sw_state *s, struct sw_port *p, enum sw_cap_dir dir, const void *data,
                      uint32_t len)
{
    int64_t ts = 0;
    struct sw_capture *c, *next;
    for (c = TAILQ_FIRST(&s->captures); c; c = next) {
        next = TAILQ_NEXT(c, link); /* c may be freed */
        if (c->fd < 0)
            continue;
        if (c->port != p->id && !(dir == SW_CAP_IN && c->port < 0 && c->bridge == p->br->id))
            continue;
        if (!ts)
            ts = wall_ns();
        capture_write(s, c, ts, data, len);
    }
}

void sw_capture_event(struct sw_state *s, int id, uint32_t events)
{
    struct sw_capture *c = capture_find(s, id);
    if (!c || c->fd < 0)
        return;
    if (events & EPOLLERR)
        capture_free(s, c); /* the reader closed its end */
    else if ((events & EPOLLOUT) && c->pend)
        capture_drain(s, c);
}

void sw_captures_end(struct sw_state *s, int bridge, int port)
{
    struct sw_capture *c;
    for (c = TAILQ_FIRST(&s->captures); c; c = TAILQ_NEXT(c, link))
        if (c->fd >= 0 && (port >= 0 ? c->port == port : c->bridge == bridge))
            capture_end(s, c);
    captures_trim(s);
}

void sw_captures_close_all(struct sw_state *s)
{
    struct sw_capture *c;
    while ((c = TAILQ_FIRST(&s->captures)))
        capture_free(s, c);
}

/* A pipe whose write end is non-blocking, with the file's header in it. */
static int capture_pipe(int fds[2], ino_t *ret_ino)
{
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
        return -errno;
    /* Over the user's pipe-size limits this fails: 64 KiB will do. */
    fcntl(fds[1], F_SETPIPE_SZ, PIPE_SIZE);
    struct pcap_file_hdr h = {
        .magic = 0xa1b2c3d4,
        .major = 2,
        .minor = 4,
        .snaplen = PCAP_SNAPLEN,
        .linktype = PCAP_LINKTYPE_ETHERNET,
    };
    struct stat st;
    int r = 0;
    /* An empty pipe takes the 24 bytes whole. */
    if (write(fds[1], &h, sizeof(h)) < 0 || fstat(fds[0], &st) < 0)
        r = -errno;
    if (r < 0) {
        close(fds[0]);
        close(fds[1]);
        return r;
    }
    *ret_ino = st.st_ino;
    return 0;
}

/* Captures ended whose pipe had the inode a new one gets: their reader has
 * closed, or the number could not have come back. */
static void forget_ino(struct sw_state *s, ino_t ino)
{
    struct sw_capture *c, *next;
    for (c = TAILQ_FIRST(&s->captures); c; c = next) {
        next = TAILQ_NEXT(c, link);
        if (c->fd < 0 && c->ino == ino)
            capture_free(s, c);
    }
}

int switch_capture(int bridge, int port, struct pv_err *err)
{
    struct sw_state *s = sw_lock();
    if (!s)
        return pv_err_set(err, ENOENT, "capture: no bridge %d", bridge);
    int r, fds[2];
    struct sw_bridge *b = sw_bridge_find(s, bridge);
    struct sw_port *p = port >= 0 ? sw_port_find(s, port) : NULL;
    if (!b || (port >= 0 && (!p || p->br != b))) {
        r = pv_err_set(err, ENOENT, "capture: no %s %d", b ? "port" : "bridge", b ? port : bridge);
        goto out;
    }
    ino_t ino = 0;
    if ((r = capture_pipe(fds, &ino)) < 0) {
        pv_err_set(err, -r, "bridge %s: a capture's pipe: %s", b->name, strerror(-r));
        goto out;
    }
    forget_ino(s, ino);
    struct sw_capture *c = xcalloc(1, sizeof(*c));
    c->id = sw_handle_new();
    c->fd = fds[1];
    c->ino = ino;
    c->bridge = bridge;
    c->port = port >= 0 ? port : -1;
    /* No events asked: EPOLLERR alone says the reader closed its end. */
    evloop_set(&s->loop, c->fd, 0, SW_EV(SW_EV_CAPTURE, c->id));
    TAILQ_INSERT_TAIL(&s->captures, c, link);
    r = fds[0];
out:
    sw_unlock(s);
    return r;
}

uint64_t switch_capture_lost(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return 0;
    struct sw_state *s = sw_lock();
    if (!s)
        return 0;
    uint64_t lost = 0;
    struct sw_capture *c;
    for (c = TAILQ_FIRST(&s->captures); c; c = TAILQ_NEXT(c, link))
        if (c->ino == st.st_ino)
            lost = c->lost;
    sw_unlock(s);
    return lost;
}
