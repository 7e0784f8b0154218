#include "coverage.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <getopt.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "version.h"

/* ---- reading the stream ---- */

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    if (!map || map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            !memcmp(k->via.str.ptr, key, n))
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* A string field as a C string (NULL when absent or not a string). */
static char *map_str(const msgpack_object *map, const char *key)
{
    const msgpack_object *v = map_get(map, key);
    if (!v || v->type != MSGPACK_OBJECT_STR)
        return NULL;
    return xstrndup(v->via.str.ptr, v->via.str.size);
}

static bool str_is(const msgpack_object *v, const char *s)
{
    return v && v->type == MSGPACK_OBJECT_STR && v->via.str.size == strlen(s) &&
           !memcmp(v->via.str.ptr, s, v->via.str.size);
}

static void test_free_specs(struct cov_test *t)
{
    for (size_t i = 0; i < t->nspecs; i++)
        free(t->specs[i]);
    free(t->specs);
    t->specs = NULL;
    t->nspecs = 0;
}

/* meta.spec: a string, or an array of them (a test that covers several
 * sections). Anything else counts as no spec. */
static void test_set_specs(struct cov_test *t, const msgpack_object *meta)
{
    const msgpack_object *spec = map_get(meta, "spec");
    if (!spec)
        return;
    test_free_specs(t);
    if (spec->type == MSGPACK_OBJECT_STR && spec->via.str.size) {
        t->specs = xmalloc(sizeof(char *));
        t->specs[t->nspecs++] = xstrndup(spec->via.str.ptr, spec->via.str.size);
    } else if (spec->type == MSGPACK_OBJECT_ARRAY) {
        t->specs = xcalloc(spec->via.array.size + 1, sizeof(char *));
        for (uint32_t i = 0; i < spec->via.array.size; i++) {
            const msgpack_object *s = &spec->via.array.ptr[i];
            if (s->type == MSGPACK_OBJECT_STR && s->via.str.size)
                t->specs[t->nspecs++] = xstrndup(s->via.str.ptr, s->via.str.size);
        }
    }
}

/* The test an outcome belongs to: the last one of that file and name that
 * has not ended (files run side by side, so search back), else a new one
 * (a skipped test may come without its test_started). */
static struct cov_test *test_for(struct cov_report *r, const char *path, const char *name,
                                 bool started)
{
    if (!started)
        for (size_t i = r->ntests; i-- > 0;) {
            struct cov_test *t = &r->tests[i];
            if (!t->status && !strcmp(t->path, path) && !strcmp(t->name, name))
                return t;
        }
    if (r->ntests == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 64;
        r->tests = xrealloc(r->tests, r->cap * sizeof(*r->tests));
    }
    struct cov_test *t = &r->tests[r->ntests++];
    *t = (struct cov_test){.path = xstrdup(path), .name = xstrdup(name)};
    return t;
}

static void feed_test(struct cov_report *r, const char *kind, const msgpack_object *p)
{
    _cleanup_free_ char *path = map_str(p, "path"), *name = map_str(p, "name");
    if (!path || !name)
        return;
    bool started = !strcmp(kind, "test_started");
    struct cov_test *t = test_for(r, path, name, started);
    test_set_specs(t, map_get(p, "meta"));
    if (started)
        return;
    t->status = xstrdup(kind + strlen("test_"));
    t->reason = map_str(p, "reason");
    const msgpack_object *d = map_get(p, "duration_ns");
    if (d && d->type == MSGPACK_OBJECT_POSITIVE_INTEGER && d->via.u64 <= INT64_MAX)
        t->duration_ns = (int64_t)d->via.u64;
}

static void feed_file(struct cov_report *r, const msgpack_object *p)
{
    const msgpack_object *status = map_get(p, "status");
    char *path = map_str(p, "path");
    if (!path || str_is(status, "passed")) {
        free(path);
        return;
    }
    r->files = xrealloc(r->files, (r->nfiles + 1) * sizeof(*r->files));
    r->files[r->nfiles++] = (struct cov_file){
        .path = path,
        .status = map_str(p, "status") ?: xstrdup("failed"),
    };
}

/* Does body hold one msgpack object whose arrays and maps announce no more
 * entries than bytes are left (each takes one at least)? msgpack-c allocates
 * what a header announces before reading it: 2^32 entries of a few bytes'
 * frame would be a request for 128 GiB. */
static bool plausible(const uint8_t *p, size_t n)
{
    uint64_t need = 1; /* objects still to read */
    size_t at = 0;
    while (need > 0) {
        if (at >= n || need > n - at)
            return false;
        uint8_t t = p[at++];
        need--;
        uint64_t head = 0, body = 0, more = 0;
        if (t <= 0x7f || t >= 0xe0 || t == 0xc0 || t == 0xc2 || t == 0xc3)
            ;
        else if (t <= 0x8f)
            more = 2u * (t & 0x0f);
        else if (t <= 0x9f)
            more = t & 0x0f;
        else if (t <= 0xbf)
            body = t & 0x1f;
        else if (t >= 0xc4 && t <= 0xc6) /* bin 8/16/32 */
            head = 1u << (t - 0xc4);
        else if (t >= 0xc7 && t <= 0xc9) /* ext 8/16/32, then a type byte */
            head = 1u << (t - 0xc7), body = 1;
        else if (t >= 0xca && t <= 0xd3) /* float, uint, int */
            body = (uint64_t[]){4, 8, 1, 2, 4, 8, 1, 2, 4, 8}[t - 0xca];
        else if (t >= 0xd4 && t <= 0xd8) /* fixext: a type byte and 1-16 */
            body = 1 + (1u << (t - 0xd4));
        else if (t >= 0xd9 && t <= 0xdb) /* str 8/16/32 */
            head = 1u << (t - 0xd9);
        else if (t >= 0xdc && t <= 0xdf) /* array/map 16/32 */
            head = t & 1 ? 4 : 2;
        else
            return false; /* 0xc1 */
        if (head > n - at)
            return false;
        uint64_t v = load_be(p + at, (size_t)head);
        at += head;
        if (t >= 0xdc && t <= 0xdd)
            more = v;
        else if (t >= 0xde)
            more = 2 * v;
        else if (head)
            body += v;
        if (body > n - at)
            return false;
        at += body;
        need += more;
    }
    return true;
}

int cov_feed_frame(struct cov_report *r, const void *body, size_t len, struct pv_err *err)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int r_ = 0;
    if (!plausible(body, len) ||
        msgpack_unpack_next(&u, body, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
        u.data.type != MSGPACK_OBJECT_MAP) {
        r_ = pv_err_set(err, EINVAL, "not a msgpack map");
        goto out;
    }
    const msgpack_object *kind = map_get(&u.data, "kind");
    const msgpack_object *payload = map_get(&u.data, "payload");
    if (!kind || kind->type != MSGPACK_OBJECT_STR || !payload ||
        payload->type != MSGPACK_OBJECT_MAP) {
        r_ = pv_err_set(err, EINVAL, "a map without the string `kind` and the map `payload`");
        goto out;
    }
    char *k = xstrndup(kind->via.str.ptr, kind->via.str.size);
    if (!strcmp(k, "test_started") || !strcmp(k, "test_passed") || !strcmp(k, "test_failed") ||
        !strcmp(k, "test_skipped"))
        feed_test(r, k, payload);
    else if (!strcmp(k, "file_completed"))
        feed_file(r, payload);
    free(k);
    r->nframes++;
out:
    msgpack_unpacked_destroy(&u);
    return r_;
}

/* n bytes from fd: n, fewer at EOF, or -errno. */
static ssize_t read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(fd, (char *)p + got, n - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

int cov_read_fd(struct cov_report *r, int fd, struct pv_err *err)
{
    uint64_t offset = 0;
    for (size_t frame = 1;; frame++) {
        unsigned char head[4];
        ssize_t k = read_full(fd, head, 4);
        if (k == 0)
            return 0;
        if (k < 0)
            return pv_err_set(err, (int)-k, "reading frame %zu: %s", frame, strerror((int)-k));
        if (k < 4)
            return pv_err_set(err, EPROTO,
                              "frame %zu (byte %" PRIu64 "): the stream ends inside its length",
                              frame, offset);
        uint32_t n =
            (uint32_t)head[0] << 24 | (uint32_t)head[1] << 16 | (uint32_t)head[2] << 8 | head[3];
        if (n > COVERAGE_MAX_FRAME)
            return pv_err_set(err, EPROTO,
                              "frame %zu (byte %" PRIu64 "): %u bytes, over the %u MiB limit "
                              "(not an event stream?)",
                              frame, offset, n, COVERAGE_MAX_FRAME >> 20);
        _cleanup_free_ char *body = xmalloc(n ? n : 1);
        k = read_full(fd, body, n);
        if (k < 0)
            return pv_err_set(err, (int)-k, "reading frame %zu: %s", frame, strerror((int)-k));
        if ((size_t)k < n)
            return pv_err_set(err, EPROTO,
                              "frame %zu (byte %" PRIu64 "): the stream ends after %zd of its "
                              "%u bytes",
                              frame, offset, k, n);
        if (cov_feed_frame(r, body, n, err) < 0)
            return pv_err_wrap(err, "frame %zu (byte %" PRIu64 ")", frame, offset);
        offset += 4 + (uint64_t)n;
    }
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const struct cov_file *)a)->path, ((const struct cov_file *)b)->path);
}

void cov_finish(struct cov_report *r)
{
    /* by path, not by the order the files happened to end in */
    if (r->nfiles)
        qsort(r->files, r->nfiles, sizeof(*r->files), by_path);
    for (size_t i = 0; i < r->ntests; i++) {
        struct cov_test *t = &r->tests[i];
        if (t->status)
            continue;
        const char *how = "the stream ended first";
        for (size_t j = 0; j < r->nfiles; j++)
            if (!strcmp(r->files[j].path, t->path))
                how = r->files[j].status;
        t->status = xstrdup("failed");
        t->reason = xasprintf("did not finish: its file ended first (%s)", how);
    }
}

void cov_release(struct cov_report *r)
{
    for (size_t i = 0; i < r->ntests; i++) {
        struct cov_test *t = &r->tests[i];
        free(t->path);
        free(t->name);
        free(t->status);
        free(t->reason);
        test_free_specs(t);
    }
    for (size_t i = 0; i < r->nfiles; i++) {
        free(r->files[i].path);
        free(r->files[i].status);
    }
    free(r->tests);
    free(r->files);
    *r = (struct cov_report){0};
}

/* ---- grouping ---- */

/* A section and its tests (indices into r->tests). name NULL: the tests
 * without meta.spec, listed last. */
struct section {
    const char *name;
    size_t *tests, ntests;
    size_t passed, failed, skipped;
    int64_t ns;
};

static int section_cmp(const void *a, const void *b)
{
    const struct section *x = a, *y = b;
    if (!x->name || !y->name)
        return !x->name - !y->name;
    /* version order: "§4.2.10" after "§4.2.9" */
    return strverscmp(x->name, y->name);
}

static struct section *section_get(struct section **s, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++)
        if ((*s)[i].name == name || ((*s)[i].name && name && !strcmp((*s)[i].name, name)))
            return &(*s)[i];
    *s = xrealloc(*s, (*n + 1) * sizeof(**s));
    (*s)[*n] = (struct section){.name = name};
    return &(*s)[(*n)++];
}

static void section_add(struct section *s, const struct cov_test *t, size_t i)
{
    s->tests = xrealloc(s->tests, (s->ntests + 1) * sizeof(size_t));
    s->tests[s->ntests++] = i;
    s->passed += !strcmp(t->status, "passed");
    s->failed += !strcmp(t->status, "failed");
    s->skipped += !strcmp(t->status, "skipped");
    s->ns += t->duration_ns;
}

/* The sections, sorted; a test with two specs is in both. */
static struct section *sections_of(const struct cov_report *r, size_t *ret_n)
{
    struct section *s = NULL;
    size_t n = 0;
    for (size_t i = 0; i < r->ntests; i++) {
        const struct cov_test *t = &r->tests[i];
        if (!t->status)
            continue;
        if (!t->nspecs)
            section_add(section_get(&s, &n, NULL), t, i);
        for (size_t j = 0; j < t->nspecs; j++) {
            bool dup = false; /* the same spec twice in one test counts once */
            for (size_t k = 0; k < j; k++)
                dup = dup || !strcmp(t->specs[k], t->specs[j]);
            if (!dup)
                section_add(section_get(&s, &n, t->specs[j]), t, i);
        }
    }
    if (n)
        qsort(s, n, sizeof(*s), section_cmp);
    *ret_n = n;
    return s;
}

static void sections_free(struct section *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(s[i].tests);
    free(s);
}

static const char *section_word(const struct section *s)
{
    return s->failed ? "FAIL" : s->passed ? "PASS" : "SKIP";
}

static const char *test_word(const struct cov_test *t)
{
    return !strcmp(t->status, "passed") ? "PASS" : !strcmp(t->status, "failed") ? "FAIL" : "SKIP";
}

static void totals(const struct cov_report *r, size_t *p, size_t *f, size_t *s)
{
    *p = *f = *s = 0;
    for (size_t i = 0; i < r->ntests; i++) {
        const char *st = r->tests[i].status;
        if (!st)
            continue;
        *p += !strcmp(st, "passed");
        *f += !strcmp(st, "failed");
        *s += !strcmp(st, "skipped");
    }
}

#define NO_SPEC "(no meta.spec)"

/* ---- text ---- */

/* s escaped for a terminal, each line after the first indented. */
static void text_lines(struct buf *out, const char *s, const char *indent)
{
    struct buf e = BUF_INIT;
    buf_add_escaped(&e, s, strlen(s));
    const char *p = e.data ? e.data : "";
    for (const char *nl; (nl = strchr(p, '\n')); p = nl + 1) {
        buf_add(out, p, (size_t)(nl - p));
        buf_addf(out, "\n%s", indent);
    }
    buf_adds(out, p);
    buf_release(&e);
}

void cov_text(const struct cov_report *r, struct buf *out)
{
    size_t n, p, f, s;
    struct section *sec = sections_of(r, &n);
    totals(r, &p, &f, &s);
    buf_addf(out, "coverage: %zu section(s), %zu test(s); %zu passed, %zu failed, %zu skipped\n", n,
             p + f + s, p, f, s);
    for (size_t i = 0; i < n; i++) {
        buf_addf(out, "%s ", section_word(&sec[i]));
        text_lines(out, sec[i].name ? sec[i].name : NO_SPEC, "    ");
        buf_addf(out, " (%zu passed, %zu failed, %zu skipped; %.2fs)\n", sec[i].passed,
                 sec[i].failed, sec[i].skipped, (double)sec[i].ns / 1e9);
        for (size_t j = 0; j < sec[i].ntests; j++) {
            const struct cov_test *t = &r->tests[sec[i].tests[j]];
            buf_addf(out, "    %s %.2fs ", test_word(t), (double)t->duration_ns / 1e9);
            text_lines(out, t->path, "        ");
            buf_adds(out, ": ");
            text_lines(out, t->name, "        ");
            buf_adds(out, "\n");
            if (t->reason && strcmp(t->status, "passed")) {
                buf_adds(out, "        ");
                text_lines(out, t->reason, "        ");
                buf_adds(out, "\n");
            }
        }
    }
    for (size_t i = 0; i < r->nfiles; i++) {
        buf_adds(out, i ? "" : "files that did not pass:\n");
        buf_adds(out, "    ");
        text_lines(out, r->files[i].status, "        ");
        buf_adds(out, " ");
        text_lines(out, r->files[i].path, "        ");
        buf_adds(out, "\n");
    }
    sections_free(sec, n);
}

/* ---- HTML ---- */

/* s as HTML text: escaped as for a terminal first (no control character,
 * no invalid UTF-8 reaches the page), then the five characters HTML gives
 * a meaning to, so a name can never open a tag or leave an attribute. */
static void html_text(struct buf *out, const char *s)
{
    struct buf e = BUF_INIT;
    buf_add_escaped(&e, s, strlen(s));
    for (size_t i = 0; i < e.len; i++) {
        switch (e.data[i]) {
        case '&': buf_adds(out, "&amp;"); break;
        case '<': buf_adds(out, "&lt;"); break;
        case '>': buf_adds(out, "&gt;"); break;
        case '"': buf_adds(out, "&quot;"); break;
        case '\'': buf_adds(out, "&#39;"); break;
        default: buf_add(out, &e.data[i], 1);
        }
    }
    buf_release(&e);
}

static const char html_head[] =
    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
    "<title>provium coverage</title>\n<style>\n"
    "body { font-family: sans-serif; margin: 2em; color: #222; }\n"
    "table { border-collapse: collapse; margin-bottom: 1.5em; }\n"
    "th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; "
    "vertical-align: top; }\n"
    "td.num { text-align: right; }\n"
    "pre { margin: 0; white-space: pre-wrap; font-size: 0.9em; }\n"
    ".passed { background: #e6f4e6; } .failed { background: #fbe3e3; } "
    ".skipped { background: #f2f2f2; }\n"
    "</style>\n</head>\n<body>\n";

static const char *status_class(const char *word)
{
    return !strcmp(word, "PASS") ? "passed" : !strcmp(word, "FAIL") ? "failed" : "skipped";
}

static void html_sections_table(struct buf *out, const struct section *sec, size_t n)
{
    buf_adds(out, "<table class=\"sections\">\n<thead><tr><th>section</th><th>status</th>"
                  "<th>passed</th><th>failed</th><th>skipped</th><th>time</th></tr></thead>\n"
                  "<tbody>\n");
    for (size_t i = 0; i < n; i++) {
        const char *w = section_word(&sec[i]);
        buf_addf(out, "<tr class=\"%s\"><td><a href=\"#s%zu\">", status_class(w), i + 1);
        html_text(out, sec[i].name ? sec[i].name : NO_SPEC);
        buf_addf(out,
                 "</a></td><td>%s</td><td class=\"num\">%zu</td><td class=\"num\">%zu</td>"
                 "<td class=\"num\">%zu</td><td class=\"num\">%.2f s</td></tr>\n",
                 w, sec[i].passed, sec[i].failed, sec[i].skipped, (double)sec[i].ns / 1e9);
    }
    buf_adds(out, "</tbody>\n</table>\n");
}

static void html_section(struct buf *out, const struct cov_report *r, const struct section *s,
                         size_t i)
{
    buf_addf(out, "<div class=\"section\" id=\"s%zu\">\n<h2>", i + 1);
    html_text(out, s->name ? s->name : NO_SPEC);
    buf_addf(out, " <span class=\"%s\">%s</span></h2>\n", status_class(section_word(s)),
             section_word(s));
    buf_adds(out, "<table class=\"tests\">\n<thead><tr><th>test</th><th>file</th>"
                  "<th>status</th><th>time</th><th>message</th></tr></thead>\n<tbody>\n");
    for (size_t j = 0; j < s->ntests; j++) {
        const struct cov_test *t = &r->tests[s->tests[j]];
        buf_addf(out, "<tr class=\"%s\"><td class=\"name\">", t->status);
        html_text(out, t->name);
        buf_adds(out, "</td><td class=\"file\">");
        html_text(out, t->path);
        buf_addf(out, "</td><td>%s</td><td class=\"num\">%.2f s</td><td class=\"message\">",
                 t->status, (double)t->duration_ns / 1e9);
        if (t->reason && strcmp(t->status, "passed")) {
            buf_adds(out, "<pre>");
            html_text(out, t->reason);
            buf_adds(out, "</pre>");
        }
        buf_adds(out, "</td></tr>\n");
    }
    buf_adds(out, "</tbody>\n</table>\n</div>\n");
}

void cov_html(const struct cov_report *r, const char *source, struct buf *out)
{
    size_t n, p, f, s;
    struct section *sec = sections_of(r, &n);
    totals(r, &p, &f, &s);
    buf_adds(out, html_head);
    buf_adds(out, "<h1>Coverage by spec section</h1>\n<p class=\"summary\">");
    buf_addf(out, "%zu section(s), %zu test(s): %zu passed, %zu failed, %zu skipped. Events: ", n,
             p + f + s, p, f, s);
    html_text(out, source);
    buf_addf(out, "; provium %s.</p>\n", PV_VERSION);
    html_sections_table(out, sec, n);
    for (size_t i = 0; i < n; i++)
        html_section(out, r, &sec[i], i);
    if (r->nfiles) {
        buf_adds(out, "<h2>Files that did not pass</h2>\n<table class=\"files\">\n"
                      "<thead><tr><th>file</th><th>status</th></tr></thead>\n<tbody>\n");
        for (size_t i = 0; i < r->nfiles; i++) {
            buf_adds(out, "<tr class=\"failed\"><td class=\"file\">");
            html_text(out, r->files[i].path);
            buf_adds(out, "</td><td>");
            html_text(out, r->files[i].status);
            buf_adds(out, "</td></tr>\n");
        }
        buf_adds(out, "</tbody>\n</table>\n");
    }
    buf_adds(out, "</body>\n</html>\n");
    sections_free(sec, n);
}

/* ---- the command ---- */

/* A connection to an --events-socket, waiting up to 10 s for the run to
 * make it (the report may start first). fd, or -errno with err. */
static int connect_socket(const char *path, struct pv_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return pv_err_set(err, ENAMETOOLONG, "--from-socket %s: path too long", path);
    strcpy(sa.sun_path, path);
    for (int tries = 0;; tries++) {
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return pv_err_set(err, errno, "socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            return steal_fd(&fd);
        int e = errno;
        if ((e != ENOENT && e != ECONNREFUSED) || tries == 100)
            return pv_err_set(err, e, "--from-socket %s: %s", path, strerror(e));
        nanosleep(&(struct timespec){.tv_nsec = 100 * 1000 * 1000}, NULL);
    }
}

/* The report of the stream at from ("-": stdin) or from the socket, into
 * out as text or HTML. 0, or -errno with err. */
static int make_report(const char *from, const char *socket_path, bool text, struct buf *out,
                       struct pv_err *err)
{
    _cleanup_close_ int fd = -1;
    const char *source = from;
    if (socket_path) {
        fd = connect_socket(socket_path, err);
        source = socket_path;
    } else if (!strcmp(from, "-")) {
        fd = dup(0);
        source = "standard input";
        if (fd < 0)
            return pv_err_set(err, errno, "--from -: %s", strerror(errno));
    } else if ((fd = open(from, O_RDONLY | O_CLOEXEC)) < 0) {
        return pv_err_set(err, errno, "--from %s: %s", from, strerror(errno));
    }
    if (fd < 0)
        return -err->code;
    struct cov_report r = {0};
    int rc = cov_read_fd(&r, fd, err);
    if (rc < 0) {
        pv_err_wrap(err, "%s", source);
    } else {
        cov_finish(&r);
        if (text)
            cov_text(&r, out);
        else
            cov_html(&r, source, out);
    }
    cov_release(&r);
    return rc;
}

static const char coverage_usage[] =
    "usage: %s --from PATH | --from - | --from-socket PATH [--text] [-o FILE]\n"
    "A report of a run's event stream (--save-events, --events-stdout, --events-socket)\n"
    "by the tests' meta.spec: an HTML page on stdout, or text with --text; -o writes FILE.\n"
    "exit status: 0 the report is written, 1 it could not be made, 2 usage.\n";

int coverage_main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"from", required_argument, NULL, 'f'},
        {"from-socket", required_argument, NULL, 's'},
        {"text", no_argument, NULL, 't'},
        {"html", no_argument, NULL, 'H'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *name = strchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (!strcmp(name, "coverage")) /* provium coverage ... */
        name = "provium coverage";
    const char *from = NULL, *sock = NULL, *output = NULL;
    bool text = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:", opts, NULL)) != -1) {
        switch (c) {
        case 'f': from = optarg; break;
        case 's': sock = optarg; break;
        case 't': text = true; break;
        case 'H': text = false; break;
        case 'o': output = optarg; break;
        case 'h': printf(coverage_usage, name); return 0;
        default: fprintf(stderr, coverage_usage, name); return 2;
        }
    }
    if (!from == !sock || optind < argc) {
        fprintf(stderr, "%s: give one of --from PATH, --from - and --from-socket PATH\n", name);
        fprintf(stderr, coverage_usage, name);
        return 2;
    }
    struct pv_err err = {0};
    struct buf out = BUF_INIT;
    int r = make_report(from, sock, text, &out, &err);
    if (r == 0 && output) {
        r = write_file_atomic(output, out.data ? out.data : "", out.len, 0644);
        if (r < 0)
            pv_err_set(&err, -r, "-o %s: %s", output, strerror(-r));
    } else if (r == 0 && write_all(1, out.data ? out.data : "", out.len) < 0) {
        r = pv_err_set(&err, errno, "writing the report: %s", strerror(errno));
    }
    buf_release(&out);
    if (r < 0) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return 1;
    }
    return 0;
}

/* ---- --coverage in a run ---- */

/* The temporary event file of this provium and its marker, which names the
 * owner's pid: only a provium whose pid the marker holds removes the file. */
static char *tmp_events, *tmp_marker;

static pid_t marker_pid(const char *marker)
{
    struct buf b = BUF_INIT;
    pid_t pid = 0;
    if (read_file(marker, 64, &b) == 0 && b.data)
        pid = (pid_t)strtol(b.data, NULL, 10);
    buf_release(&b);
    return pid;
}

static void remove_tmp(void)
{
    if (tmp_marker && marker_pid(tmp_marker) == getpid()) {
        unlink(tmp_events);
        unlink(tmp_marker);
    }
    free(tmp_events);
    free(tmp_marker);
    tmp_events = tmp_marker = NULL;
}

/* What killed provium runs left: temporary files of ours whose marker
 * names a process that is gone. */
static void sweep_stale(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        int pid;
        char tail[16];
        if (sscanf(e->d_name, "provium-coverage-%d.%15s", &pid, tail) != 2 ||
            strcmp(tail, "marker"))
            continue;
        _cleanup_free_ char *marker = xasprintf("%s/%s", dir, e->d_name);
        _cleanup_free_ char *events = xasprintf("%s/provium-coverage-%d.msgpack", dir, pid);
        struct stat st;
        if (lstat(marker, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid() ||
            marker_pid(marker) != pid || pid == getpid() || kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        unlink(events);
        unlink(marker);
    }
    closedir(d);
}

/* A new file of ours at path, 0600, refusing anything already there. */
static int create_excl(const char *path, const char *content)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    return write_all(fd, content, strlen(content));
}

int coverage_prepare(const char *user_file, char **ret_events_path)
{
    unsetenv("PROVIUM_COVERAGE_TMP");
    unsetenv("PROVIUM_COVERAGE_MARKER");
    unsetenv("PROVIUM_COVERAGE_USER_FILE");
    if (user_file) {
        setenv("PROVIUM_COVERAGE_USER_FILE", user_file, 1);
        *ret_events_path = xstrdup(user_file);
        return 0;
    }
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    sweep_stale(dir);
    _cleanup_free_ char *events = xasprintf("%s/provium-coverage-%d.msgpack", dir, (int)getpid());
    _cleanup_free_ char *marker = xasprintf("%s/provium-coverage-%d.marker", dir, (int)getpid());
    _cleanup_free_ char *pid = xasprintf("%d\n", (int)getpid());
    int r = create_excl(marker, pid);
    if (r < 0) {
        fprintf(stderr, "provium: --coverage: %s: %s\n", marker, strerror(-r));
        return r;
    }
    if ((r = create_excl(events, "")) < 0) {
        fprintf(stderr, "provium: --coverage: %s: %s\n", events, strerror(-r));
        unlink(marker);
        return r;
    }
    tmp_events = xstrdup(events);
    tmp_marker = xstrdup(marker);
    atexit(remove_tmp); /* an exit on the way out of the run removes it too */
    setenv("PROVIUM_COVERAGE_TMP", events, 1);
    setenv("PROVIUM_COVERAGE_MARKER", marker, 1);
    *ret_events_path = steal_pointer(&events);
    return 0;
}

int coverage_finish(const char *events_path, int code)
{
    if (!events_path)
        return code;
    if (code == 2) { /* nothing ran: no report to make */
        remove_tmp();
        return code;
    }
    struct pv_err err = {0};
    struct buf text = BUF_INIT, html = BUF_INIT;
    const char *source = tmp_events ? "a temporary file, removed after this report" : events_path;
    _cleanup_close_ int fd = open(events_path, O_RDONLY | O_CLOEXEC);
    struct cov_report r = {0};
    int rc = fd < 0 ? pv_err_set(&err, errno, "%s: %s", events_path, strerror(errno))
                    : cov_read_fd(&r, fd, &err);
    if (rc == 0) {
        cov_finish(&r);
        cov_text(&r, &text);
        cov_html(&r, source, &html);
        rc = write_file_atomic("coverage.html", html.data, html.len, 0644);
        if (rc < 0)
            pv_err_set(&err, -rc, "coverage.html: %s", strerror(-rc));
    } else if (fd >= 0) {
        pv_err_wrap(&err, "%s", events_path);
    }
    cov_release(&r);
    if (rc == 0)
        fprintf(stderr, "\n%sprovium: coverage report in coverage.html\n", text.data);
    else
        fprintf(stderr, "provium: --coverage: the report failed: %s\n", err.msg);
    buf_release(&text);
    buf_release(&html);
    remove_tmp();
    return rc < 0 && code == 0 ? 1 : code;
}
