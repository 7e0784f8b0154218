/* A QMP client: capability negotiation, commands with deadlines, and
 * asynchronous events queued while a reply is awaited. */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "util.h"

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
};

void qmp_init(struct qmp *q, int fd, int watch_fd);
void qmp_release(struct qmp *q);
/* Read the greeting and send qmp_capabilities. */
int qmp_negotiate(struct qmp *q, int64_t deadline_ns, struct pv_err *err);
/* Run a command. args may be NULL (a reference is stolen otherwise). On
 * success *ret (if not NULL) gets the "return" value, owned by the caller. */
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
