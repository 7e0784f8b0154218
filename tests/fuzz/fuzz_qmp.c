/* libFuzzer target for the host's reading of QMP (qmp.c): the input is
 * everything "QEMU" ever says on the monitor, followed by EOF. Each line
 * goes through qmp_parse, whose result must hold together; then the client
 * negotiates, runs two commands, waits for an event and polls for more over
 * the same bytes (feed.h writes them as the client reads). Any input must
 * end in a result or a clean error, never a crash, a leak or a hang. */
#include <stdint.h>
#include <stdlib.h>

#include "feed.h"
#include "host/qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* No wait ends at its deadline: the input ends in EOF first. Generous, so
 * that a fuzzer starved of CPU on a busy machine (nice 19 beside VMs) is not
 * taken for a hang: 1 s was once, at 1.85 million runs. */
#define FUZZ_QMP_WAIT (30 * 1000000000LL)

static void check_msg(const char *p, size_t n)
{
    struct qmp_msg m;
    if (qmp_parse(p, n, &m) < 0) {
        if (m.json || m.event || m.data || m.desc)
            abort();
        return;
    }
    if (!json_is_object(m.json))
        abort();
    switch (m.kind) {
    case QMP_EVENT:
        if (!m.event || strcmp(m.event, json_string_value(json_object_get(m.json, "event"))))
            abort();
        break;
    case QMP_RETURN:
        if (m.data != json_object_get(m.json, "return"))
            abort();
        break;
    case QMP_ERROR:
        if (!json_is_object(json_object_get(m.json, "error")))
            abort();
        break;
    case QMP_GREETING: break;
    default: abort();
    }
    if (m.has_id && (int64_t)m.id != json_integer_value(json_object_get(m.json, "id")))
        abort();
    qmp_msg_release(&m);
}

/* The errors a client call may end in on bytes that end in EOF. */
static void check_ret(int r, const struct pv_err *err)
{
    if (r == -ETIMEDOUT || (r < 0 && err->code != -r) || r > 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    for (size_t off = 0; off < size;) {
        const char *nl = memchr(text + off, '\n', size - off);
        size_t n = nl ? (size_t)(nl - text - off) + 1 : size - off;
        check_msg(text + off, n);
        off += n;
    }

    struct fuzz_feed feed;
    fuzz_feed_start(&feed, data, size);
    struct qmp q;
    struct pv_err err = {0};
    qmp_init(&q, feed.host, -1);
    int r = qmp_negotiate(&q, now_ns() + FUZZ_QMP_WAIT, &err);
    check_ret(r, &err);
    json_t *ret = NULL;
    r = qmp_exec(&q, "query-status", NULL, now_ns() + FUZZ_QMP_WAIT, &ret, &err);
    check_ret(r, &err);
    if (r == 0 && !ret)
        abort();
    json_decref(ret);
    r = qmp_exec(&q, "stop", json_pack("{s:s}", "x", "y"), now_ns() + FUZZ_QMP_WAIT, NULL, &err);
    check_ret(r, &err);
    r = qmp_wait_event(&q, "SHUTDOWN", now_ns() + FUZZ_QMP_WAIT, &err);
    check_ret(r, &err);
    qmp_poll_events(&q);
    qmp_port_closed(&q, "agentport");
    if (q.nevents > QMP_MAX_EVENTS)
        abort();
    qmp_release(&q);
    fuzz_feed_join(&feed);
    return 0;
}
