/* The agent's event loop and its {type, handler} table. One thread: quick
 * operations run inline, processes are multiplexed through poll(), so a
 * long-running command never stalls the others. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/signalfd.h>
#include <sys/utsname.h>

#include "agent.h"
#include "version.h"

/* Above this much unsent output, producers wait for the host to read. */
#define OUT_HIGH (4u << 20)

static int op_ping(struct agent *a, uint32_t id, struct pv_rd *r)
{
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    agent_send(a, PV_OK, id, NULL, 0);
    return 0;
}

static int op_poweroff(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint32_t how = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (!a->opts.allow_power)
        return -EPERM;
    sync();
    a->poweroff_pending = true;
    a->poweroff_how = how == PV_POWER_REBOOT ? RB_AUTOBOOT : RB_POWER_OFF;
    agent_send(a, PV_OK, id, NULL, 0);
    return 0;
}

int agent_button_fd = -1;

/* Ask the shim (main.c) to load the power button's modules and watch it; -1
 * (no shim watching: the profile's init is PID 1) leaves it to the init. */
static int op_power_button(struct agent *a, uint32_t id, struct pv_rd *r)
{
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (!a->opts.allow_power)
        return -EPERM;
    uint8_t state = PV_BUTTON_INIT;
    if (agent_button_fd >= 0) {
        struct pollfd p = {agent_button_fd, POLLIN, 0};
        if (send(agent_button_fd, "b", 1, MSG_NOSIGNAL) != 1 || poll(&p, 1, 10000) != 1 ||
            recv(agent_button_fd, &state, 1, 0) != 1)
            return -EIO;
    }
    agent_reply_u32(a, id, state);
    return 0;
}

static const struct {
    uint16_t type;
    agent_handler fn;
} handlers[] = {
    {PV_PING, op_ping},
    {PV_RUN, agent_op_run},
    {PV_READ_FILE, agent_op_read_file},
    {PV_WRITE_FILE, agent_op_write_file},
    {PV_STAT, agent_op_stat},
    {PV_POWEROFF, op_poweroff},
    {PV_CANCEL, agent_op_cancel},
    {PV_SYSCALL, agent_op_syscall},
    {PV_READ_MEM, agent_op_read_mem},
    {PV_WRITE_MEM, agent_op_write_mem},
    {PV_OPEN, agent_op_open},
    {PV_FREAD, agent_op_fread},
    {PV_FWRITE, agent_op_fwrite},
    {PV_SEEK, agent_op_seek},
    {PV_CLOSE, agent_op_close},
    {PV_LISTDIR, agent_op_listdir},
    {PV_MKDIR, agent_op_mkdir},
    {PV_UNLINK, agent_op_unlink},
    {PV_RENAME, agent_op_rename},
    {PV_CLOCK, agent_op_clock},
    {PV_SPAWN, agent_op_spawn},
    {PV_WAIT, agent_op_wait},
    {PV_SIGNAL, agent_op_signal},
    {PV_PROC_STATUS, agent_op_proc_status},
    {PV_STDIN, agent_op_stdin},
    {PV_PTY_RESIZE, agent_op_pty_resize},
    {PV_TAIL, agent_op_tail},
    {PV_WORKER, agent_op_worker},
    {PV_VIA, agent_op_via},
    {PV_WORKER_END, agent_op_worker_end},
    {PV_FRESHEN, agent_op_freshen},
    {PV_NET_CONFIG, agent_op_net_config},
    {PV_NET_ROUTE, agent_op_net_route},
    {PV_POWER_BUTTON, op_power_button},
    {PV_TEST_MISBEHAVE, agent_op_test_misbehave}, /* test only: hostile.c */
};

/* The output queue is shared with the syscall threads (sys.c), which send
 * their replies themselves rather than waking this loop to do it. */
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static struct agent *out_session; /* the session threads may send on */

static size_t out_pending(struct agent *a)
{
    pthread_mutex_lock(&out_lock);
    size_t n = a->out.len;
    pthread_mutex_unlock(&out_lock);
    return n;
}

bool agent_congested(struct agent *a)
{
    return out_pending(a) >= OUT_HIGH / 4;
}

static int flush_out(struct agent *a, bool block)
{
    while (a->out.len) {
        ssize_t n = write(a->fd, a->out.data, a->out.len);
        if (n > 0) {
            buf_consume(&a->out, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!block)
                return 0;
            struct pollfd p = {a->fd, POLLOUT, 0};
            if (poll(&p, 1, -1) < 0 && errno != EINTR)
                return -errno;
            if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
                return -EPIPE;
            continue;
        }
        return n < 0 ? -errno : -EPIPE;
    }
    return 0;
}

void agent_send(struct agent *a, uint16_t type, uint32_t id, const void *payload, size_t len)
{
    if (a->quit)
        return;
    pthread_mutex_lock(&out_lock);
    pv_frame(&a->out, type, id, payload, len);
    int r = flush_out(a, a->out.len > OUT_HIGH);
    pthread_mutex_unlock(&out_lock);
    if (r < 0)
        a->quit = true;
}

bool agent_send_from_thread(struct agent *a, uint32_t id, const struct buf *payload)
{
    pthread_mutex_lock(&out_lock);
    bool left = false;
    if (a == out_session) {
        pv_frame(&a->out, PV_OK, id, payload->data, payload->len);
        /* a broken transport: the loop finds out on its own */
        left = flush_out(a, false) == 0 && a->out.len > 0;
    }
    pthread_mutex_unlock(&out_lock);
    return left;
}

static int flush_locked(struct agent *a, bool block)
{
    pthread_mutex_lock(&out_lock);
    int r = flush_out(a, block);
    pthread_mutex_unlock(&out_lock);
    return r;
}

int agent_send_raw(struct agent *a, const void *p, size_t n, int64_t deadline_ms)
{
    int r = 0;
    pthread_mutex_lock(&out_lock);
    buf_add(&a->out, p, n);
    while (r == 0 && a->out.len) {
        if ((r = flush_out(a, false)) < 0 || !a->out.len)
            break;
        int left = (int)MAX(deadline_ms - now_ms(), 0);
        struct pollfd pf = {a->fd, POLLOUT, 0};
        if (left == 0 || (poll(&pf, 1, left) == 0))
            r = -ETIMEDOUT;
        else if (pf.revents & (POLLERR | POLLHUP | POLLNVAL))
            r = -EPIPE;
    }
    pthread_mutex_unlock(&out_lock);
    if (r < 0 && r != -ETIMEDOUT)
        a->quit = true;
    return r;
}

void agent_send_ok(struct agent *a, uint32_t id, const struct buf *payload)
{
    agent_send(a, PV_OK, id, payload ? payload->data : NULL, payload ? payload->len : 0);
}

void agent_send_err(struct agent *a, uint32_t id, int errnum, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, (uint32_t)errnum);
    pv_put_str(&w, msg);
    agent_send(a, PV_ERR, id, b.data, b.len);
    buf_release(&b);
}

void agent_reply_u32(struct agent *a, uint32_t id, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    agent_send(a, PV_OK, id, b, sizeof(b));
}

void agent_reply_u64(struct agent *a, uint32_t id, uint64_t v)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, v);
    agent_send_ok(a, id, &b);
    buf_release(&b);
}

void agent_reply_bytes(struct agent *a, uint32_t id, const void *p, size_t n)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_bytes(&w, p, n);
    agent_send_ok(a, id, &b);
    buf_release(&b);
}

void agent_send_chunk(struct agent *a, uint32_t id, uint8_t stream, const void *p, size_t n)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u8(&w, stream);
    pv_put_bytes(&w, p, n);
    agent_send(a, PV_EV_CHUNK, id, b.data, b.len);
    buf_release(&b);
}

static void hello(struct agent *a, const struct pv_hdr *h, struct pv_rd *r)
{
    uint32_t want = pv_get_u32(r);
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    if (h->version != PV_PROTO_VERSION || want != PV_PROTO_VERSION || pv_rd_done(r) < 0) {
        pv_put_u32(&w, PV_PROTO_VERSION);
        pv_put_str(&w, "agent speaks protocol version " PV_STR(PV_PROTO_VERSION));
        /* Answer with a header the peer can read whatever its version. */
        agent_send(a, PV_HELLO_ERR, h->id, b.data, b.len);
        buf_release(&b);
        return;
    }
    struct utsname u;
    uname(&u);
    pv_put_u32(&w, PV_PROTO_VERSION);
    pv_put_str(&w, PV_VERSION);
    pv_put_str(&w, "linux");
    pv_put_str(&w, u.release);
    pv_put_u64(&w, PV_FEAT_RUN | PV_FEAT_FILES | PV_FEAT_SYSCALL |
                       (a->opts.follow_kmsg ? PV_FEAT_KMSG : 0));
    pv_put_u32(&w, (uint32_t)getpid());
    agent_send(a, PV_HELLO_OK, h->id, b.data, b.len);
    buf_release(&b);
    a->hello_done = true;
    /* Every record from the start of the ring, then new ones as they come:
     * splats are visible whatever the console log level. */
    if (a->opts.follow_kmsg && a->kmsg < 0)
        a->kmsg = open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
}

/* Forward what /dev/kmsg has now, one record per read, batched into
 * events of up to 64 KiB. */
static void pump_kmsg(struct agent *a)
{
    struct buf batch = BUF_INIT;
    char rec[8192];
    for (;;) {
        ssize_t n = read(a->kmsg, rec, sizeof(rec));
        if (n < 0 && errno == EPIPE)
            continue; /* records were overwritten before we read them */
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        buf_add(&batch, rec, (size_t)n);
        if (batch.len > 65536) {
            agent_send(a, PV_EV_KMSG, 0, batch.data, batch.len);
            buf_consume(&batch, batch.len);
        }
    }
    if (batch.len)
        agent_send(a, PV_EV_KMSG, 0, batch.data, batch.len);
    buf_release(&batch);
}

static void dispatch(struct agent *a, const struct pv_hdr *h, const uint8_t *payload)
{
    struct pv_rd r;
    pv_rd_init(&r, payload, h->len);
    if (h->type == PV_HELLO) {
        hello(a, h, &r);
        return;
    }
    if (!a->hello_done)
        return; /* pre-handshake noise: ignore */
    for (size_t i = 0; i < ARRAY_SIZE(handlers); i++) {
        if (handlers[i].type != h->type)
            continue;
        int ret = handlers[i].fn(a, h->id, &r);
        if (ret == -EBADMSG)
            agent_send_err(a, h->id, EBADMSG, "malformed %s request: %s", pv_type_name(h->type),
                           r.why ? r.why : "bad fields");
        else if (ret < 0)
            agent_send_err(a, h->id, -ret, "%s", strerror(-ret));
        return;
    }
    agent_send_err(a, h->id, ENOSYS, "unknown request type %u", h->type);
}

/* Decode every whole frame in a->in. Returns -EBADMSG on a corrupt stream. */
static int consume_input(struct agent *a)
{
    for (;;) {
        if (!a->hello_done) {
            size_t skip = pv_sync_scan((const uint8_t *)a->in.data, a->in.len);
            buf_consume(&a->in, skip);
        }
        if (a->in.len < PV_HDR_SIZE)
            return 0;
        struct pv_hdr h;
        const char *why;
        int bad = pv_hdr_decode((const uint8_t *)a->in.data, &h, &why);
        if (!a->hello_done && (bad < 0 || h.type != PV_HELLO || h.len > 64)) {
            /* before the handshake only a Hello counts; skip noise bytewise */
            buf_consume(&a->in, 1);
            continue;
        }
        if (bad < 0)
            return -EBADMSG;
        if (a->in.len - PV_HDR_SIZE < h.len)
            return 0;
        dispatch(a, &h, (const uint8_t *)a->in.data + PV_HDR_SIZE);
        buf_consume(&a->in, PV_HDR_SIZE + h.len);
        if (a->quit)
            return 0;
    }
}

/* Read from the host and serve what is whole: 1 to go on, 0 at the end of
 * the session, -errno when it broke. */
static int read_input(struct agent *a)
{
    ssize_t r = buf_read(&a->in, a->fd);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return 1;
    if (a->opts.resync && ((r < 0 && errno == EIO) || r == 0)) {
        /* virtio-serial: the host side is not connected (yet, or again) */
        poll(NULL, 0, 20);
        return 1;
    }
    if (r <= 0)
        return r < 0 ? -errno : 0;
    if (consume_input(a) < 0) {
        if (!a->opts.resync)
            return -EBADMSG;
        a->hello_done = false;
        buf_consume(&a->in, a->in.len);
    }
    return 1;
}

int agent_serve(int fd, const struct agent_opts *opts)
{
    struct agent a = {.fd = fd, .opts = *opts, .sigfd = -1, .kmsg = -1, .hello_done = opts->worker};
    int ret = 0;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    a.sigfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (a.sigfd < 0)
        return -errno;
    pthread_mutex_lock(&out_lock);
    out_session = &a;
    pthread_mutex_unlock(&out_lock);

    while (!a.quit) {
        struct pollfd fds[256];
        int64_t deadline = 0;
        size_t pending = out_pending(&a);
        fds[0] = (struct pollfd){fd, POLLIN | (pending ? POLLOUT : 0), 0};
        fds[1] = (struct pollfd){a.sigfd, POLLIN, 0};
        fds[2] = (struct pollfd){pending < OUT_HIGH ? a.kmsg : -1, POLLIN, 0};
        fds[3] = (struct pollfd){sys_pollfd(), POLLIN, 0};
        int n = 4, nproc = 0, nstream = 0, nworker = 0;
        if (pending < OUT_HIGH) {
            nproc = proc_pollfds(&a, fds + n, (int)ARRAY_SIZE(fds) - n, &deadline);
            n += nproc;
            nstream = stream_pollfds(&a, fds + n, (int)ARRAY_SIZE(fds) - n, &deadline);
            n += nstream;
            nworker = worker_pollfds(&a, fds + n, (int)ARRAY_SIZE(fds) - n, &deadline);
            n += nworker;
        }
        net_deadline(&a, &deadline);
        int timeout = -1;
        if (deadline) {
            int64_t left = deadline - now_ms();
            timeout = left < 0 ? 0 : (int)MIN(left, 1000000);
        }
        if (poll(fds, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            ret = -errno;
            break;
        }
        if (fds[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(a.sigfd, &si, sizeof(si)) > 0)
                ;
            proc_reap(&a);
        }
        if (fds[2].revents & POLLIN)
            pump_kmsg(&a);
        if (fds[3].revents & POLLIN)
            sys_completions(&a);
        proc_events(&a, fds + 4, nproc);
        proc_timeouts(&a);
        stream_events(&a, fds + 4 + nproc, nstream);
        worker_events(&a, fds + 4 + nproc + nstream, nworker);
        net_checks(&a);
        if (fds[0].revents & POLLOUT && flush_locked(&a, false) < 0)
            break;
        int r = fds[0].revents & (POLLIN | POLLHUP | POLLERR) ? read_input(&a) : 1;
        if (r <= 0) {
            ret = r;
            break;
        }
        if (a.poweroff_pending) {
            flush_locked(&a, true);
            worker_kill_all(&a);
            proc_kill_all(&a);
            sync();
            reboot(a.poweroff_how);
            a.poweroff_pending = false;
        }
    }
    pthread_mutex_lock(&out_lock);
    out_session = NULL;
    pthread_mutex_unlock(&out_lock);
    worker_kill_all(&a);
    proc_kill_all(&a);
    stream_close_all(&a);
    net_forget_all(&a);
    if (a.kmsg >= 0)
        close(a.kmsg);
    close(a.sigfd);
    buf_release(&a.in);
    buf_release(&a.out);
    return ret;
}
