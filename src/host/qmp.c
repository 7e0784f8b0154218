#include "qmp.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <stdio.h>

#define QMP_MAX_LINE (8u << 20)

void qmp_init(struct qmp *q, int fd, int watch_fd)
{
    *q = (struct qmp){.fd = fd, .watch_fd = watch_fd};
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

void qmp_clear_events(struct qmp *q)
{
    for (size_t i = 0; i < q->nevents; i++) {
        free(q->events[i].name);
        json_decref(q->events[i].data);
    }
    free(q->events);
    q->events = NULL;
    q->nevents = 0;
}

void qmp_release(struct qmp *q)
{
    if (q->fd >= 0)
        close(q->fd);
    q->fd = -1;
    buf_release(&q->in);
    qmp_clear_events(q);
}

/* Next JSON message (one per line), or NULL with *ret < 0 on error / 0 on
 * deadline. */
static json_t *next_msg(struct qmp *q, int64_t deadline_ns, int *ret, struct pv_err *err)
{
    for (;;) {
        char *nl = q->in.data ? memchr(q->in.data, '\n', q->in.len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - q->in.data) + 1;
            json_error_t je;
            json_t *j = json_loadb(q->in.data, n, 0, &je);
            buf_consume(&q->in, n);
            if (j)
                return j;
            continue;
        }
        if (q->in.len > QMP_MAX_LINE) {
            *ret = pv_err_set(err, EBADMSG, "QMP message too long");
            return NULL;
        }
        int64_t left = deadline_ns - now_ns();
        if (left <= 0) {
            *ret = 0;
            return NULL;
        }
        struct pollfd p[2] = {{q->fd, POLLIN, 0}, {q->watch_fd, POLLIN, 0}};
        int n = poll(p, q->watch_fd >= 0 ? 2 : 1, (int)MIN(left / 1000000 + 1, 3600000));
        if (n < 0 && errno != EINTR) {
            *ret = pv_err_set(err, errno, "poll: %s", strerror(errno));
            return NULL;
        }
        if (n <= 0)
            continue;
        if (p[0].revents) {
            buf_reserve(&q->in, 65536);
            ssize_t r = read(q->fd, q->in.data + q->in.len, q->in.cap - q->in.len - 1);
            if (r > 0) {
                q->in.len += (size_t)r;
                q->in.data[q->in.len] = 0;
                continue;
            }
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            *ret = pv_err_set(err, EPIPE, "QMP connection closed (QEMU exited)");
            return NULL;
        }
        if (q->watch_fd >= 0 && (p[1].revents & POLLIN)) {
            *ret = pv_err_set(err, EPIPE, "QEMU exited");
            return NULL;
        }
    }
}

static void queue_event(struct qmp *q, json_t *msg)
{
    json_t *ev = json_object_get(msg, "event");
    q->events = xrealloc(q->events, (q->nevents + 1) * sizeof(*q->events));
    q->events[q->nevents].name = xstrdup(json_string_value(ev) ? json_string_value(ev) : "");
    q->events[q->nevents].data = json_incref(json_object_get(msg, "data"));
    q->nevents++;
}

int qmp_negotiate(struct qmp *q, int64_t deadline_ns, struct pv_err *err)
{
    int ret = 0;
    json_t *greet = next_msg(q, deadline_ns, &ret, err);
    if (!greet)
        return ret < 0 ? ret : pv_err_set(err, ETIMEDOUT, "no QMP greeting from QEMU");
    bool ok = json_object_get(greet, "QMP") != NULL;
    json_decref(greet);
    if (!ok)
        return pv_err_set(err, EBADMSG, "unexpected first QMP message");
    return qmp_exec(q, "qmp_capabilities", NULL, deadline_ns, NULL, err);
}

/* Send line; the first piece carries fd (SCM_RIGHTS) when fd >= 0. */
static int send_line(struct qmp *q, const struct buf *line, int fd)
{
    size_t off = 0;
    while (off < line->len) {
        ssize_t w;
        if (fd >= 0) {
            struct iovec iov = {line->data, line->len};
            union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
            } u = {0};
            struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                               .msg_controllen = sizeof(u.buf)};
            struct cmsghdr *c = CMSG_FIRSTHDR(&m);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int));
            memcpy(CMSG_DATA(c), &fd, sizeof(int));
            w = sendmsg(q->fd, &m, MSG_NOSIGNAL);
            if (w > 0)
                fd = -1;
        } else {
            w = write(q->fd, line->data + off, line->len - off);
        }
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd p = {q->fd, POLLOUT, 0};
            poll(&p, 1, 100);
        } else {
            return -EPIPE;
        }
    }
    return 0;
}

int qmp_exec(struct qmp *q, const char *cmd, json_t *args, int64_t deadline_ns, json_t **ret,
             struct pv_err *err)
{
    return qmp_exec_fd(q, cmd, args, -1, deadline_ns, ret, err);
}

int qmp_exec_fd(struct qmp *q, const char *cmd, json_t *args, int fd, int64_t deadline_ns,
                json_t **ret, struct pv_err *err)
{
    json_t *req = json_pack("{s:s}", "execute", cmd);
    if (args)
        json_object_set_new(req, "arguments", args);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    struct buf line = BUF_INIT;
    buf_adds(&line, text);
    buf_adds(&line, "\n");
    free(text);
    int r = send_line(q, &line, fd);
    buf_release(&line);
    if (r < 0)
        return pv_err_set(err, EPIPE, "QMP %s: connection closed", cmd);
    for (;;) {
        json_t *msg = next_msg(q, deadline_ns, &r, err);
        if (!msg)
            return r < 0 ? r : pv_err_set(err, ETIMEDOUT, "QMP %s timed out", cmd);
        if (json_object_get(msg, "event")) {
            queue_event(q, msg);
            json_decref(msg);
            continue;
        }
        json_t *e = json_object_get(msg, "error");
        if (e) {
            const char *desc = json_string_value(json_object_get(e, "desc"));
            r = pv_err_set(err, EIO, "QMP %s: %s", cmd, desc ? desc : "error");
            json_decref(msg);
            return r;
        }
        if (ret)
            *ret = json_incref(json_object_get(msg, "return"));
        json_decref(msg);
        return 0;
    }
}

int qmp_wait_event(struct qmp *q, const char *name, int64_t deadline_ns, struct pv_err *err)
{
    for (;;) {
        for (size_t i = 0; i < q->nevents; i++) {
            if (strcmp(q->events[i].name, name))
                continue;
            free(q->events[i].name);
            json_decref(q->events[i].data);
            memmove(&q->events[i], &q->events[i + 1], (q->nevents - i - 1) * sizeof(*q->events));
            q->nevents--;
            return 0;
        }
        int r = 0;
        json_t *msg = next_msg(q, deadline_ns, &r, err);
        if (!msg)
            return r < 0 ? r : pv_err_set(err, ETIMEDOUT, "no %s event from QEMU", name);
        if (json_object_get(msg, "event"))
            queue_event(q, msg);
        json_decref(msg);
    }
}

void qmp_poll_events(struct qmp *q)
{
    int r;
    json_t *msg;
    for (;;) { /* the fd is non-blocking: take what is there */
        buf_reserve(&q->in, 65536);
        ssize_t n = read(q->fd, q->in.data + q->in.len, q->in.cap - q->in.len - 1);
        if (n <= 0 || q->in.len > QMP_MAX_LINE)
            break;
        q->in.len += (size_t)n;
        q->in.data[q->in.len] = 0;
    }
    /* a deadline in the past: take what is buffered or readable now */
    while ((msg = next_msg(q, now_ns() - 1, &r, NULL))) {
        if (json_object_get(msg, "event"))
            queue_event(q, msg);
        json_decref(msg);
    }
}

bool qmp_port_closed(struct qmp *q, const char *id)
{
    qmp_poll_events(q);
    for (size_t i = 0; i < q->nevents; i++) {
        json_t *d = q->events[i].data;
        if (strcmp(q->events[i].name, "VSERPORT_CHANGE") ||
            !json_is_false(json_object_get(d, "open")) ||
            strcmp(json_string_value(json_object_get(d, "id")) ?: "", id))
            continue;
        qmp_clear_events(q);
        return true;
    }
    return false;
}
