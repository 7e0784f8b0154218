/* A QMP client: capability negotiation, commands with deadlines, and
 * asynchronous events queued while a reply is awaited. Each command carries
 * an id and only the reply with that id answers it, so the late reply of a
 * command that timed out never answers the next one. */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "util.h"

/* Events kept for qmp_wait_event and qmp_port_closed; beyond, the oldest go.
 * A guest can make QEMU emit events without end (RTC_CHANGE at each write of
 * the RTC), and nobody waits for most of them. */
#define QMP_MAX_EVENTS 1024

struct qmp_event {
    char *name;
    json_t *data;
};

struct qmp {
    int fd;
    int watch_fd; /* QEMU's pidfd */
    struct buf in;
    struct qmp_event *events;
    size_t nevents;
    uint64_t last_id; /* of the last command sent */
    /* A command was cut off mid-line at its deadline: QEMU would read the
     * next one as the rest of it, so no command goes out any more. */
    bool broken;
};

void qmp_init(struct qmp *q, int fd, int watch_fd);
void qmp_release(struct qmp *q);
/* Read the greeting and send qmp_capabilities. */
int qmp_negotiate(struct qmp *q, int64_t deadline_ns, struct pv_err *err);
/* Run a command. args may be NULL (a reference is stolen otherwise). On
 * success *ret (if not NULL) gets the "return" value, owned by the caller.
 * -ETIMEDOUT when the deadline passes while sending or waiting for the
 * reply, -EPIPE when QEMU went away or the stream is broken, -EIO when QEMU
 * answered with an error. */
int qmp_exec(struct qmp *q, const char *cmd, json_t *args, int64_t deadline_ns, json_t **ret,
             struct pv_err *err);
/* The same, passing fd along with the command (SCM_RIGHTS): for `getfd`. */
int qmp_exec_fd(struct qmp *q, const char *cmd, json_t *args, int fd, int64_t deadline_ns,
                json_t **ret, struct pv_err *err);
/* Wait for a named event (already queued or arriving before the deadline);
 * removes it from the queue. */
int qmp_wait_event(struct qmp *q, const char *name, int64_t deadline_ns, struct pv_err *err);
/* Drop queued events. */
void qmp_clear_events(struct qmp *q);
/* Queue whatever events have arrived, without waiting. */
void qmp_poll_events(struct qmp *q);
/* Is there a queued VSERPORT_CHANGE saying port `id` closed? Consumes it. */
bool qmp_port_closed(struct qmp *q, const char *id);

/* One message from QEMU, as the client reads it. */
enum qmp_kind { QMP_GREETING, QMP_EVENT, QMP_RETURN, QMP_ERROR };
struct qmp_msg {
    enum qmp_kind kind;
    json_t *json;      /* the whole message (owned) */
    const char *event; /* QMP_EVENT: its name */
    json_t *data;      /* QMP_EVENT: its data, QMP_RETURN: the return value (borrowed) */
    bool has_id;       /* QMP_RETURN and QMP_ERROR: an id of ours (an integer >= 0) came back */
    uint64_t id;
    const char *desc; /* QMP_ERROR: what went wrong, or NULL */
};
/* Parse one line of QMP (with or without its line end): 0, or -EBADMSG for
 * bytes that are no QMP message (not JSON, not an object of a known shape). */
int qmp_parse(const char *p, size_t n, struct qmp_msg *ret);
void qmp_msg_release(struct qmp_msg *m);
