/* The coverage report (src/host/coverage.c, docs/coverage.md): frames built
 * with msgpack-c's packer, the way the runner writes them, read back through
 * a pipe; grouping by meta.spec, outcomes without a start, tests whose file
 * ended first, malformed streams, and escaping of hostile names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "host/coverage.h"

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* A frame {ts, kind, payload}: payload from pairs of key, value; a value
 * starting with '#' is an integer, "[a|b" an array of strings, "{spec" a
 * meta map holding spec = the rest. */
static void frame(struct buf *out, const char *kind, ...)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    const char *kv[32];
    size_t n = 0;
    va_list ap;
    va_start(ap, kind);
    for (const char *s; (s = va_arg(ap, const char *));)
        kv[n++] = s;
    va_end(ap);
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "ts");
    msgpack_pack_int64(&pk, 1);
    pack_str(&pk, "kind");
    pack_str(&pk, kind);
    pack_str(&pk, "payload");
    msgpack_pack_map(&pk, n / 2);
    for (size_t i = 0; i + 1 < n; i += 2) {
        pack_str(&pk, kv[i]);
        const char *v = kv[i + 1];
        if (v[0] == '#') {
            msgpack_pack_uint64(&pk, strtoull(v + 1, NULL, 10));
        } else if (v[0] == '{') {
            msgpack_pack_map(&pk, 1);
            pack_str(&pk, "spec");
            if (v[1] == '[') {
                char copy[256];
                snprintf(copy, sizeof(copy), "%s", v + 2);
                size_t k = 1;
                for (char *c = copy; *c; c++)
                    k += *c == '|';
                msgpack_pack_array(&pk, k);
                for (char *save, *t = strtok_r(copy, "|", &save); t; t = strtok_r(NULL, "|", &save))
                    pack_str(&pk, t);
            } else {
                pack_str(&pk, v + 1);
            }
        } else {
            pack_str(&pk, v);
        }
    }
    unsigned char head[4] = {(unsigned char)(sb.size >> 24), (unsigned char)(sb.size >> 16),
                             (unsigned char)(sb.size >> 8), (unsigned char)sb.size};
    buf_add(out, head, 4);
    buf_add(out, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* The stream read back through a pipe: cov_read_fd's result. */
static int read_back(const struct buf *stream, struct cov_report *r, struct pv_err *err)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_true(stream->len < 60000); /* fits the pipe */
    assert_int_equal(write_all(p[1], stream->data, stream->len), 0);
    close(p[1]);
    int rc = cov_read_fd(r, p[0], err);
    close(p[0]);
    return rc;
}

static const char *find_after(const char *hay, const char *a, const char *b)
{
    const char *x = strstr(hay, a);
    return x ? strstr(x, b) : NULL;
}

static void test_grouped_by_spec(void **state)
{
    struct buf s = BUF_INIT, text = BUF_INIT, html = BUF_INIT;
    frame(&s, "file_discovered", "path", "a.test.lua", NULL);
    frame(&s, "test_started", "path", "a.test.lua", "name", "ten", "meta", "{§4.2.10", NULL);
    frame(&s, "test_passed", "path", "a.test.lua", "name", "ten", "duration_ns", "#1500000000",
          "meta", "{§4.2.10", NULL);
    frame(&s, "test_started", "path", "b.test.lua", "name", "nine", "meta", "{§4.2.9", NULL);
    frame(&s, "test_failed", "path", "b.test.lua", "name", "nine", "duration_ns", "#250000000",
          "reason", "b.test.lua:3: 1 ~= 2", "meta", "{§4.2.9", NULL);
    frame(&s, "test_started", "path", "a.test.lua", "name", "two", "meta", "{[§1|§2|§1", NULL);
    frame(&s, "test_passed", "path", "a.test.lua", "name", "two", "duration_ns", "#0", "meta",
          "{[§1|§2|§1", NULL);
    /* skipped without a start, as the seeds' runner sent it */
    frame(&s, "test_skipped", "path", "a.test.lua", "name", "later", "reason", "skipped: no",
          "meta", "{§1", NULL);
    frame(&s, "test_started", "path", "a.test.lua", "name", "plain", NULL);
    frame(&s, "test_passed", "path", "a.test.lua", "name", "plain", "duration_ns", "#1", NULL);
    frame(&s, "file_completed", "path", "a.test.lua", "status", "passed", NULL);
    frame(&s, "file_completed", "path", "b.test.lua", "status", "failed", NULL);
    frame(&s, "pool_state", "used", "#1", NULL);

    struct cov_report r = {0};
    struct pv_err err = {0};
    assert_int_equal(read_back(&s, &r, &err), 0);
    assert_int_equal(r.nframes, 13);
    assert_int_equal(r.ntests, 5);
    cov_finish(&r);
    cov_text(&r, &text);
    /* version order, the tests without a spec last; a spec named twice counts once */
    assert_non_null(strstr(text.data, "coverage: 5 section(s), 5 test(s); 3 passed, 1 failed, "
                                      "1 skipped\n"));
    assert_non_null(strstr(text.data, "PASS §1 (1 passed, 0 failed, 1 skipped; 0.00s)\n"
                                      "    PASS 0.00s a.test.lua: two\n"
                                      "    SKIP 0.00s a.test.lua: later\n"
                                      "        skipped: no\n"
                                      "PASS §2 "));
    assert_non_null(find_after(text.data, "FAIL §4.2.9 (0 passed, 1 failed, 0 skipped; 0.25s)",
                               "PASS §4.2.10 (1 passed, 0 failed, 0 skipped; 1.50s)"));
    assert_non_null(find_after(text.data, "PASS §4.2.10", "PASS (no meta.spec)"));
    assert_non_null(strstr(text.data, "files that did not pass:\n    failed b.test.lua\n"));
    cov_html(&r, "run.events", &html);
    assert_non_null(strstr(html.data, "<a href=\"#s3\">§4.2.9</a>"));
    assert_non_null(strstr(html.data, "Events: run.events;"));
    cov_release(&r);
    buf_release(&s);
    buf_release(&text);
    buf_release(&html);
}

/* A test still running when its file timed out is a failure that says so. */
static void test_unfinished(void **state)
{
    struct buf s = BUF_INIT, text = BUF_INIT;
    frame(&s, "test_started", "path", "t.test.lua", "name", "hangs", "meta", "{§3", NULL);
    frame(&s, "file_completed", "path", "t.test.lua", "status", "timed_out", NULL);
    struct cov_report r = {0};
    assert_int_equal(read_back(&s, &r, NULL), 0);
    cov_finish(&r);
    cov_text(&r, &text);
    assert_non_null(strstr(text.data,
                           "FAIL §3 (0 passed, 1 failed, 0 skipped; 0.00s)\n"
                           "    FAIL 0.00s t.test.lua: hangs\n"
                           "        did not finish: its file ended first (timed_out)\n"));
    cov_release(&r);
    buf_release(&s);
    buf_release(&text);
}

/* Names and messages can hold anything a test or a guest wrote: nothing of
 * them becomes markup, and no control byte reaches the page or a terminal. */
static void test_hostile_names(void **state)
{
    const char *name = "<script>alert(1)</script> & \"q\" 'x' \x1b[31m";
    struct buf s = BUF_INIT, text = BUF_INIT, html = BUF_INIT;
    frame(&s, "test_started", "path", "h.test.lua", "name", name, "meta", "{</td><b>§9", NULL);
    frame(&s, "test_failed", "path", "h.test.lua", "name", name, "duration_ns", "#1", "reason",
          "<img src=x onerror=alert(1)>\x07", "meta", "{</td><b>§9", NULL);
    frame(&s, "file_completed", "path", "<i>\x1b]0;t\x07", "status", "\x1b[2J<u>", NULL);
    struct cov_report r = {0};
    assert_int_equal(read_back(&s, &r, NULL), 0);
    cov_finish(&r);
    cov_html(&r, "<evil>", &html);
    assert_null(strstr(html.data, "<script"));
    assert_null(strstr(html.data, "<img"));
    assert_null(strstr(html.data, "<b>"));
    assert_null(strstr(html.data, "<evil>"));
    assert_null(strchr(html.data, '\x1b'));
    assert_null(strchr(html.data, '\x07'));
    assert_non_null(strstr(html.data, "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot; "
                                      "&#39;x&#39; \\x1b[31m"));
    assert_non_null(strstr(html.data, "&lt;img src=x onerror=alert(1)&gt;\\x07"));
    assert_null(strstr(html.data, "<i>"));
    assert_null(strstr(html.data, "<u>"));
    cov_text(&r, &text);
    assert_null(strchr(text.data, '\x1b'));
    assert_null(strchr(text.data, '\x07'));
    assert_non_null(strstr(text.data, "\\x1b[31m"));
    assert_non_null(strstr(text.data, "    \\x1b[2J<u> <i>\\x1b]0;t\\x07\n"));
    cov_release(&r);
    buf_release(&s);
    buf_release(&text);
    buf_release(&html);
}

static void expect_error(const struct buf *s, const char *msg)
{
    struct cov_report r = {0};
    struct pv_err err = {0};
    assert_true(read_back(s, &r, &err) < 0);
    if (!strstr(err.msg, msg))
        fail_msg("error `%s` does not contain `%s`", err.msg, msg);
    cov_release(&r);
}

static void test_malformed(void **state)
{
    struct buf s = BUF_INIT;
    frame(&s, "test_started", "path", "a", "name", "b", NULL);
    size_t whole = s.len;
    s.len -= 3; /* cut inside the first frame's body */
    expect_error(&s, "frame 1 (byte 0): the stream ends after");
    s.len = whole;
    buf_add(&s, "\x00\x00", 2);
    expect_error(&s, "frame 2 (byte ");
    s.len = whole;
    buf_add(&s, "\x7f\xff\xff\xff", 4);
    expect_error(&s, "over the 64 MiB limit");
    s.len = whole;
    buf_add(&s, "\x00\x00\x00\x01\x01", 5); /* the integer 1, not a map */
    expect_error(&s, "not a msgpack map");
    s.len = whole;
    buf_add(&s, "\x00\x00\x00\x01\x80", 5); /* an empty map */
    expect_error(&s, "without the string `kind`");
    /* a map of 2^32-1 entries in 5 bytes: refused before msgpack-c would
     * allocate for them (128 GiB; fuzz_coverage found it) */
    s.len = whole;
    buf_add(&s, "\x00\x00\x00\x05\xdf\xff\xff\xff\xff", 9);
    expect_error(&s, "not a msgpack map");
    s.len = whole;
    buf_add(&s, "\x00\x00\x00\x06\x91\xdb\xff\xff\xff\xff", 10); /* a string past the end */
    expect_error(&s, "not a msgpack map");
    buf_release(&s);

    struct buf empty = BUF_INIT, text = BUF_INIT;
    struct cov_report r = {0};
    assert_int_equal(read_back(&empty, &r, NULL), 0);
    cov_text(&r, &text);
    assert_string_equal(text.data, "coverage: 0 section(s), 0 test(s); 0 passed, 0 failed, "
                                   "0 skipped\n");
    cov_release(&r);
    buf_release(&text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grouped_by_spec),
        cmocka_unit_test(test_unfinished),
        cmocka_unit_test(test_hostile_names),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
