/* Coverage reports (docs/coverage.md): a run's event stream (docs/events.md)
 * read back and grouped by the tests' meta.spec, section -> tests with their
 * status and duration, as text and as a self-contained HTML page. Used by
 * `provium coverage` / `provium-coverage` and by a run's --coverage. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

/* The largest frame accepted: a file's process sends lines of at most
 * 16 MiB (docs/events.md), and framing adds little. */
#define COVERAGE_MAX_FRAME (64u << 20)

struct cov_test {
    char *path, *name;
    char *status; /* "passed", "failed", "skipped", or NULL while not ended */
    char *reason; /* the failure or skip reason, or NULL */
    int64_t duration_ns;
    char **specs; /* meta.spec: one string, or an array of strings */
    size_t nspecs;
};

struct cov_file {
    char *path, *status; /* file_completed's, when not "passed" */
};

struct cov_report {
    struct cov_test *tests;
    size_t ntests, cap;
    struct cov_file *files;
    size_t nfiles;
    size_t nframes;
};

/* One frame's body (a msgpack map {ts, kind, payload}) into r. 0, or
 * -EINVAL with err for a body that is not such a map; kinds the report does
 * not use are skipped. */
int cov_feed_frame(struct cov_report *r, const void *body, size_t len, struct pv_err *err);
/* Every frame from fd until EOF. 0, or -errno with err (a read error, a
 * frame cut short or over COVERAGE_MAX_FRAME, a bad body), naming the
 * frame and its byte offset. */
int cov_read_fd(struct cov_report *r, int fd, struct pv_err *err);
/* Tests whose file ended before they did become failed ones. */
void cov_finish(struct cov_report *r);
/* The report, appended to out. Every name and message is escaped for a
 * terminal (text) or HTML (html). */
void cov_text(const struct cov_report *r, struct buf *out);
void cov_html(const struct cov_report *r, const char *source, struct buf *out);
void cov_release(struct cov_report *r);

/* `provium coverage ARGS` and `provium-coverage ARGS` (argv[0] is the
 * command's name): the exit code (0, 1 when the report failed, 2 usage). */
int coverage_main(int argc, char **argv);

/* --coverage. Before the run: the file the events go to, user_file (a
 * --save-events PATH) or a temporary file with its marker (docs/coverage.md),
 * and the PROVIUM_COVERAGE_* variables. 0, or -errno after saying why. */
int coverage_prepare(const char *user_file, char **ret_events_path);
/* After the run (the stream closed): the report, text on stderr and HTML
 * in coverage.html (none when code is 2: nothing ran), then the temporary
 * file removed if this provium made it. Returns the run's exit code, 1 when
 * it was 0 and the report failed. */
int coverage_finish(const char *events_path, int code);
