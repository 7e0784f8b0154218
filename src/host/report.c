#include "report.h"

#include "ci.h"

#include <string.h>

#include "util.h"

/* n bytes of text that may hold a guest's bytes (a console tail, a
 * program's output, whatever a test printed), escaped on the way to the
 * terminal or log (docs/cli.md#guest-bytes). */
static void put_text(FILE *f, const char *s, size_t n)
{
    struct buf b = BUF_INIT;
    buf_add_escaped(&b, s, n);
    if (b.len)
        fwrite(b.data, 1, b.len, f);
    buf_release(&b);
}

static void puts_text(FILE *f, const char *s)
{
    put_text(f, s, strlen(s));
}

void report_init(struct report *r, enum verbosity v, bool json, bool tap, bool junit,
                 bool events_stdout)
{
    *r = (struct report){.verbosity = v,
                         .json = json,
                         .tap = tap,
                         .junit = junit ? json_array() : NULL,
                         .human = json || tap || events_stdout ? stderr : stdout,
                         .progress = v >= NORMAL && isatty(STDERR_FILENO)};
    if (tap) {
        puts("TAP version 14");
        fflush(stdout);
    }
}

void report_release(struct report *r)
{
    json_decref(r->junit);
    r->junit = NULL;
    fflush(r->human);
    fflush(stdout);
}

static void erase_progress(struct report *r)
{
    if (r->progress_shown)
        fputs("\r\033[K", stderr);
    r->progress_shown = false;
}

void report_progress(struct report *r, const char *line)
{
    if (!r->progress)
        return;
    fputs("\r\033[K", stderr);
    puts_text(stderr, line);
    fflush(stderr);
    r->progress_shown = true;
}

void report_note(struct report *r, const char *line)
{
    erase_progress(r);
    puts_text(r->human, line);
    fputc('\n', r->human);
    fflush(r->human);
}

/* Print msg, escaped, with every line indented by `indent` spaces. */
static void indented(FILE *f, int indent, const char *msg)
{
    struct buf b = BUF_INIT;
    buf_add_escaped(&b, msg, strlen(msg));
    for (const char *p = b.data; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        fprintf(f, "%*s%.*s\n", indent, "", (int)n, p);
        p += n + (nl ? 1 : 0);
    }
    buf_release(&b);
}

/* "<indent><word> <name>\n", the name escaped. */
static void headline(FILE *f, const char *word, const char *name)
{
    fputs(word, f);
    puts_text(f, name ? name : "?");
    fputc('\n', f);
}

void report_error(struct report *r, const char *display, const char *msg)
{
    struct file_result f = {.display = display, .kind = FILE_NOT_RUN, .reason = (char *)msg};
    report_file(r, &f);
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

static json_t *copy_or(json_t *v, json_t *fallback)
{
    if (v) {
        json_decref(fallback);
        return json_incref(v);
    }
    return fallback;
}

/* A file's tests by outcome; a file-level reason counts as one more
 * failure, or error when the machine failed (docs/debugging.md). */
struct counts {
    long passed, failed, errors, skipped;
};

static struct counts count(const struct file_result *f)
{
    struct counts c = {0};
    json_t *tests = f->outcome ? json_object_get(f->outcome, "tests") : NULL;
    size_t i;
    json_t *t;
    json_array_foreach(tests, i, t)
    {
        const char *st = str(t, "status");
        if (st && !strcmp(st, "passed"))
            c.passed++;
        else if (st && !strcmp(st, "skipped"))
            c.skipped++;
        else if (st && !strcmp(st, "error"))
            c.errors++;
        else
            c.failed++;
    }
    if (f->outcome && json_is_true(json_object_get(f->outcome, "chunk_infra")))
        c.errors++;
    else if ((f->outcome && str(f->outcome, "chunk_error")) || !f->outcome)
        c.failed++;
    return c;
}

const char *report_status(const struct file_result *f)
{
    if (f->kind == FILE_INTERRUPTED)
        return "interrupted";
    if (f->kind == FILE_TIMED_OUT)
        return "timed_out";
    if (f->kind == FILE_CRASHED)
        return "crashed";
    struct counts c = count(f);
    return c.failed ? "failed" : c.errors ? "error" : "passed";
}

/* One --json line: the shape docs/cli.md gives. */
static json_t *json_line(const struct file_result *f, long failed)
{
    json_t *tests = json_array();
    json_t *ts = f->outcome ? json_object_get(f->outcome, "tests") : NULL;
    size_t i;
    json_t *t;
    json_array_foreach(ts, i, t)
    {
        json_t *o = json_object();
        json_object_set_new(o, "name", copy_or(json_object_get(t, "name"), json_null()));
        json_object_set_new(o, "status", copy_or(json_object_get(t, "status"), json_null()));
        json_object_set_new(o, "message", copy_or(json_object_get(t, "message"), json_null()));
        json_t *log = json_object_get(t, "log");
        json_object_set_new(o, "log", json_is_array(log) ? json_incref(log) : json_array());
        /* the kernel's reports, those a caught error carried included (docs/splats.md) */
        json_t *splats = json_object_get(t, "splats");
        if (json_is_array(splats))
            json_object_set(o, "splats", splats);
        json_array_append_new(tests, o);
    }
    const char *chunk = f->outcome ? str(f->outcome, "chunk_error") : f->reason;
    json_t *line = json_object();
    json_object_set_new(line, "path", json_string(f->display));
    json_object_set_new(line, "timeout",
                        json_string(f->kind == FILE_TIMED_OUT ? "timed_out" : "in_time"));
    json_object_set_new(line, "passed", json_boolean(failed == 0));
    json_object_set_new(line, "status", json_string(report_status(f)));
    json_object_set_new(line, "chunk_error", chunk ? json_string(chunk) : json_null());
    json_object_set_new(line, "tests", tests);
    json_object_set_new(line, "duration", json_real((double)(int64_t)(f->seconds * 1000) / 1000));
    return line;
}

int report_file(struct report *r, const struct file_result *f)
{
    erase_progress(r);
    json_t *tests = f->outcome ? json_object_get(f->outcome, "tests") : NULL;
    const char *chunk = f->outcome ? str(f->outcome, "chunk_error") : NULL;
    bool chunk_infra = f->outcome && json_is_true(json_object_get(f->outcome, "chunk_infra"));
    size_t i;
    json_t *t;
    struct counts c = count(f);
    long passed = c.passed, failed = c.failed, errors = c.errors, skipped = c.skipped;
    if (f->kind == FILE_INTERRUPTED) {
        /* stopped by Ctrl-C: neither passed nor failed */
        r->files++;
        if (r->tap)
            ci_tap_file(stdout, r->files, f, false);
        fputs("STOP ", r->human);
        puts_text(r->human, f->display);
        fputs(" (interrupted)\n", r->human);
        fflush(r->human);
        return -1;
    }
    r->files++;
    r->passed += passed;
    r->failed += failed;
    r->errors += errors;
    r->skipped += skipped;
    if (failed)
        r->files_failed++;
    else if (errors)
        r->files_errored++;

    if (r->tap)
        ci_tap_file(stdout, r->files, f, failed > 0 || errors > 0);
    if (r->junit)
        json_array_append_new(r->junit, ci_junit_entry(f));
    if (r->json) {
        json_t *line = json_line(f, failed + errors);
        char *s = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf("%s\n", s);
        fflush(stdout);
        free(s);
        json_decref(line);
    }
    int verdict = failed ? 1 : errors ? 2 : 0;
    if (r->verbosity == QUIET && !verdict)
        return 0;
    FILE *out = r->human;
    if (f->output_len && (verdict || r->verbosity >= NORMAL)) {
        put_text(out, f->output, f->output_len);
        if (f->output[f->output_len - 1] != '\n')
            fputc('\n', out);
    }
    const char *word = f->kind == FILE_TIMED_OUT ? "TIME"
                       : failed                  ? "FAIL"
                       : errors                  ? "ERROR"
                                                 : "PASS";
    fprintf(out, "%s ", word);
    puts_text(out, f->display);
    fprintf(out, " (%ld passed, %ld failed, %ld skipped", passed, failed, skipped);
    if (errors)
        fprintf(out, ", %ld error%s", errors, errors == 1 ? "" : "s");
    fputs(")\n", out);
    if (f->reason) {
        fprintf(out, "    %s\n",
                f->kind == FILE_TIMED_OUT ? "TIME (file)"
                : f->kind == FILE_NOT_RUN ? "NOT RUN (file)"
                                          : "CRASH (file)");
        indented(out, 8, f->reason);
    }
    if (chunk) {
        fprintf(out, "    %s (loading the file)\n", chunk_infra ? "ERROR" : "FAIL");
        indented(out, 8, chunk);
    }
    json_array_foreach(tests, i, t)
    {
        const char *st = str(t, "status");
        const char *name = str(t, "name");
        const char *msg = str(t, "message");
        if (st && (!strcmp(st, "failed") || !strcmp(st, "error"))) {
            headline(out, !strcmp(st, "error") ? "    ERROR " : "    FAIL ", name);
            indented(out, 8, msg ? msg : "(no message)");
        } else if (r->verbosity >= VERBOSE && st && !strcmp(st, "passed")) {
            headline(out, "    PASS ", name);
        } else if (r->verbosity >= VERBOSE && st) {
            headline(out, "    SKIP ", name);
            if (msg)
                indented(out, 8, msg);
        }
    }
    fflush(out);
    return verdict;
}

void report_summary(struct report *r, double seconds)
{
    erase_progress(r);
    if (r->tap)
        ci_tap_plan(stdout, r->files);
    fprintf(r->human, "\n%zu file(s); %ld passed, %ld failed, %ld skipped", r->files, r->passed,
            r->failed, r->skipped);
    if (r->errors)
        fprintf(r->human, ", %ld error%s", r->errors, r->errors == 1 ? "" : "s");
    fprintf(r->human, "; %.2fs\n", seconds);
    fflush(r->human);
}
