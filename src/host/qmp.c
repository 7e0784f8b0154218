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

void qmp_msg_release(struct qmp_msg *m)
{
    json_decref(m->json);
    *m = (struct qmp_msg){0};
}

/* What kind of message j is, with the fields of that kind; false for an
 * object of no kind we know. */
static bool classify(json_t *j, struct qmp_msg *m)
{
    json_t *v;
    if (json_is_object(json_object_get(j, "QMP"))) {
        m->kind = QMP_GREETING;
    } else if ((v = json_object_get(j, "event"))) {
        m->kind = QMP_EVENT;
        m->event = json_string_value(v);
        m->data = json_object_get(j, "data");
        return m->event != NULL;
    } else if ((v = json_object_get(j, "return"))) {
        m->kind = QMP_RETURN;
        m->data = v;
    } else if (json_is_object(v = json_object_get(j, "error"))) {
        m->kind = QMP_ERROR;
        m->desc = json_string_value(json_object_get(v, "desc"));
    } else {
        return false;
    }
    json_t *id = json_object_get(j, "id");
    if (json_is_integer(id) && json_integer_value(id) >= 0) {
        m->has_id = true;
        m->id = (uint64_t)json_integer_value(id);
    }
    return true;
}

int qmp_parse(const char *p, size_t n, struct qmp_msg *ret)
{
    json_error_t je;
    *ret = (struct qmp_msg){.json = json_loadb(p, n, 0, &je)};
    if (!json_is_object(ret->json) || !classify(ret->json, ret)) {
        qmp_msg_release(ret);
        return -EBADMSG;
    }
    return 0;
}

static int poll_ms(int64_t left_ns)
{
    return (int)MIN(left_ns / 1000000 + 1, 3600000);
}

/* The next message (one per line; lines that are no QMP message are
 * skipped): 1 with *ret filled, 0 at the deadline, or -errno. */
static int next_msg(struct qmp *q, int64_t deadline_ns, struct qmp_msg *ret, struct pv_err *err)
{
    for (;;) {
        char *nl = q->in.data ? memchr(q->in.data, '\n', q->in.len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - q->in.data) + 1;
            int r = qmp_parse(q->in.data, n, ret);
            buf_consume(&q->in, n);
            if (r == 0)
                return 1;
            continue;
        }
        if (q->in.len > QMP_MAX_LINE)
            return pv_err_set(err, EBADMSG, "QMP message too long");
        int64_t left = deadline_ns - now_ns();
        if (left <= 0)
            return 0;
        struct pollfd p[2] = {{q->fd, POLLIN, 0}, {q->watch_fd, POLLIN, 0}};
        int n = poll(p, q->watch_fd >= 0 ? 2 : 1, poll_ms(left));
        if (n < 0 && errno != EINTR)
            return pv_err_set(err, errno, "poll: %s", strerror(errno));
        if (n <= 0)
            continue;
        if (p[0].revents) {
            ssize_t r = buf_read(&q->in, q->fd);
            if (r > 0)
                continue;
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            return pv_err_set(err, EPIPE, "QMP connection closed (QEMU exited)");
        }
        if (q->watch_fd >= 0 && (p[1].revents & POLLIN))
            return pv_err_set(err, EPIPE, "QEMU exited");
    }
}

static void queue_event(struct qmp *q, const struct qmp_msg *m)
{
    if (q->nevents == QMP_MAX_EVENTS) {
        free(q->events[0].name);
        json_decref(q->events[0].data);
        memmove(&q->events[0], &q->events[1], (q->nevents - 1) * sizeof(*q->events));
        q->nevents--;
    } else {
        q->events = xrealloc(q->events, (q->nevents + 1) * sizeof(*q->events));
    }
    q->events[q->nevents].name = xstrdup(m->event);
    q->events[q->nevents].data = json_incref(m->data);
    q->nevents++;
}

int qmp_negotiate(struct qmp *q, int64_t deadline_ns, struct pv_err *err)
{
    struct qmp_msg m;
    int r = next_msg(q, deadline_ns, &m, err);
    if (r <= 0)
        return r < 0 ? r : pv_err_set(err, ETIMEDOUT, "no QMP greeting from QEMU");
    bool ok = m.kind == QMP_GREETING;
    qmp_msg_release(&m);
    if (!ok)
        return pv_err_set(err, EBADMSG, "unexpected first QMP message");
    return qmp_exec(q, "qmp_capabilities", NULL, deadline_ns, NULL, err);
}

/* Send the line by the deadline; the first piece carries fd (SCM_RIGHTS)
 * when fd >= 0. QEMU reads its monitor whenever its main loop runs; one that
 * does not (stuck in a device model, stopped) must not hold the caller past
 * its deadline. */
static int send_line(struct qmp *q, const char *cmd, const struct buf *line, int fd,
                     int64_t deadline_ns, struct pv_err *err)
{
    size_t off = 0;
    while (off < line->len) {
        ssize_t w;
        if (fd >= 0) {
            struct iovec iov = {line->data + off, line->len - off};
            union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
            } u = {0};
            struct msghdr m = {.msg_iov = &iov,
                               .msg_iovlen = 1,
                               .msg_control = u.buf,
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
            w = send(q->fd, line->data + off, line->len - off, MSG_NOSIGNAL);
        }
        if (w > 0) {
            off += (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w == 0 || errno != EAGAIN)
            return pv_err_set(err, EPIPE, "QMP %s: connection closed", cmd);
        int64_t left = deadline_ns - now_ns();
        if (left <= 0 && off == 0)
            return pv_err_set(err, ETIMEDOUT, "QMP %s timed out: QEMU does not read its monitor",
                              cmd);
        if (left <= 0) {
            q->broken = true;
            return pv_err_set(err, ETIMEDOUT,
                              "QMP %s timed out: QEMU took %zu of its %zu bytes; the QMP stream "
                              "is broken",
                              cmd, off, line->len);
        }
        struct pollfd p[2] = {{q->fd, POLLOUT, 0}, {q->watch_fd, POLLIN, 0}};
        int n = poll(p, q->watch_fd >= 0 ? 2 : 1, poll_ms(left));
        if (n > 0 && q->watch_fd >= 0 && (p[1].revents & POLLIN))
            return pv_err_set(err, EPIPE, "QMP %s: QEMU exited", cmd);
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
    if (q->broken) {
        json_decref(args);
        return pv_err_set(err, EPIPE,
                          "QMP %s: not sent, the QMP stream is broken (a command before was cut "
                          "off at its deadline)",
                          cmd);
    }
    uint64_t id = ++q->last_id;
    json_t *req = json_pack("{s:s, s:I}", "execute", cmd, "id", (json_int_t)id);
    if (args)
        json_object_set_new(req, "arguments", args);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    struct buf line = BUF_INIT;
    buf_adds(&line, text);
    buf_adds(&line, "\n");
    free(text);
    int r = send_line(q, cmd, &line, fd, deadline_ns, err);
    buf_release(&line);
    if (r < 0)
        return r;
    for (;;) {
        struct qmp_msg m;
        r = next_msg(q, deadline_ns, &m, err);
        if (r <= 0)
            return r < 0 ? r : pv_err_set(err, ETIMEDOUT, "QMP %s timed out", cmd);
        if (m.kind == QMP_EVENT)
            queue_event(q, &m);
        /* anything else but our reply: the late one of a command that timed
         * out, or one without an id that answers nobody we know */
        if (m.kind == QMP_EVENT || m.kind == QMP_GREETING || !m.has_id || m.id != id) {
            qmp_msg_release(&m);
            continue;
        }
        r = 0;
        if (m.kind == QMP_ERROR)
            r = pv_err_set(err, EIO, "QMP %s: %s", cmd, m.desc ? m.desc : "error");
        else if (ret)
            *ret = json_incref(m.data);
        qmp_msg_release(&m);
        return r;
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
        struct qmp_msg m;
        int r = next_msg(q, deadline_ns, &m, err);
        if (r <= 0)
            return r < 0 ? r : pv_err_set(err, ETIMEDOUT, "no %s event from QEMU", name);
        if (m.kind == QMP_EVENT)
            queue_event(q, &m);
        qmp_msg_release(&m);
    }
}

void qmp_poll_events(struct qmp *q)
{
    for (;;) { /* the fd is non-blocking: take what is there */
        if (buf_read(&q->in, q->fd) <= 0 || q->in.len > QMP_MAX_LINE)
            break;
    }
    /* a deadline in the past: take what is buffered */
    struct qmp_msg m;
    while (next_msg(q, now_ns() - 1, &m, NULL) > 0) {
        if (m.kind == QMP_EVENT)
            queue_event(q, &m);
        qmp_msg_release(&m);
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
