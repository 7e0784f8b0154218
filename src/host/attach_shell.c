/* `provium attach NAME` with no command: an interactive shell on a
 * pseudo-terminal in the guest (docs/debugging.md#provium-attach).
 *
 * The client asks with 'R' {"vm": NAME, "shell": {"rows", "cols", "term"}}
 * and an empty 'I', puts its terminal in raw mode, then sends 'I' frames as
 * the user types and 'W' frames (rows and cols, u16 little-endian each)
 * when its window changes. The keeper starts `sh -l` on a PTY (guest_spawn
 * with .pty), tails its output to the client as 'O' frames as it comes, and
 * ends with 'X' (the exit status) or 'F'. */
#include <ctype.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>

#include "attach_priv.h"
#include "guest.h"
#include "vm.h"

/* What the user types, per frame at most. */
#define SHELL_INPUT_MAX (64u << 10)
/* What the guest keeps of the shell's output for a late reader: the tail
 * starts at once, so this only covers the first prompt. */
#define SHELL_OUTPUT_CAP (64u << 10)
/* How often the keeper asks whether the shell has ended. */
#define SHELL_STATUS_MS 250

/* ---- the keeper ---- */

struct shell {
    int cfd, sfd;
    bool client_gone;
};

/* The shell's output, to the client as it comes. */
static void to_client(void *ctx, uint8_t stream, const void *p, size_t n)
{
    struct shell *s = ctx;
    if (!s->client_gone && attach_send_frame(s->cfd, 'O', p, n, attach_io_deadline(), s->sfd) < 0)
        s->client_gone = true;
}

/* A TERM value worth passing on: short, and letters, digits, '-', '.', '+', '_'. */
static const char *term_of(const json_t *sh)
{
    const char *t = json_string_value(json_object_get(sh, "term"));
    if (!t || !*t || strlen(t) > 64)
        return "linux";
    for (const char *c = t; *c; c++)
        if (!isalnum((unsigned char)*c) && !strchr("-.+_", *c))
            return "linux";
    return t;
}

static uint16_t size_of(const json_t *sh, const char *key)
{
    json_int_t v = json_integer_value(json_object_get(sh, key));
    return v > 0 && v <= 0xffff ? (uint16_t)v : 0;
}

/* One frame from the client: its keys to the shell's stdin, a new window
 * size. -errno when the client is gone or broke the protocol. */
static int from_client(struct shell *s, const struct target *t, uint64_t h, struct buf *f)
{
    char type;
    int r = attach_recv_frame(s->cfd, &type, f, SHELL_INPUT_MAX, attach_io_deadline(), s->sfd);
    if (r < 0)
        return r;
    struct pv_err err = {0};
    uint32_t accepted;
    const uint8_t *w = (const uint8_t *)f->data;
    if (type == 'I' && f->len)
        guest_stdin(t, h, f->data, f->len, false, &accepted, &err); /* ended: the status says */
    else if (type == 'W' && f->len == 4)
        guest_pty_resize(t, h, (uint16_t)(w[0] | w[1] << 8), (uint16_t)(w[2] | w[3] << 8), &err);
    else if (type != 'I')
        return -EPROTO;
    return 0;
}

/* Until the shell ends: NULL; or why it was killed. */
static const char *shell_loop(struct shell *s, struct vm *vm, const struct target *t, uint64_t h,
                              struct pv_err *err)
{
    struct buf f = BUF_INIT;
    const char *why = NULL;
    int64_t next_status = 0;
    while (!why) {
        struct pollfd p[3] = {{s->sfd, POLLIN, 0}, {s->cfd, POLLIN, 0}, {vm->chan.fd, POLLIN, 0}};
        poll(p, 3, SHELL_STATUS_MS);
        struct guest_proc_status st;
        if (p[0].revents)
            why = "provium is ending (Ctrl-C): the shell was killed";
        else if (p[2].revents && vm_pump(vm, 0.001, err) < 0)
            why = err->msg;
        else if (s->client_gone || (p[1].revents && from_client(s, t, h, &f) < 0))
            why = "the client left";
        else if (now_ns() >= next_status) {
            if (guest_proc_status(t, h, &st, err) < 0)
                why = err->msg;
            else if (!st.running)
                break;
            next_status = now_ns() + SHELL_STATUS_MS * 1000000LL;
        }
    }
    buf_release(&f);
    return why;
}

void attach_shell_keep(int cfd, int sfd, struct vm *vm, const json_t *req)
{
    const json_t *sh = json_object_get(req, "shell");
    char term[80];
    snprintf(term, sizeof(term), "TERM=%s", term_of(sh));
    const char *argv[] = {"/bin/sh", "-l", NULL}, *env[] = {term, NULL};
    struct guest_run_req r = {.argv = argv,
                              .env = env,
                              .output_cap = SHELL_OUTPUT_CAP,
                              .pty = true,
                              .rows = size_of(sh, "rows"),
                              .cols = size_of(sh, "cols")};
    struct target t = {vm, 0};
    struct pv_err err = {0};
    struct shell s = {cfd, sfd, false};
    uint64_t h;
    uint32_t pid;
    if (guest_spawn(&t, &r, &h, &pid, &err) < 0) {
        attach_send_frame(cfd, 'F', err.msg, strlen(err.msg), attach_io_deadline(), sfd);
        return;
    }
    struct guest_tail_req tr = {.kind = PV_TAIL_PROC, .fd_or_handle = h, .stream = PV_STDOUT};
    uint32_t tail = guest_tail(&t, &tr, to_client, &s, &err);
    const char *why = tail ? shell_loop(&s, vm, &t, h, &err) : err.msg;
    char msg[sizeof(err.msg)];
    snprintf(msg, sizeof(msg), "%s", why ? why : "");
    struct buf end = BUF_INIT;
    if (why)
        guest_signal(&t, h, SIGKILL, &err);
    else if (tail) /* the rest of the output: the tail ends with the terminal */
        guest_finish(&t, tail, GUEST_SHORT_S, &end, &err);
    if (tail)
        guest_drop(&t, tail);
    struct guest_run_result res = {0};
    int rc = guest_wait(&t, h, 0, &res, &err);
    if (why || rc < 0) {
        const char *m = why ? msg : err.msg;
        attach_send_frame(cfd, 'F', m, strlen(m), attach_io_deadline(), sfd);
    } else {
        attach_send_exit(cfd, sfd, &res);
    }
    buf_release(&end);
    guest_run_result_release(&res);
}

/* ---- the client ---- */

json_t *attach_shell_request(const char *name)
{
    struct winsize ws = {0};
    ioctl(0, TIOCGWINSZ, &ws);
    const char *term = getenv("TERM");
    return json_pack("{s:s, s:{s:i, s:i, s:s}}", "vm", name, "shell", "rows", ws.ws_row, "cols",
                     ws.ws_col, "term", term ? term : "");
}

static int send_size(int fd)
{
    struct winsize ws = {0};
    if (ioctl(0, TIOCGWINSZ, &ws) < 0)
        return 0;
    uint8_t w[4] = {(uint8_t)ws.ws_row, (uint8_t)(ws.ws_row >> 8), (uint8_t)ws.ws_col,
                    (uint8_t)(ws.ws_col >> 8)};
    return attach_send_frame(fd, 'W', w, sizeof(w), 0, -1);
}

/* The keeper's next frame: -1 to go on, else the exit code (message in m). */
static int keeper_frame(int fd, struct buf *f, struct buf *m)
{
    char type;
    if (attach_recv_frame(fd, &type, f, ATTACH_FRAME_MAX, 0, -1) < 0) {
        buf_adds(m, "the provium that keeps the VM went away");
        return 2;
    }
    if (type == 'O') {
        write_all(1, f->data, f->len);
        return -1;
    }
    if (type == 'X')
        return attach_exit_of(f, NULL);
    if (type == 'F')
        buf_add_escaped(m, f->data, f->len);
    else
        buf_adds(m, "a malformed reply");
    return 2;
}

/* Keys to the keeper, its output to the terminal, until the shell ends. */
static int client_loop(int fd, int sfd, struct buf *m)
{
    struct buf f = BUF_INIT;
    int code = -1;
    bool in_open = true;
    char keys[4096];
    while (code < 0) {
        struct pollfd p[3] = {{fd, POLLIN, 0}, {sfd, POLLIN, 0}, {in_open ? 0 : -1, POLLIN, 0}};
        if (poll(p, 3, -1) < 0 && errno != EINTR) {
            buf_addf(m, "poll: %s", strerror(errno));
            code = 2;
        } else if (p[0].revents) {
            code = keeper_frame(fd, &f, m);
        } else if (p[1].revents) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si) && si.ssi_signo != SIGWINCH) {
                buf_addf(m, "ended by %s; the shell in the guest is killed",
                         strsignal((int)si.ssi_signo));
                code = 2;
            } else if (send_size(fd) < 0) {
                code = keeper_frame(fd, &f, m);
            }
        } else if (p[2].revents) {
            ssize_t n = read(0, keys, sizeof(keys));
            if (n <= 0)
                in_open = false; /* the terminal is gone: the output may still come */
            else if (attach_send_frame(fd, 'I', keys, (size_t)n, 0, -1) < 0)
                code = keeper_frame(fd, &f, m);
        }
    }
    buf_release(&f);
    return code;
}

int attach_shell_client(int fd, const char *name)
{
    struct termios saved, raw;
    if (tcgetattr(0, &saved) < 0) {
        fprintf(stderr, "provium attach: vm `%s`: the terminal: %s\n", name, strerror(errno));
        return 2;
    }
    sigset_t mask, old;
    sigemptyset(&mask);
    sigaddset(&mask, SIGWINCH);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, &old);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    raw = saved;
    cfmakeraw(&raw);
    tcsetattr(0, TCSADRAIN, &raw);
    struct buf m = BUF_INIT;
    int code = sfd < 0 ? 2 : client_loop(fd, sfd, &m);
    if (sfd < 0)
        buf_addf(&m, "signalfd: %s", strerror(errno));
    tcsetattr(0, TCSADRAIN, &saved);
    if (m.len)
        fprintf(stderr, "\nprovium attach: vm `%s`: %s\n", name, m.data);
    if (sfd >= 0)
        close(sfd);
    sigprocmask(SIG_SETMASK, &old, NULL);
    buf_release(&m);
    return code;
}
