/* Results as people and CI read them: the human format of docs/cli.md
 * (PASS/FAIL/TIME lines, indented failures, the summary line) and --json
 * lines. Each file is printed whole when it ends. */
#pragma once

#include <jansson.h>
#include <stdio.h>

#include "runner.h"

enum file_kind { FILE_RAN, FILE_TIMED_OUT, FILE_CRASHED, FILE_INTERRUPTED, FILE_NOT_RUN };

struct file_result {
    const char *display;
    const char *output; /* what the file's process printed, or NULL */
    size_t output_len;
    double seconds;
    enum file_kind kind;
    json_t *outcome; /* from the file's process (FILE_RAN), may be NULL otherwise */
    char *reason;    /* why there is no outcome */
};

struct report {
    enum verbosity verbosity;
    bool json, tap;
    json_t *junit; /* the files' results for --junit, or NULL */
    FILE *human;   /* stdout, or stderr when stdout carries --json or --tap */
    size_t files, files_failed, files_errored; /* errored: an infrastructure error, no failure */
    long passed, failed, errors, skipped;
    bool progress;       /* a live progress line may be drawn (stderr is a terminal) */
    bool progress_shown; /* one is on the screen now */
};

/* json, tap and events take stdout (the human lines go to stderr); junit
 * keeps the results for ci_junit_write. */
void report_init(struct report *r, enum verbosity v, bool json, bool tap, bool junit,
                 bool events_stdout);
void report_note(struct report *r, const char *line);
/* A file that could not run (a bad claim, no room in the pool, no process). */
void report_error(struct report *r, const char *display, const char *msg);
/* Redraw the progress line (terminals only); results and notes erase it. */
void report_progress(struct report *r, const char *line);
/* Print a file's results; returns 1 when it failed, 2 when nothing failed
 * but an infrastructure error (docs/debugging.md#infrastructure-errors), 0
 * when it passed, -1 when it was interrupted (neither). */
int report_file(struct report *r, const struct file_result *f);
/* A file's status as file_completed and --json give it: "passed",
 * "failed", "error", "timed_out", "crashed" or "interrupted". */
const char *report_status(const struct file_result *f);
void report_summary(struct report *r, double seconds);
void report_release(struct report *r);
