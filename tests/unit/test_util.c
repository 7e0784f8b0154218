/* src/common/util.c: durations, UTF-8 and the escaping of guest bytes for
 * terminals and report files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <sys/wait.h>
#include <sys/file.h>
#include <signal.h>
#include <fcntl.h>

#include "util.h"

static void test_parse_duration_forms(void **state)
{
    double v = -1;
    assert_int_equal(parse_duration("30s", &v), 0);
    assert_true(v == 30);
    assert_int_equal(parse_duration("500ms", &v), 0);
    assert_true(v == 0.5);
    assert_int_equal(parse_duration("5m", &v), 0);
    assert_true(v == 300);
    assert_int_equal(parse_duration("2h", &v), 0);
    assert_true(v == 7200);
    assert_int_equal(parse_duration("0", &v), 0);
    assert_true(v == 0);
    const char *bad[] = {"", "soon", "-1", "nan", "inf", "1e400", "5 parsecs", "3d", "1s2"};
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        v = -1;
        assert_int_equal(parse_duration(bad[i], &v), -EINVAL);
        assert_true(v == -1);
    }
}

/* Huge but finite durations would overflow the nanosecond deadline into the
 * past: refused, with a code of their own. */
static void test_parse_duration_limit(void **state)
{
    double v = -1;
    assert_int_equal(parse_duration("1e9", &v), 0);
    assert_true(v == PV_DURATION_MAX);
    const char *huge[] = {"1e300h",    "1e300",  "1.0000001e9", "277778h",
                          "16666667m", "1e305h", "1e13ms"};
    for (size_t i = 0; i < ARRAY_SIZE(huge); i++) {
        v = -1;
        assert_int_equal(parse_duration(huge[i], &v), -ERANGE);
        assert_true(v == -1);
    }
    /* the longest, in nanoseconds past a late monotonic clock and times the
     * TCG scale, is still an int64_t */
    assert_true(PV_DURATION_MAX * 1e9 * 3 + 1e17 < 9.2e18);
}

static void check_escaped(const char *in, size_t n, const char *want)
{
    struct buf b = BUF_INIT;
    buf_add_escaped(&b, in, n);
    assert_string_equal(b.data ? b.data : "", want);
    buf_release(&b);
}
#define ESC(lit, want) check_escaped(lit, sizeof(lit) - 1, want)

static void test_escape_controls(void **state)
{
    ESC("plain text\n\tindented\n", "plain text\n\tindented\n");
    ESC("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m");
    /* OSC 52 writes the clipboard; OSC 0 sets the window title */
    ESC("\x1b]52;c;cHduZWQ=\x07", "\\x1b]52;c;cHduZWQ=\\x07");
    ESC("\x1b]0;title\x1b\\", "\\x1b]0;title\\x1b\\");
    ESC("a\0b", "a\\x00b");
    ESC("del\x7f", "del\\x7f");
    /* a lone CR moves back over what was printed; CR LF is a line end */
    ESC("shown\rhidden", "shown\\rhidden");
    ESC("line\r\nnext\r", "line\r\nnext\\r");
    /* C1 controls as UTF-8 (U+009B is CSI), and raw */
    ESC("\xc2\x9b"
        "31m",
        "\\xc2\\x9b31m");
    ESC("\x9b"
        "31m",
        "\\x9b31m");
    ESC("\xc2\xa0nbsp", "\xc2\xa0nbsp");
}

static void test_escape_utf8(void **state)
{
    ESC("caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x90\xa7", "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x90\xa7");
    ESC("\xff\xfe", "\\xff\\xfe");
    ESC("\xc3", "\\xc3");                                           /* cut short */
    ESC("\xc3(", "\\xc3(");                                         /* not a continuation */
    ESC("\xc0\xaf", "\\xc0\\xaf");                                  /* overlong '/' */
    ESC("\xe0\x80\xaf", "\\xe0\\x80\\xaf");                         /* overlong, 3 bytes */
    ESC("\xed\xa0\x80", "\\xed\\xa0\\x80");                         /* a surrogate */
    ESC("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80");                /* past U+10FFFF */
    ESC("\xef\xbf\xbe\xef\xbf\xbd", "\\xef\\xbf\\xbe\xef\xbf\xbd"); /* U+FFFE, U+FFFD */
    ESC("\xf4\x8f\xbf\xbd", "\xf4\x8f\xbf\xbd");
    assert_int_equal(utf8_seq_len("\xe2\x9c\x93", 2), 0);
    assert_int_equal(utf8_seq_len("", 0), 0);
}

/* Whatever goes in, what comes out has no byte a terminal acts on. */
static void test_escape_output_is_inert(void **state)
{
    unsigned char all[512];
    for (size_t i = 0; i < sizeof(all); i++)
        all[i] = (unsigned char)(i * 7 + i / 256);
    struct buf b = BUF_INIT;
    buf_add_escaped(&b, all, sizeof(all));
    for (size_t i = 0; i < b.len;) {
        unsigned char c = (unsigned char)b.data[i];
        size_t len = utf8_seq_len(b.data + i, b.len - i);
        assert_int_not_equal(len, 0);
        assert_true(c >= 0x20 || c == '\n' || c == '\t' || (c == '\r' && b.data[i + 1] == '\n'));
        assert_int_not_equal(c, 0x7f);
        assert_false(len == 2 && c == 0xc2 && (unsigned char)b.data[i + 1] < 0xa0);
        i += len;
    }
    buf_release(&b);
}

/* A lock another process holds costs the timeout, not forever. */
static void test_flock_wait(void **state)
{
    (void)state;
    char path[] = "/tmp/provium-test-flock-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t pid = fork();
    if (pid == 0) {
        int own = open(path, O_RDWR);
        flock(own, LOCK_EX);
        (void)!write(go[1], "x", 1);
        pause();
        _exit(0);
    }
    char c;
    assert_int_equal(read(go[0], &c, 1), 1);
    int other = open(path, O_RDWR | O_CLOEXEC);
    assert_int_equal(flock_wait(other, LOCK_EX, 100), -ETIMEDOUT);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    assert_int_equal(flock_wait(other, LOCK_EX, 1000), 0);
    close(other);
    close(fd);
    close(go[0]);
    close(go[1]);
    unlink(path);
}

/* An error is small enough to live on every stack; a long message is cut,
 * and wrapping it keeps the dead VM's story that follows it. */
static void test_err_bounded(void **state)
{
    (void)state;
    assert_true(sizeof(struct pv_err) <= 1024);
    struct pv_err err = {0};
    char big[4000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    assert_int_equal(pv_err_set(&err, EPIPE, "vm `a`: %s", big), -EPIPE);
    assert_int_equal(strlen(err.msg), sizeof(err.msg) - 1);
    assert_string_equal(pv_err_story(&err), "");
    err.story = "\n  last console lines:\n  Kernel panic";
    assert_int_equal(pv_err_wrap(&err, "boot"), -EPIPE);
    assert_memory_equal(err.msg, "boot: vm `a`: xxx", 17);
    assert_string_equal(pv_err_story(&err), "\n  last console lines:\n  Kernel panic");
    pv_err_set(&err, ENOENT, "gone");
    assert_null(err.story);
}

/* Consuming from the front moves nothing until the front is as large as
 * what is left (a peer's many small frames in one read cost what they
 * read); the content is always right, and a consumed buffer is released or
 * stolen whole (ASan checks the frees). */
static void test_buf_consume(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    for (int i = 0; i < 1000; i++)
        buf_addf(&b, "%04d", i);
    const char *start = b.data;
    buf_consume(&b, 8);
    assert_ptr_equal(b.data, start + 8);
    assert_memory_equal(b.data, "00020003", 8);
    for (int i = 0; i < 400; i++)
        buf_consume(&b, 4);
    assert_ptr_equal(b.data, start + 1608);
    assert_memory_equal(b.data, "0402", 4);
    assert_int_equal(b.data[b.len], 0);
    buf_consume(&b, b.len);
    assert_ptr_equal(b.data, start);

    /* Byte k of the stream is 'a' + k % 26, whatever was consumed. */
    uint64_t rng = 1;
    size_t dropped = 0;
    for (int round = 0; round < 20000; round++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        size_t n = (rng >> 33) % 700;
        if (rng & 1) {
            char chunk[700];
            for (size_t k = 0; k < n; k++)
                chunk[k] = (char)('a' + (dropped + b.len + k) % 26);
            buf_add(&b, chunk, n);
        } else {
            n = MIN(n, b.len);
            buf_consume(&b, n);
            dropped += n;
        }
        for (size_t k = 0; k < b.len; k++)
            assert_int_equal(b.data[k], 'a' + (dropped + k) % 26);
        assert_int_equal(b.data[b.len], 0);
    }
    size_t len = b.len;
    buf_consume(&b, 3);
    char *s = buf_steal(&b);
    assert_int_equal(strlen(s), len - 3);
    assert_int_equal(s[0], 'a' + (dropped + 3) % 26);
    free(s);
    buf_add(&b, "xy", 2);
    buf_consume(&b, 1);
    assert_string_equal(b.data, "y");
    buf_release(&b);
}

/* Commands printed for pasting: a word comes back whole from sh. */
static void test_shell_word(void **state)
{
    (void)state;
    const char *in[] = {"a",           "vm-1_x.y", "/boot/vmlinuz-6.1", "", "two words", "it's",
                        "$(rm -rf ~)", "a'b'c",    "tab\there"};
    const char *out[] = {"a",           "vm-1_x.y",   "/boot/vmlinuz-6.1", "''",
                         "'two words'", "'it'\\''s'", "'$(rm -rf ~)'",     "'a'\\''b'\\''c'",
                         "'tab\there'"};
    for (size_t i = 0; i < ARRAY_SIZE(in); i++) {
        struct buf b = BUF_INIT;
        buf_add_shell_word(&b, in[i]);
        assert_string_equal(b.data, out[i]);
        buf_release(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_duration_forms),
        cmocka_unit_test(test_parse_duration_limit),
        cmocka_unit_test(test_escape_controls),
        cmocka_unit_test(test_escape_utf8),
        cmocka_unit_test(test_escape_output_is_inert),
        cmocka_unit_test(test_flock_wait),
        cmocka_unit_test(test_err_bounded),
        cmocka_unit_test(test_buf_consume),
        cmocka_unit_test(test_shell_word),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
