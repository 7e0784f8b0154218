/* The real agent core over socketpair(): a forked child runs agent_serve()
 * on one end, the host's struct chan drives it from the other. Real
 * processes (/bin/sh, cat, sleep), real files under a temp dir in /tmp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <sys/syscall.h>

#include "agent/agent.h"
#include "chan.h"
#include "guest.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#define SEC 1000000000LL

static char tmpdir[PATH_MAX]; /* realpath of the group's temp dir */

struct fx {
    pid_t pid; /* the agent; 0 once reaped */
    struct chan c;
    uint64_t route; /* where requests go: the agent (0) or a worker */
};

static int64_t deadline(int64_t seconds)
{
    return now_ns() + seconds * SEC;
}

static char *tmp_path(const char *name)
{
    return xasprintf("%s/%s", tmpdir, name);
}

/* Fork an agent on one end of a socketpair; the chan gets the other end. */
static void agent_start(struct fx *f)
{
    int sv[2];
    /* CLOEXEC: the agent's own children must not hold the socket open. */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_int_not_equal(pid, -1);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        signal(SIGPIPE, SIG_IGN); /* as the agent's main() does */
        close(sv[0]);
        /* workers run the real (musl) agent binary: ours is this test */
        int r = agent_serve(sv[1], &(struct agent_opts){.worker_exe = PV_AGENT_BIN});
        _exit(r < 0 ? -r : 0);
    }
    close(sv[1]);
    f->pid = pid;
    chan_init(&f->c, sv[0], -1);
}

static int setup_raw(void **state)
{
    struct fx *f = xcalloc(1, sizeof(*f));
    f->c.fd = -1;
    *state = f;
    agent_start(f);
    return 0;
}

static int teardown(void **state);

static int setup(void **state)
{
    setup_raw(state);
    struct fx *f = *state;
    struct pv_err err = {0};
    int r = chan_hello(&f->c, deadline(10), &err);
    if (r < 0) {
        fprintf(stderr, "chan_hello: %s\n", err.msg);
        teardown(state);
        return -1;
    }
    return 0;
}

/* Wait up to ms for pid to exit; returns true with its status. */
static bool wait_exit(pid_t pid, int ms, int *ret_status)
{
    for (int64_t end = now_ms() + ms; now_ms() < end; poll(NULL, 0, 5))
        if (waitpid(pid, ret_status, WNOHANG) == pid)
            return true;
    return false;
}

/* The exit status, or minus the signal that killed it. */
static int exit_code(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    /* Hanging up lets the agent kill what it still runs; SIGKILL if not. */
    chan_release(&f->c);
    if (f->pid > 0 && !wait_exit(f->pid, 5000, NULL)) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
    }
    free(f);
    return 0;
}

/* Read one whole frame from a raw (non-blocking) fd, within 10 s. */
static void read_frame(int fd, struct pv_hdr *h, struct buf *payload)
{
    uint8_t raw[PV_HDR_SIZE];
    size_t got = 0, want = PV_HDR_SIZE;
    int64_t end = now_ms() + 10000;
    while (got < want) {
        struct pollfd p = {fd, POLLIN, 0};
        assert_int_equal(poll(&p, 1, (int)MAX(end - now_ms(), 0)), 1);
        if (got < PV_HDR_SIZE) {
            ssize_t n = read(fd, raw + got, PV_HDR_SIZE - got);
            assert_in_range(n, 1, PV_HDR_SIZE);
            got += (size_t)n;
            if (got == PV_HDR_SIZE) {
                const char *why = NULL;
                assert_int_equal(pv_hdr_decode(raw, h, &why), 0);
                want += h->len;
                buf_reserve(payload, h->len);
            }
        } else {
            ssize_t n = read(fd, payload->data + payload->len, want - got);
            assert_in_range(n, 1, want - got);
            got += (size_t)n;
            payload->len += (size_t)n;
            payload->data[payload->len] = 0;
        }
    }
}

/* ---- Hello ---- */

static void test_agent_hello_ok(void **state)
{
    struct fx *f = *state;
    struct utsname u;
    assert_int_equal(uname(&u), 0);
    assert_non_null(f->c.agent_version);
    assert_int_not_equal(strlen(f->c.agent_version), 0);
    assert_string_equal(f->c.guest_os, "linux");
    assert_string_equal(f->c.kernel_release, u.release);
    assert_int_equal(f->c.features & (PV_FEAT_RUN | PV_FEAT_FILES), PV_FEAT_RUN | PV_FEAT_FILES);
    assert_int_equal(f->c.agent_pid, f->pid);
    assert_false(f->c.broken);
}

/* A Hello whose header carries another version gets a HelloErr that any
 * version can read (a version 1 header), echoing the id; a good Hello on
 * the same connection still succeeds afterwards. */
static void test_agent_hello_header_version(void **state)
{
    struct fx *f = *state;
    struct buf req = BUF_INIT, frame = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&req};
    pv_put_u32(&w, 99);
    struct pv_hdr h = {PV_MAGIC, 99, PV_HELLO, 0, 7, (uint32_t)req.len};
    uint8_t raw[PV_HDR_SIZE];
    pv_hdr_encode(&h, raw);
    buf_add(&frame, raw, sizeof(raw));
    buf_add(&frame, req.data, req.len);
    assert_int_equal(write_all(f->c.fd, frame.data, frame.len), 0);

    read_frame(f->c.fd, &h, &reply);
    assert_int_equal(h.type, PV_HELLO_ERR);
    assert_int_equal(h.version, PV_PROTO_VERSION);
    assert_int_equal(h.id, 7);
    struct pv_rd r;
    pv_rd_init(&r, reply.data, reply.len);
    assert_int_equal(pv_get_u32(&r), PV_PROTO_VERSION);
    assert_string_equal(pv_get_str(&r), "agent speaks protocol version " PV_STR(PV_PROTO_VERSION));
    assert_int_equal(pv_rd_done(&r), 0);

    struct pv_err err = {0};
    assert_int_equal(chan_hello(&f->c, deadline(10), &err), 0);
    assert_string_equal(f->c.guest_os, "linux");
    buf_release(&req);
    buf_release(&frame);
    buf_release(&reply);
}

/* A Hello asking for version 99 (in the payload) is answered with HelloErr,
 * which chan_hello turns into EPROTONOSUPPORT naming both versions. */
static void test_agent_hello_payload_version(void **state)
{
    struct fx *f = *state;
    struct buf req = BUF_INIT, frame = BUF_INIT;
    struct pv_wr w = {&req};
    pv_put_u32(&w, 99);
    pv_frame(&frame, PV_HELLO, 1, req.data, req.len);
    /* Queued before chan_hello's own Hello, so its HelloErr comes first. */
    assert_int_equal(write_all(f->c.fd, frame.data, frame.len), 0);

    struct pv_err err = {0};
    assert_int_equal(chan_hello(&f->c, deadline(10), &err), -EPROTONOSUPPORT);
    assert_int_equal(err.code, EPROTONOSUPPORT);
    assert_non_null(strstr(err.msg, "agent protocol version " PV_STR(PV_PROTO_VERSION)));
    assert_non_null(strstr(err.msg, "provium's " PV_STR(PV_PROTO_VERSION)));
    assert_true(f->c.broken);
    assert_null(f->c.agent_version);
    buf_release(&req);
    buf_release(&frame);
}

/* Before the handshake the agent skips bytes until a header and ignores
 * every request but Hello: the first frame back answers the Hello. */
static void test_agent_hello_after_noise(void **state)
{
    struct fx *f = *state;
    struct buf out = BUF_INIT, req = BUF_INIT, reply = BUF_INIT;
    /* ends in a false start: a magic cut short just before the real one */
    static const char junk[] = "\r\nlogin: \0\xff garbage PRV";
    buf_add(&out, junk, sizeof(junk) - 1);
    pv_frame(&out, PV_PING, 50, NULL, 0);
    struct pv_wr w = {&req};
    pv_put_u32(&w, PV_PROTO_VERSION);
    pv_frame(&out, PV_HELLO, 51, req.data, req.len);
    assert_int_equal(write_all(f->c.fd, out.data, out.len), 0);

    struct pv_hdr h;
    read_frame(f->c.fd, &h, &reply);
    assert_int_equal(h.type, PV_HELLO_OK);
    assert_int_equal(h.id, 51);

    /* A second Hello on the same connection is answered too. */
    struct pv_err err = {0};
    assert_int_equal(chan_hello(&f->c, deadline(10), &err), 0);
    assert_string_equal(f->c.guest_os, "linux");
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    buf_release(&out);
    buf_release(&req);
    buf_release(&reply);
}

/* vm_reset() handshakes again on the same chan: the HelloOk fields are
 * replaced (under ASan/LSan a leak of the first ones fails the binary). */
static void test_agent_hello_twice(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    assert_int_equal(chan_hello(&f->c, deadline(10), &err), 0);
    assert_string_equal(f->c.guest_os, "linux");
    assert_int_equal(f->c.agent_pid, f->pid);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
}

static void test_agent_ping(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    for (int i = 0; i < 3; i++) {
        struct buf r = BUF_INIT;
        buf_adds(&r, "stale");
        int ret = chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, &r, &err);
        assert_int_equal(ret, 0);
        assert_string_equal(r.data, "stale"); /* empty Ok payload appended */
        buf_release(&r);
    }
}

/* ---- Run ---- */

struct run_req {
    const char *const *argv;
    const char *const *env;
    bool env_clear;
    const char *cwd;
    const void *in;
    size_t in_len;
    uint32_t timeout_ms;
    uint64_t cap;
    int64_t deadline_ns; /* 0: 10 s from now */
    bool pty;
    uint32_t rows, cols;
};

struct run_res {
    struct pv_err err;
    struct buf out, errout;
    unsigned out_chunks, err_chunks, bad_chunks;
    uint32_t status, signal;
    int32_t exit_code;
    uint64_t out_total, err_total;
};

static void run_chunk(void *ctx, uint8_t stream, const void *p, size_t n)
{
    struct run_res *res = ctx;
    if (stream == PV_STDOUT) {
        buf_add(&res->out, p, n);
        res->out_chunks++;
    } else if (stream == PV_STDERR) {
        buf_add(&res->errout, p, n);
        res->err_chunks++;
    } else {
        res->bad_chunks++;
    }
}

/* The request layout of guest.c's guest_encode_run, written out here so
 * that the test does not share the encoder it checks against. Returns
 * chan_call's result; on 0 the decoded reply is in res. */
static int run(struct fx *f, const struct run_req *q, struct run_res *res)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    uint32_t argc = 0, envc = 0;
    while (q->argv[argc])
        argc++;
    while (q->env && q->env[envc])
        envc++;
    pv_put_u32(&w, (q->env_clear ? PV_RUN_ENV_CLEAR : 0) | (q->pty ? PV_RUN_PTY : 0));
    pv_put_u32(&w, argc);
    for (uint32_t i = 0; i < argc; i++)
        pv_put_str(&w, q->argv[i]);
    pv_put_u32(&w, envc);
    for (uint32_t i = 0; i < envc; i++)
        pv_put_str(&w, q->env[i]);
    pv_put_str(&w, q->cwd);
    pv_put_bytes(&w, q->in, q->in_len);
    pv_put_u32(&w, q->timeout_ms);
    pv_put_u64(&w, q->cap ? q->cap : 1 << 20);
    if (q->pty) {
        pv_put_u32(&w, q->rows);
        pv_put_u32(&w, q->cols);
    }
    int r = chan_call(&f->c, f->route, PV_RUN, &b, q->deadline_ns ? q->deadline_ns : deadline(10),
                      run_chunk, res, &reply, &res->err);
    if (r == 0) {
        struct pv_rd rd;
        pv_rd_init(&rd, reply.data, reply.len);
        res->status = pv_get_u32(&rd);
        res->exit_code = (int32_t)pv_get_u32(&rd);
        res->signal = pv_get_u32(&rd);
        res->out_total = pv_get_u64(&rd);
        res->err_total = pv_get_u64(&rd);
        assert_int_equal(pv_rd_done(&rd), 0);
    }
    assert_int_equal(res->bad_chunks, 0);
    buf_release(&b);
    buf_release(&reply);
    return r;
}

static void run_res_release(struct run_res *res)
{
    buf_release(&res->out);
    buf_release(&res->errout);
}

static void test_agent_run_exit_status(void **state)
{
    struct fx *f = *state;
    struct run_res res = {0};
    const char *argv[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    assert_int_equal(run(f, &(struct run_req){.argv = argv}, &res), 0);
    assert_int_equal(res.status, PV_EXITED);
    assert_int_equal(res.exit_code, 3);
    assert_int_equal(res.signal, 0);
    assert_string_equal(res.out.data, "out\n");
    assert_string_equal(res.errout.data, "err\n");
    assert_int_equal(res.out_total, 4);
    assert_int_equal(res.err_total, 4);
    assert_in_range(res.out_chunks, 1, 4);
    assert_in_range(res.err_chunks, 1, 4);
    run_res_release(&res);
}

/* PV_RUN_PTY: one terminal of the size asked for, the controlling one;
 * stderr goes to it too. */
static void test_agent_run_pty(void **state)
{
    struct fx *f = *state;
    struct run_res res = {0};
    const char *argv[] = {"/bin/sh", "-c", "tty; stty size; echo err >&2; test -t 0", NULL};
    assert_int_equal(run(f, &(struct run_req){.argv = argv, .pty = true, .rows = 30, .cols = 100},
                         &res),
                     0);
    assert_int_equal(res.status, PV_EXITED);
    assert_int_equal(res.exit_code, 0);
    assert_non_null(strstr(res.out.data, "/dev/pts/"));
    assert_non_null(strstr(res.out.data, "\n30 100\r\nerr\r\n"));
    assert_int_equal(res.errout.len, 0);
    run_res_release(&res);
}

/* stdin larger than a pipe buffer, so the agent feeds it in pieces while
 * cat's output flows back. */
static void test_agent_run_stdin(void **state)
{
    struct fx *f = *state;
    size_t n = 300000;
    _cleanup_free_ char *in = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        in[i] = (char)('a' + i % 23);
    struct run_res res = {0};
    const char *argv[] = {"cat", NULL};
    assert_int_equal(run(f, &(struct run_req){.argv = argv, .in = in, .in_len = n}, &res), 0);
    assert_int_equal(res.status, PV_EXITED);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(res.out_total, n);
    assert_int_equal(res.out.len, n);
    assert_memory_equal(res.out.data, in, n);
    run_res_release(&res);

    /* no stdin: cat sees EOF at once */
    struct run_res empty = {0};
    assert_int_equal(run(f, &(struct run_req){.argv = argv}, &empty), 0);
    assert_int_equal(empty.exit_code, 0);
    assert_int_equal(empty.out_total, 0);
    run_res_release(&empty);
}

static void test_agent_run_env(void **state)
{
    struct fx *f = *state;
    /* main() put PV_TEST_KEEP=kept and PV_TEST_X=old in our environment. */
    const char *argv[] = {"/bin/sh", "-c",
                          "echo \"$PV_TEST_KEEP $PV_TEST_X $PV_TEST_Y\"; "
                          "env | grep -c '^PV_TEST_X='",
                          NULL};
    const char *env[] = {"PV_TEST_X=new", "PV_TEST_Y=a=b c", NULL};
    struct run_res res = {0};
    assert_int_equal(run(f, &(struct run_req){.argv = argv, .env = env}, &res), 0);
    assert_int_equal(res.exit_code, 0);
    /* replaced, not duplicated */
    assert_string_equal(res.out.data, "kept new a=b c\n1\n");
    run_res_release(&res);

    const char *envargv[] = {"/usr/bin/env", NULL};
    const char *only[] = {"ONLY=1", "ALSO=two", NULL};
    struct run_res clr = {0};
    assert_int_equal(
        run(f, &(struct run_req){.argv = envargv, .env = only, .env_clear = true}, &clr), 0);
    assert_int_equal(clr.exit_code, 0);
    assert_string_equal(clr.out.data, "ONLY=1\nALSO=two\n");
    run_res_release(&clr);

    /* an entry without '=' is rejected */
    const char *bad[] = {"NOEQUALS", NULL};
    struct run_res inval = {0};
    assert_int_equal(run(f, &(struct run_req){.argv = envargv, .env = bad}, &inval), EINVAL);
    assert_int_equal(inval.err.code, EINVAL);
    run_res_release(&inval);
}

static void test_agent_run_cwd(void **state)
{
    struct fx *f = *state;
    const char *argv[] = {"/bin/pwd", "-P", NULL};
    struct run_res res = {0};
    assert_int_equal(run(f, &(struct run_req){.argv = argv, .cwd = tmpdir}, &res), 0);
    assert_int_equal(res.exit_code, 0);
    _cleanup_free_ char *want = xasprintf("%s\n", tmpdir);
    assert_string_equal(res.out.data, want);
    run_res_release(&res);

    _cleanup_free_ char *missing = tmp_path("no-such-dir");
    struct run_res bad = {0};
    assert_int_equal(run(f, &(struct run_req){.argv = argv, .cwd = missing}, &bad), ENOENT);
    assert_int_equal(bad.err.code, ENOENT);
    assert_non_null(strstr(bad.err.msg, missing));
    run_res_release(&bad);
}

/* The agent enforces timeout_ms; the host deadline (5 s) is only a guard,
 * so a timeout the agent ignores fails here as -ETIMEDOUT. */
static void test_agent_run_timeout(void **state)
{
    struct fx *f = *state;
    const char *argv[] = {"sleep", "10", NULL};
    struct run_res res = {0};
    int r = run(f, &(struct run_req){.argv = argv, .timeout_ms = 200, .deadline_ns = deadline(5)},
                &res);
    assert_int_equal(r, 0);
    assert_int_equal(res.status, PV_TIMED_OUT);
    assert_int_equal(res.exit_code, -2);
    assert_int_equal(res.signal, SIGKILL);
    run_res_release(&res);
}

static void test_agent_run_signalled(void **state)
{
    struct fx *f = *state;
    const char *argv[] = {"/bin/sh", "-c", "echo before; kill -9 $$", NULL};
    struct run_res res = {0};
    assert_int_equal(run(f, &(struct run_req){.argv = argv}, &res), 0);
    assert_int_equal(res.status, PV_SIGNALLED);
    assert_int_equal(res.exit_code, -1);
    assert_int_equal(res.signal, 9);
    assert_string_equal(res.out.data, "before\n");
    run_res_release(&res);
}

static void test_agent_run_missing_program(void **state)
{
    struct fx *f = *state;
    const char *argv[] = {"provium-no-such-program-xyz", "arg", NULL};
    struct run_res res = {0};
    assert_int_equal(run(f, &(struct run_req){.argv = argv}, &res), ENOENT);
    assert_int_equal(res.err.code, ENOENT);
    assert_non_null(strstr(res.err.msg, "provium-no-such-program-xyz"));
    run_res_release(&res);
    /* with a working directory that exists, still the program */
    struct run_res in_dir = {0};
    assert_int_equal(run(f, &(struct run_req){.argv = argv, .cwd = tmpdir}, &in_dir), ENOENT);
    if (!strstr(in_dir.err.msg, "provium-no-such-program-xyz"))
        fail_msg("the message names something else: %s", in_dir.err.msg);
    run_res_release(&in_dir);

    /* an empty argv is refused before any fork */
    const char *none[] = {NULL};
    struct run_res inval = {0};
    assert_int_equal(run(f, &(struct run_req){.argv = none}, &inval), EINVAL);
    run_res_release(&inval);
}

static void test_agent_run_output_cap(void **state)
{
    struct fx *f = *state;
    const char *argv[] = {"/bin/sh", "-c", "head -c 100000 /dev/zero; head -c 5000 /dev/zero >&2",
                          NULL};
    struct run_res res = {0};
    assert_int_equal(run(f, &(struct run_req){.argv = argv, .cap = 1000}, &res), 0);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(res.out.len, 1000);
    assert_int_equal(res.out_total, 100000);
    assert_int_equal(res.errout.len, 1000);
    assert_int_equal(res.err_total, 5000);
    run_res_release(&res);
}

/* A background child keeps stdout open; the reply must not wait for it. */
static void test_agent_run_background_child(void **state)
{
    struct fx *f = *state;
    const char *argv[] = {"/bin/sh", "-c", "sleep 30 & echo $$; echo done", NULL};
    struct run_res res = {0};
    int r = run(f, &(struct run_req){.argv = argv, .deadline_ns = deadline(5)}, &res);
    /* The command runs in its own session: its pid is the sleep's group. */
    int pgid = res.out.data ? atoi(res.out.data) : 0;
    if (pgid > 1)
        kill(-pgid, SIGKILL);
    assert_int_equal(r, 0);
    assert_int_equal(res.status, PV_EXITED);
    assert_int_equal(res.exit_code, 0);
    assert_non_null(strstr(res.out.data, "\ndone\n"));
    assert_in_range(pgid, 2, INT_MAX);
    run_res_release(&res);
}

struct pid_catch {
    struct buf out;
};

static void catch_chunk(void *ctx, uint8_t stream, const void *p, size_t n)
{
    struct pid_catch *pc = ctx;
    if (stream == PV_STDOUT)
        buf_add(&pc->out, p, n);
}

/* A call that misses its host deadline is cancelled in the guest: the
 * process is killed and the late replies do not confuse the next call. */
static void test_agent_run_cancel(void **state)
{
    struct fx *f = *state;
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, 0);
    pv_put_u32(&w, 3);
    pv_put_str(&w, "/bin/sh");
    pv_put_str(&w, "-c");
    pv_put_str(&w, "echo $$; exec sleep 30");
    pv_put_u32(&w, 0);
    pv_put_str(&w, "");
    pv_put_bytes(&w, NULL, 0);
    pv_put_u32(&w, 0);
    pv_put_u64(&w, 4096);
    struct pid_catch pc = {BUF_INIT};
    struct pv_err err = {0};
    int r =
        chan_call(&f->c, f->route, PV_RUN, &b, now_ns() + SEC / 2, catch_chunk, &pc, NULL, &err);
    assert_int_equal(r, -ETIMEDOUT);
    assert_int_equal(err.code, ETIMEDOUT);
    assert_false(f->c.broken);
    pid_t pid = pc.out.data ? atoi(pc.out.data) : 0;
    assert_in_range(pid, 2, INT_MAX);

    struct buf reply = BUF_INIT;
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, &reply, &err), 0);
    assert_int_equal(reply.len, 0);
    /* killed and reaped by the agent: the pid disappears */
    bool gone = false;
    for (int i = 0; i < 500 && !gone; i++, poll(NULL, 0, 10))
        gone = kill(pid, 0) < 0 && errno == ESRCH;
    if (!gone)
        kill(pid, SIGKILL);
    assert_true(gone);
    buf_release(&reply);
    buf_release(&pc.out);
    buf_release(&b);
}

/* ---- Files ---- */

static void data_chunk(void *ctx, uint8_t stream, const void *p, size_t n)
{
    struct run_res *res = ctx;
    if (stream == PV_DATA) {
        buf_add(&res->out, p, n);
        res->out_chunks++;
    } else {
        res->bad_chunks++;
    }
}

static int read_file_req(struct fx *f, const char *path, struct run_res *res, uint64_t *ret_total)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_str(&w, path);
    int r = chan_call(&f->c, f->route, PV_READ_FILE, &b, deadline(10), data_chunk, res, &reply,
                      &res->err);
    if (r == 0) {
        struct pv_rd rd;
        pv_rd_init(&rd, reply.data, reply.len);
        *ret_total = pv_get_u64(&rd);
        assert_int_equal(pv_rd_done(&rd), 0);
    }
    assert_int_equal(res->bad_chunks, 0);
    buf_release(&b);
    buf_release(&reply);
    return r;
}

static void test_agent_read_file(void **state)
{
    struct fx *f = *state;
    size_t n = 1 << 20;
    _cleanup_free_ char *data = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)(i * 7 ^ i >> 9);
    _cleanup_free_ char *path = tmp_path("big");
    assert_int_equal(write_file_atomic(path, data, n, 0644), 0);

    struct run_res res = {0};
    uint64_t total = 0;
    assert_int_equal(read_file_req(f, path, &res, &total), 0);
    assert_int_equal(total, n);
    assert_int_equal(res.out.len, n);
    assert_memory_equal(res.out.data, data, n);
    /* streamed, each chunk at most PV_CHUNK */
    assert_int_equal(res.out_chunks, (n + PV_CHUNK - 1) / PV_CHUNK);
    run_res_release(&res);

    _cleanup_free_ char *empty = tmp_path("empty");
    assert_int_equal(write_file_atomic(empty, "", 0, 0644), 0);
    struct run_res e = {0};
    total = 99;
    assert_int_equal(read_file_req(f, empty, &e, &total), 0);
    assert_int_equal(total, 0);
    assert_int_equal(e.out_chunks, 0);
    run_res_release(&e);

    _cleanup_free_ char *missing = tmp_path("missing");
    struct run_res m = {0};
    assert_int_equal(read_file_req(f, missing, &m, &total), ENOENT);
    assert_int_equal(m.err.code, ENOENT);
    run_res_release(&m);

    struct run_res d = {0};
    assert_int_equal(read_file_req(f, tmpdir, &d, &total), EISDIR);
    run_res_release(&d);
}

/* Opening a FIFO blocks until its other end opens; the agent is one
 * thread, so that must fail at once rather than wedge every later call
 * (Cancel included). The 3 s deadline is only a guard. */
static void test_agent_fifo_does_not_block(void **state)
{
    struct fx *f = *state;
    _cleanup_free_ char *fifo = tmp_path("fifo");
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);

    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_str(&w, fifo);
    struct pv_err err = {0};
    /* no writer: an empty read at once (not -ETIMEDOUT) */
    int r = chan_call(&f->c, f->route, PV_READ_FILE, &b, deadline(3), NULL, NULL, NULL, &err);
    assert_int_equal(r, 0);
    /* a writer holding it open with nothing written: EAGAIN, not a hang */
    int wfd = open(fifo, O_RDWR | O_CLOEXEC);
    assert_true(wfd >= 0);
    r = chan_call(&f->c, f->route, PV_READ_FILE, &b, deadline(3), NULL, NULL, NULL, &err);
    assert_int_equal(r, EAGAIN);
    /* with data: what is there now */
    assert_int_equal(write(wfd, "fifo", 4), 4);
    struct run_res got = {0};
    r = chan_call(&f->c, f->route, PV_READ_FILE, &b, deadline(3), data_chunk, &got, NULL, &err);
    assert_int_equal(r, 0);
    assert_int_equal(got.out.len, 4);
    run_res_release(&got);
    close(wfd);

    buf_consume(&b, b.len);
    pv_put_str(&w, fifo);
    pv_put_u32(&w, 0644);
    pv_put_u32(&w, 0);
    pv_put_bytes(&w, "x", 1);
    r = chan_call(&f->c, f->route, PV_WRITE_FILE, &b, deadline(3), NULL, NULL, NULL, &err);
    assert_in_range(r, 1, 4095);

    assert_int_equal(chan_call(&f->c, f->route, PV_PING, NULL, deadline(3), NULL, NULL, NULL, &err),
                     0);
    buf_release(&b);
}

static int write_file_req(struct fx *f, const char *path, uint32_t mode, uint32_t flags,
                          const char *data, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_str(&w, path);
    pv_put_u32(&w, mode);
    pv_put_u32(&w, flags);
    pv_put_bytes(&w, data, strlen(data));
    int r = chan_call(&f->c, f->route, PV_WRITE_FILE, &b, deadline(10), NULL, NULL, &reply, err);
    if (r == 0)
        assert_int_equal(reply.len, 0);
    buf_release(&b);
    buf_release(&reply);
    return r;
}

static void assert_file(const char *path, const char *content, mode_t perm)
{
    struct buf b = BUF_INIT;
    assert_int_equal(read_file(path, 1 << 20, &b), 0);
    assert_string_equal(b.data, content);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, perm);
    buf_release(&b);
}

static void test_agent_write_file(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    _cleanup_free_ char *path = tmp_path("written");
    unlink(path);
    const uint32_t CT = PV_WR_CREATE | PV_WR_TRUNC | PV_WR_MODE;

    /* create + trunc: exactly the mode asked for, despite the umask (022) */
    assert_int_equal(write_file_req(f, path, 0666, CT, "first\n", &err), 0);
    assert_file(path, "first\n", 0666);

    assert_int_equal(write_file_req(f, path, 0, PV_WR_CREATE | PV_WR_APPEND, "second\n", &err), 0);
    assert_file(path, "first\nsecond\n", 0666); /* no trunc: the mode is kept */

    /* trunc on an existing file replaces content and mode */
    assert_int_equal(write_file_req(f, path, 0750, CT, "third\n", &err), 0);
    assert_file(path, "third\n", 0750);

    /* neither trunc nor append: overwrite in place from the start */
    assert_int_equal(write_file_req(f, path, 0750, 0, "THI", &err), 0);
    assert_file(path, "THIrd\n", 0750);

    /* trunc without PV_WR_MODE: the existing mode stays (sysctls refuse chmod) */
    assert_int_equal(write_file_req(f, path, 0, PV_WR_CREATE | PV_WR_TRUNC, "fourth\n", &err), 0);
    assert_file(path, "fourth\n", 0750);

    /* no create: a missing file is an error */
    _cleanup_free_ char *missing = tmp_path("not-created");
    assert_int_equal(write_file_req(f, missing, 0644, PV_WR_TRUNC, "x", &err), ENOENT);
    assert_int_equal(err.code, ENOENT);
    struct stat st;
    assert_int_equal(stat(missing, &st), -1);

    /* create without trunc: open() applies the umask */
    _cleanup_free_ char *appended = tmp_path("appended");
    unlink(appended);
    assert_int_equal(write_file_req(f, appended, 0666, PV_WR_CREATE | PV_WR_APPEND, "a", &err), 0);
    assert_file(appended, "a", 0644);

    _cleanup_free_ char *nodir = tmp_path("no-such-dir/file");
    assert_int_equal(write_file_req(f, nodir, 0644, CT, "x", &err), ENOENT);
    assert_int_equal(write_file_req(f, tmpdir, 0644, CT, "x", &err), EISDIR);
}

struct stat_res {
    uint32_t type, perm, uid, gid, nlink;
    uint64_t size, ino;
    int64_t mtime_ns;
};

static int stat_req(struct fx *f, const char *path, uint32_t flags, struct stat_res *s,
                    struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_str(&w, path);
    pv_put_u32(&w, flags);
    int r = chan_call(&f->c, f->route, PV_STAT, &b, deadline(10), NULL, NULL, &reply, err);
    if (r == 0) {
        struct pv_rd rd;
        pv_rd_init(&rd, reply.data, reply.len);
        s->type = pv_get_u32(&rd);
        s->perm = pv_get_u32(&rd);
        s->size = pv_get_u64(&rd);
        s->mtime_ns = pv_get_i64(&rd);
        s->uid = pv_get_u32(&rd);
        s->gid = pv_get_u32(&rd);
        s->ino = pv_get_u64(&rd);
        s->nlink = pv_get_u32(&rd);
        assert_int_equal(pv_rd_done(&rd), 0);
    }
    buf_release(&b);
    buf_release(&reply);
    return r;
}

static void assert_stat_matches(const struct stat_res *s, const struct stat *st)
{
    assert_int_equal(s->perm, st->st_mode & 07777);
    assert_int_equal(s->size, st->st_size);
    assert_int_equal(s->mtime_ns, (int64_t)st->st_mtim.tv_sec * SEC + st->st_mtim.tv_nsec);
    assert_int_equal(s->uid, st->st_uid);
    assert_int_equal(s->gid, st->st_gid);
    assert_int_equal(s->ino, st->st_ino);
    assert_int_equal(s->nlink, st->st_nlink);
}

static void test_agent_stat(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    struct stat st;
    struct stat_res s;

    _cleanup_free_ char *file = tmp_path("statme");
    assert_int_equal(write_file_atomic(file, "12345", 5, 0640), 0);
    assert_int_equal(chmod(file, 0640), 0);
    assert_int_equal(stat_req(f, file, 0, &s, &err), 0);
    assert_int_equal(stat(file, &st), 0);
    assert_int_equal(s.type, PV_FT_FILE);
    assert_int_equal(s.perm, 0640);
    assert_int_equal(s.size, 5);
    assert_stat_matches(&s, &st);

    assert_int_equal(stat_req(f, tmpdir, 0, &s, &err), 0);
    assert_int_equal(stat(tmpdir, &st), 0);
    assert_int_equal(s.type, PV_FT_DIR);
    assert_stat_matches(&s, &st);

    _cleanup_free_ char *link = tmp_path("link");
    unlink(link);
    assert_int_equal(symlink("statme", link), 0);
    assert_int_equal(stat_req(f, link, PV_STAT_NOFOLLOW, &s, &err), 0);
    assert_int_equal(lstat(link, &st), 0);
    assert_int_equal(s.type, PV_FT_SYMLINK);
    assert_int_equal(s.size, strlen("statme"));
    assert_stat_matches(&s, &st);

    /* followed, the link is its target */
    assert_int_equal(stat_req(f, link, 0, &s, &err), 0);
    assert_int_equal(s.type, PV_FT_FILE);
    assert_int_equal(s.size, 5);

    assert_int_equal(stat_req(f, "/dev/null", 0, &s, &err), 0);
    assert_int_equal(s.type, PV_FT_CHAR);

    _cleanup_free_ char *missing = tmp_path("missing");
    assert_int_equal(stat_req(f, missing, 0, &s, &err), ENOENT);
    assert_int_equal(err.code, ENOENT);
    assert_non_null(strstr(err.msg, strerror(ENOENT)));
}

/* ---- Refusals and malformed requests ---- */

static void test_agent_poweroff_refused(void **state)
{
    struct fx *f = *state;
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, PV_POWER_OFF);
    struct pv_err err = {0};
    assert_int_equal(
        chan_call(&f->c, f->route, PV_POWEROFF, &b, deadline(10), NULL, NULL, NULL, &err), EPERM);
    assert_int_equal(err.code, EPERM);
    assert_string_equal(err.msg, strerror(EPERM));
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    buf_release(&b);
}

static void test_agent_unknown_type(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    assert_int_equal(chan_call(&f->c, f->route, 0x77, NULL, deadline(10), NULL, NULL, NULL, &err),
                     ENOSYS);
    assert_int_equal(err.code, ENOSYS);
    assert_string_equal(err.msg, "unknown request type 119");
    /* a reply type is not a request either */
    assert_int_equal(chan_call(&f->c, f->route, PV_OK, NULL, deadline(10), NULL, NULL, NULL, &err),
                     ENOSYS);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
}

static void expect_ebadmsg(struct fx *f, uint16_t type, const void *p, size_t n, const char *what)
{
    struct buf b = BUF_INIT;
    buf_add(&b, p, n);
    struct pv_err err = {0};
    int r = chan_call(&f->c, f->route, type, &b, deadline(10), NULL, NULL, NULL, &err);
    assert_int_equal(r, EBADMSG);
    assert_int_equal(err.code, EBADMSG);
    assert_non_null(strstr(err.msg, what));
    /* the connection is still good */
    assert_false(f->c.broken);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    buf_release(&b);
}

/* Syscall request: nr, args, bufs, ptrs (buf, slot), nested (parent, child, offset). */
static void sys_req(struct buf *b, int64_t nr, const int64_t *args, uint32_t nargs,
                    const char *const *bufs, const size_t *lens, uint32_t nbufs,
                    const uint32_t *ptrs, uint32_t nptrs, const uint32_t *nested, uint32_t nnested)
{
    struct pv_wr w = {b};
    pv_put_u64(&w, (uint64_t)nr);
    pv_put_u32(&w, nargs);
    for (uint32_t i = 0; i < nargs; i++)
        pv_put_i64(&w, args[i]);
    pv_put_u32(&w, nbufs);
    for (uint32_t i = 0; i < nbufs; i++)
        pv_put_bytes(&w, bufs[i], lens[i]);
    pv_put_u32(&w, nptrs);
    for (uint32_t i = 0; i < 2 * nptrs; i++)
        pv_put_u32(&w, ptrs[i]);
    pv_put_u32(&w, nnested);
    for (uint32_t i = 0; i < 3 * nnested; i++)
        pv_put_u32(&w, nested[i]);
}

static void test_agent_syscall(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    struct buf b = BUF_INIT, reply = BUF_INIT;
    /* getpid answers with the agent's own pid */
    sys_req(&b, SYS_getpid, NULL, 0, NULL, NULL, 0, NULL, 0, NULL, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_SYSCALL, &b, deadline(10), NULL, NULL, &reply, &err), 0);
    struct pv_rd rd;
    pv_rd_init(&rd, reply.data, reply.len);
    assert_int_equal(pv_get_i64(&rd), f->pid);
    assert_int_equal(pv_get_u32(&rd), 0);
    assert_int_equal(pv_get_u32(&rd), 0);
    assert_int_equal(pv_rd_done(&rd), 0);

    /* a buffer by address: read() fills it; a wild pointer is EFAULT */
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(write(p[1], "xyz", 3), 3);
    buf_consume(&b, b.len);
    buf_consume(&reply, reply.len);
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)getpid(), p[0]);
    const char *bufs[] = {path, "\0\0\0"};
    size_t lens[] = {strlen(path) + 1, 3};
    int64_t oargs[] = {0, 0};
    uint32_t optr[] = {0, 0};
    sys_req(&b, SYS_open, oargs, 2, bufs, lens, 1, optr, 1, NULL, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_SYSCALL, &b, deadline(10), NULL, NULL, &reply, &err), 0);
    pv_rd_init(&rd, reply.data, reply.len);
    int64_t fd = pv_get_i64(&rd);
    assert_true(fd >= 0);
    buf_consume(&b, b.len);
    buf_consume(&reply, reply.len);
    int64_t rargs[] = {fd, 0, 3};
    uint32_t rptr[] = {0, 1};
    sys_req(&b, SYS_read, rargs, 3, &bufs[1], &lens[1], 1, rptr, 1, NULL, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_SYSCALL, &b, deadline(10), NULL, NULL, &reply, &err), 0);
    pv_rd_init(&rd, reply.data, reply.len);
    assert_int_equal(pv_get_i64(&rd), 3);
    assert_int_equal(pv_get_u32(&rd), 0);
    assert_int_equal(pv_get_u32(&rd), 1);
    size_t n;
    const char *out = pv_get_bytes(&rd, &n);
    assert_int_equal(n, 3);
    assert_memory_equal(out, "xyz", 3);
    buf_consume(&b, b.len);
    buf_consume(&reply, reply.len);
    assert_int_equal(write(p[1], "abc", 3), 3); /* so read() gets as far as the copy */
    int64_t wargs[] = {fd, 0x10, 3};
    sys_req(&b, SYS_read, wargs, 3, NULL, NULL, 0, NULL, 0, NULL, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_SYSCALL, &b, deadline(10), NULL, NULL, &reply, &err), 0);
    pv_rd_init(&rd, reply.data, reply.len);
    assert_int_equal(pv_get_i64(&rd), -1);
    assert_int_equal(pv_get_u32(&rd), EFAULT);
    close(p[0]);
    close(p[1]);
    buf_release(&b);
    buf_release(&reply);
}

static void test_agent_syscall_bad_shapes(void **state)
{
    struct fx *f = *state;
    struct buf b = BUF_INIT;
    const char *bufs[] = {"abcd"};
    size_t lens[] = {4};
    int64_t args[7] = {0};
    /* seven arguments */
    sys_req(&b, SYS_getpid, args, 7, NULL, NULL, 0, NULL, 0, NULL, 0);
    expect_ebadmsg(f, PV_SYSCALL, b.data, b.len, "out of range");
    /* a pointer to a buffer that does not exist */
    buf_consume(&b, b.len);
    uint32_t ptr[] = {3, 0};
    sys_req(&b, SYS_getpid, NULL, 0, bufs, lens, 1, ptr, 1, NULL, 0);
    expect_ebadmsg(f, PV_SYSCALL, b.data, b.len, "out of range");
    /* a nested pointer that does not fit in its parent */
    buf_consume(&b, b.len);
    uint32_t nested[] = {0, 0, 1};
    sys_req(&b, SYS_getpid, NULL, 0, bufs, lens, 1, NULL, 0, nested, 1);
    expect_ebadmsg(f, PV_SYSCALL, b.data, b.len, "out of range");
    buf_release(&b);
}

static void test_agent_mem(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, 0);
    pv_put_u32(&w, 8);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_READ_MEM, &b, deadline(10), NULL, NULL, &reply, &err),
        EFAULT);
    buf_consume(&b, b.len);
    pv_put_u64(&w, 8);
    pv_put_bytes(&w, "x", 1);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_WRITE_MEM, &b, deadline(10), NULL, NULL, NULL, &err), EFAULT);
    /* the agent is unharmed */
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    buf_release(&b);
    buf_release(&reply);
}

static void test_agent_malformed_request(void **state)
{
    struct fx *f = *state;
    expect_ebadmsg(f, PV_PING, "x", 1,
                   "malformed Ping request: trailing bytes after the last field");
    expect_ebadmsg(f, PV_STAT,
                   "\x03\x00\x00\x00"
                   "abc\0\0\0\0",
                   11, "malformed Stat request: malformed string field");
    expect_ebadmsg(f, PV_READ_FILE,
                   "\x10\x00\x00\x00"
                   "/etc",
                   8, "malformed ReadFile request: byte field longer than the frame");
    /* argc of a million in a 12-byte payload: refused before allocating */
    expect_ebadmsg(f, PV_RUN,
                   "\x00\x00\x00\x00"
                   "\x40\x42\x0f\x00"
                   "abcd",
                   12, "malformed Run request: item count larger than the frame");
    expect_ebadmsg(f, PV_POWEROFF, "\x00\x00", 2, "malformed PowerOff request: truncated u32");
    expect_ebadmsg(f, PV_CANCEL, "", 0, "malformed Cancel request: truncated u32");
    /* Freshen: refused whole, before the clock or any file is touched */
    expect_ebadmsg(f, PV_FRESHEN, "\0\0\0\0", 4, "malformed Freshen request: truncated u64");
    expect_ebadmsg(f, PV_FRESHEN,
                   "\0\0\0\0\0\0\0\0"
                   "\0\0\0\0"
                   "\xff\xff\xff\x7f",
                   16, "malformed Freshen request: item count larger than the frame");
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_i64(&w, 0);
    pv_put_bytes(&w, NULL, 0);
    pv_put_u32(&w, 1);
    pv_put_str(&w, "relative/path");
    pv_put_u32(&w, 0644);
    pv_put_bytes(&w, "x", 1);
    struct pv_err err = {0};
    assert_int_equal(
        chan_call(&f->c, f->route, PV_FRESHEN, &b, deadline(10), NULL, NULL, NULL, &err), EINVAL);
    pv_put_u32(&w, 0); /* trailing bytes */
    expect_ebadmsg(f, PV_FRESHEN, b.data, b.len,
                   "malformed Freshen request: trailing bytes after the last field");
    buf_release(&b);
}

/* ---- NetConfig ---- */

static void net_req(struct buf *b, const void *mac, size_t maclen, uint32_t ipv4, uint32_t prefix,
                    uint32_t flags, uint32_t wait_ms)
{
    struct pv_wr w = {b};
    pv_put_bytes(&w, mac, maclen);
    pv_put_u32(&w, ipv4);
    pv_put_u32(&w, prefix);
    pv_put_u32(&w, flags);
    pv_put_u32(&w, wait_ms);
}

/* No NIC of this host has the (locally administered) MAC used here, so
 * nothing of the host's network is touched: the request waits and gives
 * up, and the agent serves other requests meanwhile. */
static void test_agent_net_config(void **state)
{
    struct fx *f = *state;
    static const uint8_t mac[6] = {0x02, 0x70, 0x76, 0x00, 0x00, 0x01};
    struct pv_err err = {0};
    struct buf b = BUF_INIT;
    /* fields checked before anything is looked up */
    net_req(&b, mac, 5, 0, 0, PV_NET_UP, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_NET_CONFIG, &b, deadline(10), NULL, NULL, NULL, &err),
        EINVAL);
    assert_string_equal(err.msg, "the MAC is 5 bytes, not 6");
    buf_release(&b);
    net_req(&b, mac, 6, htonl(0x0a000001), 33, PV_NET_UP, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_NET_CONFIG, &b, deadline(10), NULL, NULL, NULL, &err),
        EINVAL);
    assert_string_equal(err.msg, "prefix 33 is over 32");
    buf_release(&b);
    net_req(&b, mac, 6, 0, 0, 1 << 1, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_NET_CONFIG, &b, deadline(10), NULL, NULL, NULL, &err),
        EINVAL);
    assert_string_equal(err.msg, "unknown flags 0x2");
    buf_release(&b);
    expect_ebadmsg(f, PV_NET_CONFIG, "\x06\0\0\0\x02\x70\x76\0\0\x01\0\0\0\0", 14,
                   "malformed NetConfig request: truncated u32");

    /* a MAC no interface has: ETIMEDOUT after wait_ms, the loop serving meanwhile */
    net_req(&b, mac, 6, htonl(0x0a000001), 24, PV_NET_UP, 300);
    int64_t t0 = now_ms();
    uint32_t id = chan_start(&f->c, f->route, PV_NET_CONFIG, &b, deadline(10), NULL, NULL, &err);
    assert_true(id != 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    assert_true(now_ms() - t0 < 300);
    assert_int_equal(chan_wait(&f->c, id, deadline(10), NULL, &err), ETIMEDOUT);
    assert_true(now_ms() - t0 >= 300);
    assert_non_null(strstr(err.msg, "no network interface with MAC 02:70:76:00:00:01 appeared in "
                                    "300 ms"));
    buf_release(&b);

    /* a cancelled wait is forgotten: no answer comes for it */
    net_req(&b, mac, 6, 0, 0, 0, 200);
    id = chan_start(&f->c, f->route, PV_NET_CONFIG, &b, deadline(10), NULL, NULL, &err);
    chan_drop(&f->c, id);
    poll(NULL, 0, 300);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    assert_false(f->c.broken);
    buf_release(&b);
}

/* ---- NetRoute ---- */

static void route_req(struct buf *b, const char *dst, uint32_t prefix, const char *gw,
                      uint32_t flags)
{
    struct in_addr d, g;
    assert_int_equal(inet_pton(AF_INET, dst, &d), 1);
    assert_int_equal(inet_pton(AF_INET, gw, &g), 1);
    struct pv_wr w = {b};
    pv_put_u32(&w, d.s_addr);
    pv_put_u32(&w, prefix);
    pv_put_u32(&w, g.s_addr);
    pv_put_u32(&w, flags);
}

/* The decoder on its own: what it accepts, as the host's encoder writes it. */
/* A handshake waited for in slices (vm_handshake's, to watch the console
 * meanwhile) backs off across them: a guest that takes seconds to open its
 * port is not sent a Hello every slice. Five 60 ms slices send at 0, 100 and
 * at most 300 ms, not one or two per slice. */
static void test_hello_backs_off_across_slices(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    struct chan c;
    chan_init(&c, sv[0], -1);
    for (int i = 0; i < 5; i++) {
        struct pv_err err = {0};
        assert_int_equal(chan_hello(&c, now_ns() + 60 * 1000000LL, &err), -ETIMEDOUT);
    }
    char buf[4096];
    ssize_t n = recv(sv[1], buf, sizeof(buf), MSG_DONTWAIT);
    size_t hellos = n > 0 ? (size_t)n / (PV_HDR_SIZE + 4) : 0;
    assert_true(hellos >= 1 && hellos < 5);
    chan_release(&c);
    close(sv[1]);
}

static void test_net_route_decode(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    guest_encode_net_route(
        &b, &(struct guest_net_route){htonl(0x0a630000), 16, htonl(0x0a000202), true});
    struct pv_rd r;
    pv_rd_init(&r, b.data, b.len);
    struct net_route_req req;
    char why[128] = "";
    assert_int_equal(net_route_decode(&r, &req, why, sizeof(why)), 0);
    assert_int_equal(req.dst, htonl(0x0a630000));
    assert_int_equal(req.prefix, 16);
    assert_int_equal(req.gateway, htonl(0x0a000202));
    assert_int_equal(req.flags, PV_ROUTE_DELETE);
    buf_release(&b);
    /* the default route; a host route (/32) */
    route_req(&b, "0.0.0.0", 0, "10.66.1.254", 0);
    pv_rd_init(&r, b.data, b.len);
    assert_int_equal(net_route_decode(&r, &req, why, sizeof(why)), 0);
    assert_int_equal(req.dst, 0);
    assert_int_equal(req.flags, 0);
    buf_release(&b);
    route_req(&b, "10.99.1.7", 32, "10.66.1.254", 0);
    pv_rd_init(&r, b.data, b.len);
    assert_int_equal(net_route_decode(&r, &req, why, sizeof(why)), 0);
    buf_release(&b);
    /* the reply carries nothing */
    struct pv_err err = {0};
    assert_int_equal(guest_decode_net_route(&b, &err), 0);
    buf_add(&b, "x", 1);
    assert_int_equal(guest_decode_net_route(&b, &err), -EBADMSG);
    assert_string_equal(err.msg, "malformed NetRoute reply from the agent");
    buf_release(&b);
}

static void expect_route_einval(struct fx *f, const char *dst, uint32_t prefix, const char *gw,
                                uint32_t flags, const char *msg)
{
    struct buf b = BUF_INIT;
    route_req(&b, dst, prefix, gw, flags);
    struct pv_err err = {0};
    assert_int_equal(
        chan_call(&f->c, f->route, PV_NET_ROUTE, &b, deadline(10), NULL, NULL, NULL, &err), EINVAL);
    assert_string_equal(err.msg, msg);
    buf_release(&b);
}

/* Only requests the decoder refuses are sent: a valid one would change
 * this machine's routes (the guest's are tests/vm/net_config.test.lua's). */
static void test_agent_net_route(void **state)
{
    struct fx *f = *state;
    expect_route_einval(f, "10.99.0.0", 33, "10.0.2.2", 0, "prefix 33 is over 32");
    expect_route_einval(f, "10.99.1.0", 16, "10.0.2.2", 0,
                        "destination 10.99.1.0/16 has bits set past the prefix (the network is "
                        "10.99.0.0/16)");
    expect_route_einval(f, "10.0.2.2", 0, "10.0.2.2", 0,
                        "destination 10.0.2.2/0 has bits set past the prefix (the network is "
                        "0.0.0.0/0)");
    expect_route_einval(f, "10.99.0.0", 16, "0.0.0.0", PV_ROUTE_DELETE, "the gateway is 0.0.0.0");
    expect_route_einval(f, "10.99.0.0", 16, "10.0.2.2", 1 << 1, "unknown flags 0x2");
    expect_route_einval(f, "10.99.0.0", 16, "10.0.2.2", 0xffffffff, "unknown flags 0xfffffffe");
    expect_ebadmsg(f, PV_NET_ROUTE, "\x0a\x63\0\0\x10\0\0\0\x0a\0\x02\x02", 12,
                   "malformed NetRoute request: truncated u32");
    expect_ebadmsg(f, PV_NET_ROUTE, "\x0a\x63\0\0\x10\0\0\0\x0a\0\x02\x02\0\0\0\0\0", 17,
                   "malformed NetRoute request: trailing bytes after the last field");
}

/* After the handshake, a non-resync agent treats garbage as fatal: the
 * serve loop ends with -EBADMSG and the host sees the peer gone. */
static void test_agent_garbage_ends_session(void **state)
{
    struct fx *f = *state;
    static const char garbage[] = "this is not a frame header at all";
    assert_int_equal(write_all(f->c.fd, garbage, sizeof(garbage) - 1), 0);

    int status = 0;
    bool exited = wait_exit(f->pid, 10000, &status);
    assert_true(exited);
    f->pid = 0;
    assert_int_equal(exit_code(status), EBADMSG);

    struct pv_err err = {0};
    int r = chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err);
    assert_int_equal(r, -EPIPE);
    assert_int_equal(err.code, EPIPE);
    assert_true(f->c.broken);
    /* the write or the read notices first, depending on buffering */
    if (!strstr(err.msg, "closed the connection"))
        assert_string_equal(err.msg, "write to the agent: Broken pipe");

    /* and stays broken */
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), -EPIPE);
}

/* Spawn argv (no stdin); returns the handle. */
static uint64_t spawn(struct fx *f, const char *const *argv)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    uint32_t argc = 0;
    while (argv[argc])
        argc++;
    pv_put_u32(&w, 0);
    pv_put_u32(&w, argc);
    for (uint32_t i = 0; i < argc; i++)
        pv_put_str(&w, argv[i]);
    pv_put_u32(&w, 0);
    pv_put_str(&w, "");
    pv_put_bytes(&w, NULL, 0);
    pv_put_u32(&w, 0);
    pv_put_u64(&w, 1 << 20);
    struct pv_err err = {0};
    assert_int_equal(
        chan_call(&f->c, f->route, PV_SPAWN, &b, deadline(10), NULL, NULL, &reply, &err), 0);
    struct pv_rd rd;
    pv_rd_init(&rd, reply.data, reply.len);
    uint64_t h = pv_get_u64(&rd);
    assert_true(pv_get_u32(&rd) > 0);
    assert_int_equal(pv_rd_done(&rd), 0);
    buf_release(&b);
    buf_release(&reply);
    return h;
}

/* A request made of a handle and one more u32 (Wait, Signal). */
static struct buf handle_req(uint64_t h, uint32_t v)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, h);
    pv_put_u32(&w, v);
    return b;
}

/* Spawn, feed stdin, follow stdout with a Tail while a Ping goes through,
 * then Wait: the kept output comes first, then the status. */
static void test_agent_spawn_stdin_tail_wait(void **state)
{
    struct fx *f = *state;
    uint64_t h = spawn(f, (const char *const[]){"cat", NULL});
    struct pv_err err = {0};
    struct run_res tail = {0};
    struct buf b = handle_req(h, PV_STDOUT), t = BUF_INIT;
    struct pv_wr w = {&t};
    pv_put_u32(&w, PV_TAIL_PROC);
    buf_add(&t, b.data, b.len);
    buf_release(&b);
    uint32_t tid = chan_start(&f->c, f->route, PV_TAIL, &t, deadline(10), data_chunk, &tail, &err);
    assert_true(tid > 0);
    buf_release(&t);

    w.b = &b;
    pv_put_u64(&w, h);
    pv_put_bytes(&w, "hi\n", 3);
    pv_put_u32(&w, 1); /* close stdin after */
    struct buf reply = BUF_INIT;
    assert_int_equal(
        chan_call(&f->c, f->route, PV_STDIN, &b, deadline(10), NULL, NULL, &reply, &err), 0);
    buf_release(&b);
    buf_release(&reply);
    /* the tail ends (Ok) when cat's stdout closes; Pings go through meanwhile */
    while (!chan_find(&f->c, tid)->done)
        assert_int_equal(
            chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    assert_int_equal(chan_wait(&f->c, tid, deadline(10), NULL, &err), 0);
    assert_int_equal(tail.out.len, 3);
    assert_int_equal(tail.bad_chunks, 0);

    struct run_res res = {0};
    b = handle_req(h, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_WAIT, &b, deadline(10), run_chunk, &res, &reply, &err), 0);
    assert_int_equal(res.out.len, 3);
    assert_memory_equal(res.out.data, "hi\n", 3);
    struct pv_rd rd;
    pv_rd_init(&rd, reply.data, reply.len);
    assert_int_equal(pv_get_u32(&rd), PV_EXITED);
    assert_int_equal(pv_get_u32(&rd), 0);
    buf_release(&reply);
    /* the handle is gone after a Wait */
    assert_int_equal(chan_call(&f->c, f->route, PV_WAIT, &b, deadline(10), NULL, NULL, NULL, &err),
                     ESRCH);
    buf_release(&b);
    run_res_release(&res);
    run_res_release(&tail);
}

/* Signal ends a process; a Wait with a timeout kills one that stays. */
static void test_agent_spawn_signal_and_timeout(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    uint64_t h = spawn(f, (const char *const[]){"sleep", "30", NULL});
    struct buf b = handle_req(h, SIGTERM), reply = BUF_INIT;
    assert_int_equal(
        chan_call(&f->c, f->route, PV_SIGNAL, &b, deadline(10), NULL, NULL, NULL, &err), 0);
    buf_release(&b);
    b = handle_req(h, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_WAIT, &b, deadline(10), NULL, NULL, &reply, &err), 0);
    struct pv_rd rd;
    pv_rd_init(&rd, reply.data, reply.len);
    assert_int_equal(pv_get_u32(&rd), PV_SIGNALLED);
    assert_int_equal((int32_t)pv_get_u32(&rd), -1);
    assert_int_equal(pv_get_u32(&rd), SIGTERM);
    buf_release(&b);
    buf_release(&reply);

    h = spawn(f, (const char *const[]){"sleep", "30", NULL});
    /* a window size is for a process with a terminal (PV_RUN_PTY) */
    b = handle_req(h, 24);
    pv_put_u32(&(struct pv_wr){&b}, 80);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PTY_RESIZE, &b, deadline(10), NULL, NULL, NULL, &err),
        ENOTTY);
    buf_release(&b);
    b = handle_req(h, 100);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_WAIT, &b, deadline(10), NULL, NULL, &reply, &err), 0);
    pv_rd_init(&rd, reply.data, reply.len);
    assert_int_equal(pv_get_u32(&rd), PV_TIMED_OUT);
    buf_release(&b);
    buf_release(&reply);
    /* an unknown handle */
    b = handle_req(9999, SIGTERM);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_SIGNAL, &b, deadline(10), NULL, NULL, NULL, &err), ESRCH);
    buf_release(&b);
}

/* A Tail of a file sends what is appended; Cancel ends it. */
static void test_agent_tail_file(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    _cleanup_free_ char *path = tmp_path("tail");
    FILE *fp = fopen(path, "w");
    fputs("old\n", fp);
    fflush(fp);
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, PV_TAIL_PATH);
    pv_put_str(&w, path);
    pv_put_i64(&w, 0);
    pv_put_u32(&w, 1); /* from the end */
    struct run_res got = {0};
    uint32_t id = chan_start(&f->c, f->route, PV_TAIL, &b, deadline(10), data_chunk, &got, &err);
    assert_true(id > 0);
    /* the agent has started the tail once a later Ping is answered */
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    fputs("new\n", fp);
    fclose(fp);
    while (got.out.len < 4)
        assert_true(chan_pump(&f->c, deadline(10), &err) > 0);
    assert_memory_equal(got.out.data, "new\n", 4);
    chan_drop(&f->c, id); /* sends Cancel */
    assert_null(chan_find(&f->c, id));
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    /* a missing file is an error at once */
    buf_consume(&b, b.len);
    pv_put_u32(&w, PV_TAIL_PATH);
    pv_put_str(&w, "/nonexistent");
    pv_put_i64(&w, 0);
    pv_put_u32(&w, 0);
    assert_int_equal(chan_call(&f->c, f->route, PV_TAIL, &b, deadline(10), NULL, NULL, NULL, &err),
                     ENOENT);
    buf_release(&b);
    run_res_release(&got);
}

/* ---- Workers ---- */

/* Start a worker; flags/uid/gid as PV_WORKER takes them. Returns the
 * chan_call result, with the handle in *handle. */
static int worker_start(struct fx *f, uint32_t flags, uint32_t uid, uint64_t caps, const char *cwd,
                        uint64_t *handle, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, flags);
    pv_put_u32(&w, uid);
    pv_put_u32(&w, uid);
    pv_put_u32(&w, 1); /* one supplementary group */
    pv_put_u32(&w, 4242);
    pv_put_u64(&w, caps);
    pv_put_str(&w, cwd);
    pv_put_u32(&w, 1);
    pv_put_str(&w, "PV_WORKER_ENV=yes");
    int r = chan_call(&f->c, f->route, PV_WORKER, &b, deadline(10), NULL, NULL, &reply, err);
    if (r == 0) {
        struct pv_rd rd;
        pv_rd_init(&rd, reply.data, reply.len);
        *handle = pv_get_u64(&rd);
        assert_true(pv_get_u32(&rd) > 0);
        assert_int_equal(pv_rd_done(&rd), 0);
    }
    buf_release(&b);
    buf_release(&reply);
    return r;
}

static int worker_end(struct fx *f, uint64_t handle)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, handle);
    struct pv_err err = {0};
    assert_int_equal(
        chan_call(&f->c, f->route, PV_WORKER_END, &b, deadline(10), NULL, NULL, &reply, &err), 0);
    struct pv_rd rd;
    pv_rd_init(&rd, reply.data, reply.len);
    int status = (int)pv_get_u32(&rd);
    assert_int_equal(pv_rd_done(&rd), 0);
    buf_release(&b);
    buf_release(&reply);
    return status;
}

/* A worker runs commands with its own credentials, cwd and environment,
 * concurrently with the agent; ending it ends its processes. */
static void test_agent_worker(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    bool root = geteuid() == 0;
    uint64_t h = 0;
    uint32_t flags =
        root ? PV_WK_UID | PV_WK_GID | PV_WK_GROUPS | PV_WK_NO_NEW_PRIVS : PV_WK_NO_NEW_PRIVS;
    _cleanup_free_ char *cwd = tmp_path("worker-cwd");
    assert_int_equal(mkdir(cwd, 0755), 0);
    assert_int_equal(chmod(tmpdir, 0711), 0); /* nobody may pass */
    assert_int_equal(worker_start(f, flags, 65534, 0, cwd, &h, &err), 0);
    assert_true(h > 0);

    f->route = h;
    struct run_res res = {0};
    const char *script = "echo $(id -u) $(id -g) $(id -G) $PV_WORKER_ENV $(pwd);"
                         "grep NoNewPrivs /proc/self/status";
    assert_int_equal(
        run(f, &(struct run_req){(const char *const[]){"sh", "-c", script, NULL}, .cwd = ""}, &res),
        0);
    if (root) {
        _cleanup_free_ char *want =
            xasprintf("65534 65534 65534 4242 yes %s\nNoNewPrivs:\t1\n", cwd);
        assert_string_equal(res.out.data, want);
    } else {
        assert_non_null(strstr(res.out.data, "yes"));
        assert_non_null(strstr(res.out.data, "NoNewPrivs:\t1"));
    }
    run_res_release(&res);

    /* a process of the worker, and the agent answering meanwhile */
    uint64_t p = spawn(f, (const char *const[]){"sleep", "30", NULL});
    f->route = 0;
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    /* its handles live in the worker, not in the agent */
    struct buf b = handle_req(p, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_SIGNAL, &b, deadline(10), NULL, NULL, NULL, &err), ESRCH);
    f->route = h;
    /* handle 0: every process of the worker */
    buf_release(&b);
    b = handle_req(0, SIGTERM);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_SIGNAL, &b, deadline(10), NULL, NULL, NULL, &err), 0);
    buf_release(&b);
    b = handle_req(p, 0);
    struct buf reply = BUF_INIT;
    assert_int_equal(
        chan_call(&f->c, f->route, PV_WAIT, &b, deadline(10), NULL, NULL, &reply, &err), 0);
    struct pv_rd rd;
    pv_rd_init(&rd, reply.data, reply.len);
    assert_int_equal(pv_get_u32(&rd), PV_SIGNALLED);
    buf_release(&b);
    buf_release(&reply);
    /* a worker starts no workers */
    uint64_t h2;
    assert_int_equal(worker_start(f, 0, 0, 0, "", &h2, &err), EPERM);
    f->route = 0;
    int status = worker_end(f, h);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* gone: the agent says so */
    f->route = h;
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), ESRCH);
    f->route = 0;
}

/* The agent's state (a blocked or ignored signal, a descriptor without
 * FD_CLOEXEC) never reaches a program it runs, nor a worker's. */
static int setup_dirty(void **state)
{
    sigset_t usr1, old;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_BLOCK, &usr1, &old);
    signal(SIGUSR2, SIG_IGN);
    int inherited = open("/dev/null", O_RDONLY);
    int r = setup(state);
    sigprocmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR2, SIG_DFL);
    if (inherited >= 0)
        close(inherited);
    return inherited >= 3 ? r : -1;
}

/* A field of /proc/<pid>/status text, as a number in base. */
static unsigned long long status_field(const char *status, const char *name, int base)
{
    _cleanup_free_ char *key = xasprintf("\n%s:", name);
    const char *p = status ? strstr(status, key) : NULL;
    if (!p)
        fail_msg("no %s in:\n%s", name, status ? status : "(nothing)");
    return strtoull(p + strlen(key), NULL, base);
}

/* Run cat /proc/self/status and ls /proc/self/fd where f->c.route says;
 * check a clean start: in a session of its own, nothing blocked or
 * ignored, only 0, 1, 2 (and ls's own 3). */
static void check_clean_child(struct fx *f)
{
    struct run_res st = {0}, fds = {0};
    assert_int_equal(
        run(f,
            &(struct run_req){(const char *const[]){"cat", "/proc/self/status", NULL}, .cwd = ""},
            &st),
        0);
    assert_int_equal(
        run(f, &(struct run_req){(const char *const[]){"ls", "/proc/self/fd", NULL}, .cwd = ""},
            &fds),
        0);
    unsigned long long blocked = status_field(st.out.data, "SigBlk", 16);
    unsigned long long ignored = status_field(st.out.data, "SigIgn", 16);
    unsigned long long sid = status_field(st.out.data, "NSsid", 10);
    unsigned long long pgid = status_field(st.out.data, "NSpgid", 10);
    unsigned long long pid = status_field(st.out.data, "Pid", 10);
    _cleanup_free_ char *listed = xstrdup(fds.out.data ? fds.out.data : "");
    run_res_release(&st);
    run_res_release(&fds);
    assert_int_equal(blocked, 0);
    assert_int_equal(ignored, 0);
    assert_int_equal(sid, pid);
    assert_int_equal(pgid, pid);
    assert_string_equal(listed, "0\n1\n2\n3\n");
}

static void test_agent_run_clean_child(void **state)
{
    struct fx *f = *state;
    check_clean_child(f);

    struct pv_err err = {0};
    uint64_t h = 0;
    assert_int_equal(worker_start(f, 0, 0, 0, "", &h, &err), 0);
    f->route = h;
    check_clean_child(f);
    f->route = 0;
    int status = worker_end(f, h);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* A worker that dies fails what it had in flight with ECHILD and how it
 * ended; one that writes garbage on its socket is killed, the agent lives. */
static void test_agent_worker_dies(void **state)
{
    struct fx *f = *state;
    struct pv_err err = {0};
    uint64_t h = 0;
    assert_int_equal(worker_start(f, 0, 0, 0, "", &h, &err), 0);
    f->route = h;
    /* a read on a pipe that never comes, then kill the worker from inside */
    struct run_res res = {0};
    uint32_t id = chan_start(&f->c, f->route, PV_RUN, NULL, deadline(10), run_chunk, &res, &err);
    assert_true(id > 0); /* malformed: answered with EBADMSG by the worker */
    assert_int_equal(chan_wait(&f->c, id, deadline(10), NULL, &err), EBADMSG);
    uint64_t p = spawn(f, (const char *const[]){"sleep", "30", NULL});
    struct buf b = handle_req(p, 0), reply = BUF_INIT;
    id = chan_start(&f->c, f->route, PV_WAIT, &b, deadline(10), NULL, NULL, &err);
    buf_release(&b);
    assert_int_equal(
        run(f,
            &(struct run_req){(const char *const[]){"sh", "-c", "kill -9 $PPID", NULL}, .cwd = ""},
            &res),
        ECHILD);
    assert_int_equal(chan_wait(&f->c, id, deadline(10), &reply, &err), ECHILD);
    assert_non_null(strstr(err.msg, "killed by signal 9"));
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), ECHILD);
    run_res_release(&res);
    f->route = 0;
    int status = worker_end(f, h);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    /* garbage from a worker (a raw write on its own socket): it is killed,
     * the agent carries on */
    assert_int_equal(worker_start(f, 0, 0, 0, "", &h, &err), 0);
    f->route = h;
    const char *junk[] = {"this is not a frame, not at all"};
    size_t junk_len[] = {strlen(junk[0])};
    int64_t wargs[] = {0, 0, (int64_t)junk_len[0]};
    uint32_t wptr[] = {0, 1};
    sys_req(&b, SYS_write, wargs, 3, junk, junk_len, 1, wptr, 1, NULL, 0);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_SYSCALL, &b, deadline(10), NULL, NULL, NULL, &err), ECHILD);
    buf_release(&b);
    f->route = 0;
    assert_false(f->c.broken);
    assert_int_equal(
        chan_call(&f->c, f->route, PV_PING, NULL, deadline(10), NULL, NULL, NULL, &err), 0);
    status = worker_end(f, h);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    buf_release(&reply);
}

/* The peer closing our end is a clean end of session for the agent. */
static void test_agent_hangup_ends_session(void **state)
{
    struct fx *f = *state;
    close(f->c.fd);
    f->c.fd = -1;
    int status = 0;
    bool exited = wait_exit(f->pid, 10000, &status);
    assert_true(exited);
    f->pid = 0;
    assert_int_equal(exit_code(status), 0);
}

static int group_setup(void **state)
{
    char dir[] = "/tmp/test_agent.XXXXXX";
    if (!mkdtemp(dir) || !realpath(dir, tmpdir))
        return -1;
    umask(022);
    signal(SIGPIPE, SIG_IGN); /* a write to a dead agent is -EPIPE, not death */
    setenv("PV_TEST_KEEP", "kept", 1);
    setenv("PV_TEST_X", "old", 1);
    return 0;
}

static int group_teardown(void **state)
{
    return rm_rf(tmpdir) < 0 ? -1 : 0;
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define T_RAW(fn) cmocka_unit_test_setup_teardown(fn, setup_raw, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_agent_hello_ok),
        T_RAW(test_agent_hello_header_version),
        T_RAW(test_agent_hello_payload_version),
        T_RAW(test_agent_hello_after_noise),
        T(test_agent_hello_twice),
        T(test_agent_ping),
        T(test_agent_run_exit_status),
        T(test_agent_run_pty),
        T(test_agent_run_stdin),
        T(test_agent_run_env),
        T(test_agent_run_cwd),
        T(test_agent_run_timeout),
        T(test_agent_run_signalled),
        T(test_agent_run_missing_program),
        T(test_agent_run_output_cap),
        T(test_agent_run_background_child),
        T(test_agent_run_cancel),
        T(test_agent_read_file),
        T(test_agent_fifo_does_not_block),
        T(test_agent_write_file),
        T(test_agent_stat),
        T(test_agent_poweroff_refused),
        T(test_agent_unknown_type),
        T(test_agent_syscall),
        T(test_agent_syscall_bad_shapes),
        T(test_agent_spawn_stdin_tail_wait),
        T(test_agent_spawn_signal_and_timeout),
        T(test_agent_tail_file),
        T(test_agent_worker),
        T(test_agent_worker_dies),
        cmocka_unit_test_setup_teardown(test_agent_run_clean_child, setup_dirty, teardown),
        T(test_agent_mem),
        T(test_agent_malformed_request),
        T(test_agent_net_config),
        cmocka_unit_test(test_net_route_decode),
        cmocka_unit_test(test_hello_backs_off_across_slices),
        T(test_agent_net_route),
        T(test_agent_garbage_ends_session),
        T(test_agent_hangup_ends_session),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
