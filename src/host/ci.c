#include "ci.h"

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

/* Text as XML character data or attribute value: the bytes XML 1.0 cannot
 * carry (control characters, broken UTF-8: console output has both) made
 * visible as for a terminal (docs/cli.md#guest-bytes), then escaped. */
static void xml_text(struct buf *b, const char *s)
{
    struct buf t = BUF_INIT;
    buf_add_escaped(&t, s, strlen(s));
    for (size_t i = 0; i < t.len; i++) {
        switch (t.data[i]) {
        case '&': buf_adds(b, "&amp;"); break;
        case '<': buf_adds(b, "&lt;"); break;
        case '>': buf_adds(b, "&gt;"); break;
        case '"': buf_adds(b, "&quot;"); break;
        case '\'': buf_adds(b, "&apos;"); break;
        default: buf_add(b, t.data + i, 1);
        }
    }
    buf_release(&t);
}

/* ---- TAP ---- */

/* A description: one line, no '#' (it starts a directive), escaped as for a
 * terminal: TAP goes to stdout. */
static void tap_desc(FILE *out, const char *s)
{
    struct buf t = BUF_INIT;
    buf_add_escaped(&t, s ? s : "", s ? strlen(s) : 0);
    for (size_t i = 0; i < t.len; i++) {
        char c = t.data[i];
        fputs(c == '\n' || c == '\r' ? " " : c == '#' ? "\\#" : (char[]){c, 0}, out);
    }
    buf_release(&t);
}

/* A YAML block with the message, each line indented; YAML carries no
 * control characters, so they are escaped as for a terminal (console output
 * has escapes). */
static void tap_yaml(FILE *out, const char *indent, const char *key, const char *msg)
{
    fprintf(out, "%s  ---\n%s  %s: |\n", indent, indent, key);
    struct buf t = BUF_INIT;
    buf_add_escaped(&t, msg, strlen(msg));
    const char *line = t.data;
    while (line && *line) {
        size_t len = strcspn(line, "\r\n");
        fprintf(out, "%s    %.*s\n", indent, (int)len, line);
        line += len + (line[len] == '\r');
        line += line[0] == '\n';
    }
    buf_release(&t);
    fprintf(out, "%s  ...\n", indent);
}

void ci_tap_file(FILE *out, size_t n, const struct file_result *f, bool failed)
{
    json_t *tests = f->outcome ? json_object_get(f->outcome, "tests") : NULL;
    const char *chunk = f->outcome ? str(f->outcome, "chunk_error") : NULL;
    fputs("# Subtest: ", out);
    tap_desc(out, f->display);
    fputc('\n', out);
    size_t i, k = 0;
    json_t *t;
    json_array_foreach(tests, i, t)
    {
        const char *st = str(t, "status"), *msg = str(t, "message");
        bool ok = st && strcmp(st, "failed") && strcmp(st, "error");
        fprintf(out, "    %s %zu - ", ok ? "ok" : "not ok", ++k);
        tap_desc(out, str(t, "name"));
        if (st && !strcmp(st, "skipped")) {
            fputs(" # SKIP ", out);
            tap_desc(out, msg);
        }
        /* TAP has no error directive: an infrastructure error is a point
         * that did not pass, told apart by the words after `#`
         * (docs/cli.md#--tap) */
        if (st && !strcmp(st, "error"))
            fputs(" # ERROR infrastructure", out);
        fputc('\n', out);
        if (!ok)
            tap_yaml(out, "    ", "message", msg ? msg : "(no message)");
    }
    const char *why = chunk ? chunk : f->reason;
    if (why) {
        fprintf(out, "    not ok %zu - %s%s\n", ++k,
                chunk                       ? "(loading the file)"
                : f->kind == FILE_TIMED_OUT ? "(file timed out)"
                                            : "(the file)",
                !strcmp(report_status(f), "error") ? " # ERROR infrastructure" : "");
        tap_yaml(out, "    ", "message", why);
    }
    fprintf(out, "    1..%zu\n", k);
    fprintf(out, "%s %zu - ", failed ? "not ok" : "ok", n);
    tap_desc(out, f->display);
    if (f->kind == FILE_INTERRUPTED)
        fputs(" # SKIP interrupted", out);
    else if (!strcmp(report_status(f), "error"))
        fputs(" # ERROR infrastructure", out);
    fputc('\n', out);
    fflush(out);
}

void ci_tap_plan(FILE *out, size_t nfiles)
{
    fprintf(out, "1..%zu\n", nfiles);
    fflush(out);
}

/* ---- JUnit ---- */

json_t *ci_junit_entry(const struct file_result *f)
{
    json_t *tests = f->outcome ? json_object_get(f->outcome, "tests") : NULL;
    const char *chunk = f->outcome ? str(f->outcome, "chunk_error") : NULL;
    static const char *const kinds[] = {"loading", "timed_out", "crashed", "interrupted",
                                        "not_run"};
    const char *why = chunk ? chunk : f->reason;
    bool infra = f->outcome && json_is_true(json_object_get(f->outcome, "chunk_infra"));
    return json_pack("{s:s, s:f, s:O, s:s?, s:s}", "path", f->display, "seconds", f->seconds,
                     "tests", json_is_array(tests) ? tests : json_array(), "error", why, "kind",
                     infra ? "infrastructure" : kinds[f->kind]);
}

static void attr(struct buf *b, const char *name, const char *value)
{
    buf_addf(b, " %s=\"", name);
    xml_text(b, value);
    buf_add(b, "\"", 1);
}

/* The first line of a message, for the message attribute. */
static void first_line(struct buf *b, const char *name, const char *msg)
{
    _cleanup_free_ char *line = xstrndup(msg, strcspn(msg, "\n"));
    attr(b, name, line);
}

static void testcase(struct buf *b, const char *path, json_t *t, size_t *failures, size_t *errors,
                     size_t *skipped)
{
    const char *st = str(t, "status"), *msg = str(t, "message");
    const char *name = str(t, "name");
    buf_adds(b, "    <testcase");
    attr(b, "classname", path);
    attr(b, "name", name ? name : "?");
    buf_addf(b, " time=\"%.3f\"", json_number_value(json_object_get(t, "duration")));
    if (st && !strcmp(st, "passed")) {
        buf_adds(b, "/>\n");
        return;
    }
    buf_adds(b, ">\n");
    if (st && !strcmp(st, "skipped")) {
        (*skipped)++;
        buf_adds(b, "      <skipped");
        attr(b, "message", msg ? msg : "skipped");
        buf_adds(b, "/>\n");
    } else {
        /* an infrastructure error is JUnit's <error>, which CI reporters
         * count apart from failures (docs/debugging.md) */
        bool error = st && !strcmp(st, "error");
        const char *tag = error ? "error" : "failure";
        (*(error ? errors : failures))++;
        buf_addf(b, "      <%s", tag);
        first_line(b, "message", msg ? msg : "failed");
        buf_addf(b, " type=\"%s\">", error ? "infrastructure" : "failure");
        xml_text(b, msg ? msg : "failed");
        const char *con = str(t, "console_excerpt");
        if (con && *con) {
            buf_adds(b, "\n\n");
            xml_text(b, con);
        }
        buf_addf(b, "</%s>\n", tag);
    }
    buf_adds(b, "    </testcase>\n");
}

int ci_junit_write(const char *path, json_t *entries, double seconds, struct pv_err *err)
{
    struct buf suites = BUF_INIT, b = BUF_INIT;
    size_t total = 0, failures = 0, errors = 0, skipped = 0, i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *p = str(e, "path"), *why = str(e, "error");
        size_t n = json_array_size(json_object_get(e, "tests")), f = 0, er = 0, s = 0, k;
        struct buf cases = BUF_INIT;
        json_t *t;
        json_array_foreach(json_object_get(e, "tests"), k, t) testcase(&cases, p, t, &f, &er, &s);
        if (why) {
            n++;
            buf_adds(&cases, "    <testcase");
            attr(&cases, "classname", p);
            attr(&cases, "name", "(file)");
            buf_adds(&cases, " time=\"0\">\n      <error");
            first_line(&cases, "message", why);
            attr(&cases, "type", str(e, "kind"));
            buf_adds(&cases, ">");
            xml_text(&cases, why);
            buf_adds(&cases, "</error>\n    </testcase>\n");
        }
        buf_adds(&suites, "  <testsuite");
        attr(&suites, "name", p);
        buf_addf(&suites,
                 " tests=\"%zu\" failures=\"%zu\" errors=\"%zu\" skipped=\"%zu\" "
                 "time=\"%.3f\">\n",
                 n, f, er + (why ? 1 : 0), s, json_number_value(json_object_get(e, "seconds")));
        buf_add(&suites, cases.data, cases.len);
        buf_adds(&suites, "  </testsuite>\n");
        buf_release(&cases);
        total += n, failures += f, skipped += s, errors += er + (why ? 1 : 0);
    }
    buf_addf(&b,
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"provium\" "
             "tests=\"%zu\" failures=\"%zu\" errors=\"%zu\" skipped=\"%zu\" time=\"%.3f\">\n",
             total, failures, errors, skipped, seconds);
    buf_add(&b, suites.data, suites.len);
    buf_adds(&b, "</testsuites>\n");
    buf_release(&suites);
    /* a CI step reading it never sees half a file */
    int r = write_file_atomic(path, b.data, b.len, 0644);
    if (r < 0)
        pv_err_set(err, -r, "--junit %s: %s", path, strerror(-r));
    buf_release(&b);
    return r;
}
