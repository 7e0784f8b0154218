/* The QMP client against a fake QEMU on the other end of a socketpair: a
 * thread that reads commands and answers them the way QEMU does (echoing
 * the command's id when it has one). QEMU itself cannot be made to answer
 * late or stop reading on cue, hence the fake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "qmp.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>

#define MS 1000000LL

/* A line from fd, without its '\n' (blocking): NULL at EOF. */
static char *read_line(int fd)
{
    struct buf b = BUF_INIT;
    char c;
    while (read(fd, &c, 1) == 1) {
        if (c == '\n')
            return buf_steal(&b);
        buf_add(&b, &c, 1);
    }
    buf_release(&b);
    return NULL;
}

static void send_text(int fd, const char *s)
{
    assert_int_equal(write_all(fd, s, strlen(s)), 0);
}

/* The reply QEMU would give command `line`: {"return": {"n": n}} with the
 * command's id, if it had one. */
static void reply(int fd, const char *line, int n)
{
    json_error_t je;
    json_t *cmd = json_loads(line, 0, &je);
    assert_non_null(cmd);
    json_t *r = json_pack("{s:{s:i}}", "return", "n", n);
    json_t *id = json_object_get(cmd, "id");
    if (id)
        json_object_set(r, "id", id);
    char *text = json_dumps(r, JSON_COMPACT);
    send_text(fd, text);
    send_text(fd, "\r\n");
    free(text);
    json_decref(r);
    json_decref(cmd);
}

struct late_server {
    int fd;
    int64_t delay_ns;
};

/* Answers the first command only after delay_ns (and after the second
 * command came), then the second: the first reply arrives while the client
 * waits for the second. */
static void *late_server(void *arg)
{
    struct late_server *s = arg;
    send_text(s->fd, "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n");
    char *caps = read_line(s->fd);
    reply(s->fd, caps, 0);
    char *first = read_line(s->fd);
    struct timespec ts = {0, (long)s->delay_ns};
    nanosleep(&ts, NULL);
    char *second = read_line(s->fd);
    send_text(s->fd, "{\"event\": \"RESUME\", \"timestamp\": {}}\r\n");
    reply(s->fd, first, 1);
    send_text(s->fd, "{\"return\": {\"n\": 99}}\r\n"); /* no id: answers nobody */
    reply(s->fd, second, 2);
    free(caps);
    free(first);
    free(second);
    return NULL;
}

static int returned_n(json_t *ret)
{
    return (int)json_integer_value(json_object_get(ret, "n"));
}

/* After a command timed out, its late reply must not answer the next one. */
static void test_qmp_late_reply_is_not_the_next_ones(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct late_server srv = {sv[1], 300 * MS};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, late_server, &srv), 0);
    struct qmp q;
    struct pv_err err = {0};
    qmp_init(&q, sv[0], -1);
    assert_int_equal(qmp_negotiate(&q, now_ns() + 5000 * MS, &err), 0);

    json_t *ret = NULL;
    int r = qmp_exec(&q, "query-status", NULL, now_ns() + 100 * MS, &ret, &err);
    assert_int_equal(r, -ETIMEDOUT);
    assert_non_null(strstr(err.msg, "QMP query-status timed out"));
    r = qmp_exec(&q, "query-name", NULL, now_ns() + 5000 * MS, &ret, &err);
    assert_int_equal(r, 0);
    assert_int_equal(returned_n(ret), 2);
    json_decref(ret);
    /* the event that came meanwhile is kept */
    assert_int_equal(qmp_wait_event(&q, "RESUME", now_ns(), &err), 0);

    pthread_join(th, NULL);
    qmp_release(&q);
    close(sv[1]);
}

static void *silent_server(void *arg)
{
    int fd = *(int *)arg;
    send_text(fd, "{\"QMP\": {}}\n");
    char *caps = read_line(fd);
    reply(fd, caps, 0);
    free(caps);
    return NULL; /* and never reads again */
}

/* A QMP client q on sv[0], negotiated with silent_server on sv[1], which
 * then reads nothing more. */
static void connect_silent(struct qmp *q, int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, silent_server, &sv[1]), 0);
    struct pv_err err = {0};
    qmp_init(q, sv[0], -1);
    assert_int_equal(qmp_negotiate(q, now_ns() + 5000 * MS, &err), 0);
    pthread_join(th, NULL);
}

/* A command that the socket does not take by the deadline ends there, and
 * the stream, now cut mid-line, takes no more commands. */
static void test_qmp_full_socket_honours_the_deadline(void **state)
{
    alarm(30); /* before the fix, the send retried forever */
    int sv[2];
    struct qmp q;
    struct pv_err err = {0};
    connect_silent(&q, sv);

    size_t big = 8u << 20; /* far more than a socket buffer */
    char *s = xmalloc(big + 1);
    memset(s, 'x', big);
    s[big] = 0;
    int64_t t0 = now_ns();
    int r = qmp_exec(&q, "human-monitor-command", json_pack("{s:s}", "command-line", s),
                     now_ns() + 200 * MS, NULL, &err);
    free(s);
    assert_int_equal(r, -ETIMEDOUT);
    assert_true(now_ns() - t0 < 3000 * MS);
    assert_non_null(strstr(err.msg, "human-monitor-command"));
    r = qmp_exec(&q, "query-status", NULL, now_ns() + 5000 * MS, NULL, &err);
    assert_int_equal(r, -EPIPE);
    assert_non_null(strstr(err.msg, "cut off"));
    alarm(0);
    qmp_release(&q);
    close(sv[1]);
}

/* A socket that takes nothing at all: the command times out unsent, and the
 * next one may still go (the stream is whole). */
static void test_qmp_unsent_command_keeps_the_stream(void **state)
{
    alarm(30);
    int sv[2];
    struct qmp q;
    struct pv_err err = {0};
    connect_silent(&q, sv);
    /* fill the socket until it takes no more */
    char fill[4096] = {' '};
    memset(fill, ' ', sizeof(fill));
    while (send(sv[0], fill, sizeof(fill), MSG_DONTWAIT) > 0)
        ;
    int r = qmp_exec(&q, "stop", NULL, now_ns() + 100 * MS, NULL, &err);
    assert_int_equal(r, -ETIMEDOUT);
    assert_non_null(strstr(err.msg, "QMP stop"));
    assert_false(q.broken);
    alarm(0);
    qmp_release(&q);
    close(sv[1]);
}

/* A guest that makes QEMU emit events without end does not grow the queue
 * without end. */
static void test_qmp_event_queue_has_a_cap(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct qmp q;
    qmp_init(&q, sv[0], -1);
    struct buf evs = BUF_INIT;
    for (int i = 0; i < QMP_MAX_EVENTS + 500; i++)
        buf_addf(&evs, "{\"event\": \"RTC_CHANGE\", \"data\": {\"offset\": %d}}\n", i);
    buf_adds(&evs, "{\"event\": \"SHUTDOWN\"}\n");
    /* more than a socket buffer: read while writing */
    size_t off = 0;
    while (off < evs.len) {
        ssize_t n = send(sv[1], evs.data + off, evs.len - off, MSG_DONTWAIT);
        if (n > 0)
            off += (size_t)n;
        qmp_poll_events(&q);
        assert_true(q.nevents <= QMP_MAX_EVENTS);
    }
    qmp_poll_events(&q);
    assert_int_equal(q.nevents, QMP_MAX_EVENTS);
    struct pv_err err = {0};
    assert_int_equal(qmp_wait_event(&q, "SHUTDOWN", now_ns(), &err), 0);
    buf_release(&evs);
    qmp_release(&q);
    close(sv[1]);
}

/* Messages as the client reads them. */
static void test_qmp_parse(void **state)
{
    struct qmp_msg m;
    const char *ok = "{\"return\": {}, \"id\": 7}\r\n";
    assert_int_equal(qmp_parse(ok, strlen(ok), &m), 0);
    assert_int_equal(m.kind, QMP_RETURN);
    assert_true(m.has_id);
    assert_int_equal(m.id, 7);
    qmp_msg_release(&m);

    const char *e = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": 8}";
    assert_int_equal(qmp_parse(e, strlen(e), &m), 0);
    assert_int_equal(m.kind, QMP_ERROR);
    assert_int_equal(m.id, 8);
    assert_string_equal(m.desc, "no");
    qmp_msg_release(&m);

    const char *ev = "{\"event\": \"STOP\", \"data\": {\"x\": 1}}";
    assert_int_equal(qmp_parse(ev, strlen(ev), &m), 0);
    assert_int_equal(m.kind, QMP_EVENT);
    assert_string_equal(m.event, "STOP");
    qmp_msg_release(&m);

    const char *noid = "{\"return\": {}, \"id\": \"7\"}";
    assert_int_equal(qmp_parse(noid, strlen(noid), &m), 0);
    assert_false(m.has_id); /* ours are integers: a string id is nobody's */
    qmp_msg_release(&m);

    const char *bad[] = {"",
                         "[1]",
                         "{\"event\": 3}",
                         "{\"error\": 1}",
                         "{}",
                         "{\"x\"",
                         "{\"return\": {}, \"id\": -1}"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        int r = qmp_parse(bad[i], strlen(bad[i]), &m);
        if (i == ARRAY_SIZE(bad) - 1) {
            assert_int_equal(r, 0);
            assert_false(m.has_id);
            qmp_msg_release(&m);
            continue;
        }
        assert_int_equal(r, -EBADMSG);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qmp_late_reply_is_not_the_next_ones),
        cmocka_unit_test(test_qmp_full_socket_honours_the_deadline),
        cmocka_unit_test(test_qmp_unsent_command_keeps_the_stream),
        cmocka_unit_test(test_qmp_event_queue_has_a_cap),
        cmocka_unit_test(test_qmp_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
