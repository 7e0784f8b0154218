/* The event stream (docs/events.md): frames of a 4-byte
 * big-endian length and a msgpack map {ts, kind, payload}, written to a
 * file (--save-events), stdout (--events-stdout) and every client of a
 * Unix socket (--events-socket). One stream per run, in the runner
 * process; a file's process sends its events (tests, VMs) up a pipe as JSON
 * lines, and the runner re-frames them. */
#pragma once

#include <jansson.h>

#include "util.h"

/* The runner's outputs; any may be off. 0, or -errno with err. */
int events_open(const char *save_path, bool to_stdout, const char *socket_path, struct pv_err *err);
/* In a file's process: events go up fd (-1: nowhere). */
void events_child(int fd);
bool events_enabled(void);
/* Emit an event now; payload is stolen (may be NULL: an empty map). */
void events_emit(const char *kind, json_t *payload);
/* A JSON line a file's process sent ({ts, kind, payload}): emit it. */
void events_forward(const char *line, size_t len);
/* The listening socket, for the runner's poll set (-1 if none), and the
 * work to do when it is readable: take new clients. */
int events_pollfd(void);
void events_accept(void);
/* --watch starts another run: the file starts afresh; socket clients stay. */
void events_restart(void);
void events_close(void);

/* {memory_bytes, cpus}, the shape of ResourceAmount. */
json_t *events_amount(uint64_t memory, uint32_t cpus);
