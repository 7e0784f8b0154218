/* --keep-on-failure's keeper and `provium attach`, its client (attach.h,
 * docs/debugging.md#keeping-the-vms-of-a-failing-file).
 *
 * The wire between them, over a SOCK_STREAM Unix socket, is frames: a type
 * byte, a length (u32, little-endian) and that many bytes. Client to
 * keeper: 'R' (the request, JSON: {"vm": NAME, "argv": [...]} or
 * {"vm": NAME, "lua": CHUNK}) then 'I' (the command's stdin, maybe empty).
 * Keeper to client: 'O' (stdout), 'E' (stderr), then 'X' (JSON: the exit
 * status), or 'F' (why it could not be done) alone. An interactive shell
 * ({"vm": NAME, "shell": {...}}) goes on with more frames: attach_shell.c. */
#include "attach_priv.h"

#include <dirent.h>
#include <editline/readline.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "barrier.h"
#include "guest.h"
#include "runner.h"
#include "symbolize.h"
#include "vm.h"

/* Words of a command at most. */
#define ATTACH_ARGV_MAX 4096
/* A registry entry's size at most. */
#define ATTACH_ENTRY_MAX (64u << 10)

bool attach_keep_on_failure;

void attach_gdb_line(const struct vm *vm, const struct vm_boot *b, struct buf *out)
{
    _cleanup_free_ char *abs = realpath(b->kernel, NULL);
    _cleanup_free_ char *vmlinux = sym_vmlinux(b->vmlinux, abs ? abs : b->kernel, NULL);
    buf_addf(out, "gdb -ex 'target remote :%d' ", vm->gdb_port);
    buf_add_shell_word(out, vmlinux ? vmlinux : abs ? abs : b->kernel);
    if (!vmlinux)
        buf_adds(out, " (symbols need a vmlinux: none beside this kernel)");
}

/* ---- frames ---- */

/* Wait until fd is ready for ev, until deadline (0: none), watching sfd
 * (-1: none): 0, -ETIMEDOUT, or -EINTR when a signal is pending on sfd. */
static int wait_fd(int fd, short ev, int64_t deadline, int sfd)
{
    for (;;) {
        struct pollfd p[2] = {{fd, ev, 0}, {sfd, POLLIN, 0}};
        int ms = -1;
        if (deadline) {
            int64_t left = (deadline - now_ns()) / 1000000;
            if (left <= 0)
                return -ETIMEDOUT;
            ms = (int)MIN(left, INT_MAX);
        }
        int n = poll(p, sfd >= 0 ? 2 : 1, ms);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (sfd >= 0 && p[1].revents)
            return -EINTR;
        if (p[0].revents)
            return 0;
    }
}

/* Send or receive n bytes: 0, or -errno (-EPIPE: the other end closed). */
static int xfer(int fd, bool out, void *p, size_t n, int64_t deadline, int sfd)
{
    char *c = p;
    while (n) {
        ssize_t k = out ? send(fd, c, n, MSG_NOSIGNAL) : recv(fd, c, n, 0);
        if (k == 0)
            return -EPIPE;
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && errno != EAGAIN)
            return -errno;
        if (k < 0) {
            int r = wait_fd(fd, out ? POLLOUT : POLLIN, deadline, sfd);
            if (r < 0)
                return r;
            continue;
        }
        c += k;
        n -= (size_t)k;
    }
    return 0;
}

int attach_send_frame(int fd, char type, const void *p, size_t n, int64_t deadline, int sfd)
{
    uint8_t h[5] = {(uint8_t)type, (uint8_t)n, (uint8_t)(n >> 8), (uint8_t)(n >> 16),
                    (uint8_t)(n >> 24)};
    int r = xfer(fd, true, h, sizeof(h), deadline, sfd);
    return r < 0 || !n ? r : xfer(fd, true, (void *)p, n, deadline, sfd);
}

/* The next frame into b (emptied first), at most max bytes: 0, or -errno
 * (-EMSGSIZE: longer). */
int attach_recv_frame(int fd, char *type, struct buf *b, size_t max, int64_t deadline, int sfd)
{
    uint8_t h[5];
    int r = xfer(fd, false, h, sizeof(h), deadline, sfd);
    if (r < 0)
        return r;
    size_t n = h[1] | (size_t)h[2] << 8 | (size_t)h[3] << 16 | (size_t)h[4] << 24;
    if (n > max)
        return -EMSGSIZE;
    *type = (char)h[0];
    buf_consume(b, b->len);
    buf_reserve(b, n + 1);
    if ((r = xfer(fd, false, b->data, n, deadline, sfd)) < 0)
        return r;
    b->len = n;
    b->data[n] = 0;
    return 0;
}

/* ---- the keeper ---- */

struct keeper {
    struct vm **vms;
    size_t n;
    int sfd; /* SIGINT, SIGTERM, SIGHUP */
    attach_eval_fn eval;
    void *ctx;
};

int64_t attach_io_deadline(void)
{
    return now_ns() + ATTACH_IO_MS * 1000000LL;
}

static void fail(const struct keeper *k, int cfd, const char *fmt, ...) PV_PRINTF(3, 4);
static void fail(const struct keeper *k, int cfd, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    attach_send_frame(cfd, 'F', msg, strlen(msg), attach_io_deadline(), k->sfd);
}

/* Until process h ends: NULL; or why it was killed (a signal, the client
 * gone, the VM gone: then err says why). */
static const char *watch(const struct keeper *k, int cfd, const struct target *t, uint64_t h,
                         struct pv_err *err)
{
    for (int ms = 5;; ms = MIN(ms * 2, 100)) {
        struct pollfd p[2] = {{k->sfd, POLLIN, 0}, {cfd, POLLIN, 0}};
        poll(p, 2, ms);
        const char *why = p[0].revents   ? "provium is ending (Ctrl-C): the command was killed"
                          : p[1].revents ? "the client left"
                                         : NULL;
        struct guest_proc_status st;
        if (why) {
            guest_signal(t, h, SIGKILL, err);
            return why;
        }
        if (guest_proc_status(t, h, &st, err) < 0)
            return err->msg;
        if (!st.running)
            return NULL;
    }
}

/* Run the command argv on vm with stdin in, and send its output and status. */
static void run_argv(const struct keeper *k, int cfd, struct vm *vm, json_t *argv,
                     const struct buf *in)
{
    size_t n = json_array_size(argv);
    if (n == 0 || n > ATTACH_ARGV_MAX)
        return fail(k, cfd, "a command has 1 to %d words, not %zu", ATTACH_ARGV_MAX, n);
    _cleanup_free_ const char **av = xcalloc(n + 1, sizeof(*av));
    for (size_t i = 0; i < n; i++)
        if (!(av[i] = json_string_value(json_array_get(argv, i))))
            return fail(k, cfd, "a malformed request (argv %zu is not a string)", i);
    struct target t = {vm, 0};
    struct pv_err err = {0};
    struct guest_run_req req = {.argv = av, .stdin_data = in->data, .stdin_len = in->len};
    uint64_t h;
    uint32_t pid;
    uint32_t accepted;
    if (guest_spawn(&t, &req, &h, &pid, &err) < 0)
        return fail(k, cfd, "%s", err.msg);
    /* stdin ends after what was sent (a process that ended already: no matter) */
    guest_stdin(&t, h, NULL, 0, true, &accepted, &err);
    const char *stop = watch(k, cfd, &t, h, &err);
    struct guest_run_result res = {0};
    int r = guest_wait(&t, h, 0, &res, &err);
    int64_t dl = attach_io_deadline();
    if (stop)
        fail(k, cfd, "%s", stop);
    else if (r < 0)
        fail(k, cfd, "%s", err.msg);
    else if (!attach_send_frame(cfd, 'O', res.out.data, res.out.len, dl, k->sfd) &&
             !attach_send_frame(cfd, 'E', res.err.data, res.err.len, dl, k->sfd))
        attach_send_exit(cfd, k->sfd, &res);
    guest_run_result_release(&res);
}

void attach_send_exit(int cfd, int sfd, const struct guest_run_result *res)
{
    json_t *x = json_pack("{s:s, s:i, s:i, s:I, s:I}", "status",
                          res->status == PV_EXITED ? "exited" : "signalled", "code", res->exit_code,
                          "signal", res->signal, "out_total", (json_int_t)res->out_total,
                          "err_total", (json_int_t)res->err_total);
    _cleanup_free_ char *s = json_dumps(x, JSON_COMPACT);
    json_decref(x);
    attach_send_frame(cfd, 'X', s, strlen(s), attach_io_deadline(), sfd);
}

/* A Lua chunk in the keeper's state (--lua). */
static void run_lua(const struct keeper *k, int cfd, size_t i, const char *chunk, size_t len)
{
    struct buf out = BUF_INIT;
    bool error = false, more = false;
    if (!k->eval)
        buf_adds(&out, "no Lua state to run it in");
    else
        k->eval(k->ctx, i, chunk, len, &out, &error, &more);
    char x[64];
    snprintf(x, sizeof(x), "{\"code\":%d,\"more\":%s}", error ? 1 : 0, more ? "true" : "false");
    int64_t dl = attach_io_deadline();
    if (attach_send_frame(cfd, error ? 'E' : 'O', out.data, out.len, dl, k->sfd) == 0)
        attach_send_frame(cfd, 'X', x, strlen(x), dl, k->sfd);
    buf_release(&out);
}

/* The names of the kept VMs, for messages. */
static void kept_names(const struct keeper *k, struct buf *b)
{
    for (size_t i = 0; i < k->n; i++)
        buf_addf(b, "%s`%s`", i ? ", " : "", k->vms[i]->name);
}

/* One client: its request, carried out. */
static void serve(const struct keeper *k, int cfd)
{
    struct ucred cr;
    socklen_t crlen = sizeof(cr);
    if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) < 0 || cr.uid != geteuid())
        return; /* someone else's process: not a word */
    int64_t dl = attach_io_deadline();
    struct buf req = BUF_INIT, in = BUF_INIT, names = BUF_INIT;
    char type = 0, type2 = 0;
    json_t *j = NULL;
    if (attach_recv_frame(cfd, &type, &req, ATTACH_REQ_MAX, dl, k->sfd) < 0 || type != 'R' ||
        attach_recv_frame(cfd, &type2, &in, ATTACH_STDIN_MAX, dl, k->sfd) < 0 || type2 != 'I')
        goto out; /* a client that does not speak the protocol, or too slowly */
    j = json_loadb(req.data, req.len, 0, NULL);
    const char *name = json_string_value(json_object_get(j, "vm"));
    json_t *argv = json_object_get(j, "argv"), *lua = json_object_get(j, "lua"),
           *shell = json_object_get(j, "shell");
    size_t i = 0;
    while (name && i < k->n && strcmp(k->vms[i]->name, name))
        i++;
    kept_names(k, &names);
    if (!name || (!json_is_array(argv) && !json_is_string(lua) && !json_is_object(shell)))
        fail(k, cfd, "a malformed request");
    else if (i == k->n)
        fail(k, cfd, "this provium (pid %d) keeps no VM named `%s` (it keeps %s)", (int)getpid(),
             name, names.data);
    else if (k->vms[i]->state != VM_BOOTED)
        fail(k, cfd, "vm `%s` is no longer running (%s): nothing to attach to", name,
             k->vms[i]->exit_reason ? k->vms[i]->exit_reason : vm_state_name(k->vms[i]->state));
    else if (json_is_string(lua))
        run_lua(k, cfd, i, json_string_value(lua), json_string_length(lua));
    else if (json_is_object(shell))
        attach_shell_keep(cfd, k->sfd, k->vms[i], j);
    else
        run_argv(k, cfd, k->vms[i], argv, &in);
out:
    json_decref(j);
    buf_release(&req);
    buf_release(&in);
    buf_release(&names);
}

/* Listen on path (0600): the socket, or -1 with err. */
static int listen_at(const char *path, struct pv_err *err)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(a.sun_path)) {
        pv_err_set(err, ENAMETOOLONG,
                   "--keep-on-failure: the socket path %s is longer than %zu bytes: set TMPDIR "
                   "to a shorter directory",
                   path, sizeof(a.sun_path) - 1);
        return -1;
    }
    strcpy(a.sun_path, path);
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    unlink(path);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(path, 0600) < 0 ||
        listen(fd, 16) < 0) {
        pv_err_set(err, errno, "--keep-on-failure: cannot listen on %s: %s", path, strerror(errno));
        return -1;
    }
    return steal_fd(&fd);
}

/* The registry entry of kept VM i: 0, or -errno. */
static int write_entry(const struct keeper *k, size_t i, const char *dir, const char *sock,
                       const char *why)
{
    json_t *e = json_pack("{s:s, s:i, s:i, s:s, s:s, s:s, s:i}", "name", k->vms[i]->name, "pid",
                          (int)getpid(), "run", barrier_fd >= 0 ? (int)getppid() : (int)getpid(),
                          "file", vm_globals.file ? vm_globals.file : "", "socket", sock, "why",
                          why, "gdb_port", k->vms[i]->gdb_port);
    _cleanup_free_ char *s = json_dumps(e, JSON_COMPACT);
    _cleanup_free_ char *path = xasprintf("%s/%d-%zu.json", dir, (int)getpid(), i);
    json_decref(e);
    return write_file_atomic(path, s, strlen(s), 0600);
}

/* Tell the user how to attach: through the runner (a packet 'K' on the
 * barrier socket, which also lifts the file's --timeout), else on stderr. */
static void announce(const struct keeper *k, const char *why)
{
    struct buf t = BUF_INIT, e = BUF_INIT;
    int run = barrier_fd >= 0 ? (int)getppid() : (int)getpid();
    buf_addf(&t,
             "Kprovium: %s: %s\nprovium: --keep-on-failure: its VMs stay up until Ctrl-C (run %d):",
             vm_globals.file ? vm_globals.file : "(file)", why, run);
    for (size_t i = 0; i < k->n; i++) {
        buf_addf(&t, "\n    vm `%s`: provium attach ", k->vms[i]->name);
        buf_add_shell_word(&t, k->vms[i]->name);
        buf_adds(&t, "   (a shell; -- COMMAND... runs one; --lua: a Lua prompt)");
        if (k->vms[i]->gdb_port) {
            buf_addf(&t, "\n    vm `%s`: ", k->vms[i]->name);
            attach_gdb_line(k->vms[i], &k->vms[i]->plan, &t);
        }
    }
    buf_add_escaped(&e, t.data, MIN(t.len, 4000));
    if (barrier_fd < 0 || send(barrier_fd, e.data, e.len, MSG_NOSIGNAL) < 0)
        fprintf(stderr, "provium: %s\n", e.data + 1);
    buf_release(&t);
    buf_release(&e);
}

/* Accept and serve clients until a signal. */
static void keep_loop(const struct keeper *k, int lfd)
{
    for (;;) {
        struct pollfd p[2] = {{k->sfd, POLLIN, 0}, {lfd, POLLIN, 0}};
        if (poll(p, 2, 1000) < 0 && errno != EINTR)
            return;
        if (p[0].revents)
            return;
        if (p[1].revents & POLLIN) {
            int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (c >= 0) {
                serve(k, c);
                close(c);
            }
        }
        vm_logs_bound_all(); /* a kept guest that floods its console cannot fill the disk */
    }
}

int attach_keep(struct vm **vms, size_t n, const char *why, attach_eval_fn eval, void *ctx,
                struct pv_err *err)
{
    struct keeper k = {.vms = xcalloc(n + 1, sizeof(*vms)), .eval = eval, .ctx = ctx};
    for (size_t i = 0; i < n; i++)
        if (vms[i] && vms[i]->state == VM_BOOTED)
            k.vms[k.n++] = vms[i];
    if (!k.n || !vm_globals.rundir) {
        free(k.vms);
        return 0;
    }
    _cleanup_free_ char *dir = xasprintf("%s/kept", vm_globals.rundir);
    _cleanup_free_ char *sock = xasprintf("%s/%d.sock", dir, (int)getpid());
    int r = 0, lfd = -1;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        r = pv_err_set(err, errno, "--keep-on-failure: %s: %s", dir, strerror(errno));
    if (r == 0 && (lfd = listen_at(sock, err)) < 0)
        r = -err->code;
    for (size_t i = 0; r == 0 && i < k.n; i++)
        if ((r = write_entry(&k, i, dir, sock, why)) < 0)
            pv_err_set(err, -r, "--keep-on-failure: writing in %s: %s", dir, strerror(-r));
    if (r == 0) {
        sigset_t old;
        k.sfd = runner_signalfd(&old);
        announce(&k, why);
        keep_loop(&k, lfd);
        struct signalfd_siginfo si;
        while (read(k.sfd, &si, sizeof(si)) > 0)
            ;
        close(k.sfd);
    }
    for (size_t i = 0; i < k.n; i++) {
        _cleanup_free_ char *path = xasprintf("%s/%d-%zu.json", dir, (int)getpid(), i);
        unlink(path);
    }
    if (lfd >= 0) {
        unlink(sock);
        close(lfd);
    }
    free(k.vms);
    return r < 0 ? r : 1;
}

/* ---- the client: provium attach ---- */

static const char attach_usage[] =
    "usage: provium attach [--run PID] NAME -- COMMAND [ARGS]...   run a command in a kept VM\n"
    "       provium attach [--run PID] NAME                        a shell on it (a terminal)\n"
    "       provium attach [--run PID] --lua NAME                  a Lua prompt on it\n"
    "A kept VM is one of a failing file under --keep-on-failure (docs/debugging.md).\n";

/* A kept VM, as its registry entry says. */
struct entry {
    char *name, *file, *socket;
    int pid, run; /* the keeper (the file's process), the run (the provium started) */
    bool alive;
};

/* A directory of the user's that no one else can enter or write in. */
static bool private_dir(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid() &&
           !(st.st_mode & 077);
}

/* Whether process pid is alive: there, and not a zombie (a keeper killed
 * outright whose parent went too waits to be reaped). */
static bool alive(int pid)
{
    if (kill((pid_t)pid, 0) < 0)
        return false;
    char path[64], st[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t k = fd < 0 ? -1 : read(fd, st, sizeof(st) - 1);
    if (k <= 0)
        return true;
    st[k] = 0;
    const char *c = strrchr(st, ')');
    return !c || c[1] != ' ' || (c[2] != 'Z' && c[2] != 'X');
}

static void read_entry(const char *path, struct entry **v, size_t *n)
{
    struct stat st;
    struct buf b = BUF_INIT;
    if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != getuid() ||
        read_file(path, ATTACH_ENTRY_MAX, &b) < 0) {
        buf_release(&b);
        return;
    }
    json_t *j = json_loadb(b.data, b.len, 0, NULL);
    buf_release(&b);
    const char *name = json_string_value(json_object_get(j, "name"));
    const char *sock = json_string_value(json_object_get(j, "socket"));
    const char *file = json_string_value(json_object_get(j, "file"));
    json_int_t pid = json_integer_value(json_object_get(j, "pid"));
    json_int_t run = json_integer_value(json_object_get(j, "run"));
    if (name && sock && pid > 0 && pid < INT_MAX && run > 0 && run < INT_MAX) {
        *v = xrealloc(*v, (*n + 1) * sizeof(**v));
        (*v)[(*n)++] = (struct entry){.name = xstrdup(name),
                                      .file = xstrdup(file ? file : "?"),
                                      .socket = xstrdup(sock),
                                      .pid = (int)pid,
                                      .run = (int)run,
                                      .alive = alive((int)pid)};
    }
    json_decref(j);
}

/* Every registry entry of the user's runs under $TMPDIR: their number. */
static size_t find_entries(struct entry **ret)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    size_t n = 0;
    *ret = NULL;
    DIR *d = opendir(tmp);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int pid;
        char rest[32];
        if (sscanf(e->d_name, "provium-%d-%31s", &pid, rest) != 2)
            continue;
        _cleanup_free_ char *run = xasprintf("%s/%s", tmp, e->d_name);
        _cleanup_free_ char *kept = xasprintf("%s/kept", run);
        DIR *k = private_dir(run) && private_dir(kept) ? opendir(kept) : NULL;
        struct dirent *f;
        while (k && (f = readdir(k))) {
            size_t len = strlen(f->d_name);
            if (len > 5 && !strcmp(f->d_name + len - 5, ".json")) {
                _cleanup_free_ char *p = xasprintf("%s/%s", kept, f->d_name);
                read_entry(p, ret, &n);
            }
        }
        if (k)
            closedir(k);
    }
    if (d)
        closedir(d);
    return n;
}

/* Connected to the keeper of e, checked to be it: the socket, or -errno. */
static int connect_to(const struct entry *e)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(e->socket) >= sizeof(a.sun_path))
        return -ENAMETOOLONG;
    strcpy(a.sun_path, e->socket);
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        return -errno;
    struct ucred cr;
    socklen_t len = sizeof(cr);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 || cr.uid != getuid() ||
        cr.pid != e->pid)
        return -EPERM; /* not the provium that wrote the entry */
    return steal_fd(&fd);
}

/* Output from the guest: as it is into a pipe or a file, escaped for a
 * terminal (docs/cli.md#guest-bytes). */
static void emit(int fd, const struct buf *b)
{
    if (!isatty(fd)) {
        write_all(fd, b->data, b->len);
        return;
    }
    struct buf e = BUF_INIT;
    buf_add_escaped(&e, b->data, b->len);
    write_all(fd, e.data, e.len);
    buf_release(&e);
}

/* The exit code an 'X' frame says; *more for a Lua chunk not finished. */
int attach_exit_of(const struct buf *f, bool *more)
{
    json_t *x = json_loadb(f->data, f->len, 0, NULL);
    const char *status = json_string_value(json_object_get(x, "status"));
    int code = (int)json_integer_value(json_object_get(x, "code"));
    if (status && strcmp(status, "exited"))
        code = 128 + (int)json_integer_value(json_object_get(x, "signal"));
    if (more)
        *more = json_is_true(json_object_get(x, "more"));
    json_decref(x);
    return code < 0 || code > 255 ? 2 : code;
}

/* Connect to e's keeper and send req with stdin in: the socket, or -1
 * after saying why. */
static int start_exchange(const struct entry *e, json_t *req, const struct buf *in)
{
    int fd = connect_to(e);
    if (fd == -ECONNREFUSED || fd == -ENOENT) {
        fprintf(stderr,
                "provium attach: vm `%s` is no longer kept: the provium that kept it "
                "(pid %d) does not answer at %s\n",
                e->name, e->pid, e->socket);
        return -1;
    }
    if (fd < 0) {
        fprintf(stderr,
                "provium attach: vm `%s`: cannot reach the provium that keeps it (pid %d) "
                "at %s: %s\n",
                e->name, e->pid, e->socket,
                fd == -EPERM ? "another process holds the socket" : strerror(-fd));
        return -1;
    }
    _cleanup_free_ char *s = json_dumps(req, JSON_COMPACT);
    if (attach_send_frame(fd, 'R', s, strlen(s), 0, -1) < 0 ||
        attach_send_frame(fd, 'I', in->data, in->len, 0, -1) < 0) {
        fprintf(stderr, "provium attach: vm `%s`: the provium that keeps it (pid %d) went away\n",
                e->name, e->pid);
        close(fd);
        return -1;
    }
    return fd;
}

/* Send one request to e's keeper and print what comes back: the exit code
 * (2 when it could not be done). */
static int exchange(const struct entry *e, json_t *req, const struct buf *in, bool *more)
{
    int fd = start_exchange(e, req, in);
    if (fd < 0)
        return 2;
    struct buf f = BUF_INIT;
    char type = 0;
    int code = -1;
    while (code < 0) {
        if (attach_recv_frame(fd, &type, &f, ATTACH_FRAME_MAX, 0, -1) < 0) {
            fprintf(stderr,
                    "provium attach: vm `%s`: the provium that keeps it (pid %d) went away "
                    "before answering\n",
                    e->name, e->pid);
            code = 2;
        } else if (type == 'O' || type == 'E') {
            emit(type == 'O' ? 1 : 2, &f);
        } else if (type == 'X') {
            code = attach_exit_of(&f, more);
        } else {
            struct buf m = BUF_INIT;
            buf_add_escaped(&m, f.data, f.len);
            fprintf(stderr, "provium attach: %s\n", type == 'F' ? m.data : "a malformed reply");
            buf_release(&m);
            code = 2;
        }
    }
    close(fd);
    buf_release(&f);
    return code;
}

/* --lua: read chunks at a prompt, each run by the keeper. */
static int lua_prompt(const struct entry *e)
{
    fprintf(stderr,
            "provium attach: Lua in the state of %s, `vm` is `%s` (the run's VMs stay kept; "
            "Ctrl-D ends)\n",
            e->file, e->name);
    struct buf chunk = BUF_INIT, none = BUF_INIT;
    int code = 0;
    char *line;
    while ((line = readline(chunk.len ? ">> " : "> "))) {
        if (chunk.len)
            buf_adds(&chunk, "\n");
        buf_adds(&chunk, line);
        free(line);
        if (!chunk.len)
            continue;
        json_t *req = json_pack("{s:s, s:s%}", "vm", e->name, "lua", chunk.data, chunk.len);
        bool more = false;
        code = exchange(e, req, &none, &more);
        json_decref(req);
        if (code == 2)
            break;
        if (more)
            continue;
        add_history(chunk.data);
        buf_consume(&chunk, chunk.len);
    }
    buf_release(&chunk);
    return code == 2 ? 2 : 0;
}

/* The command's stdin: what a file, pipe or socket on fd 0 holds (a
 * terminal or /dev/null gives none). 0, or 2 after saying why. */
static int read_stdin(struct buf *in)
{
    struct stat st;
    if (fstat(0, &st) < 0 || !(S_ISREG(st.st_mode) || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)))
        return 0;
    char tmp[65536];
    ssize_t k;
    while ((k = read(0, tmp, sizeof(tmp))) != 0) {
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 || in->len + (size_t)k > ATTACH_STDIN_MAX) {
            fprintf(stderr, "provium attach: stdin: %s\n",
                    k < 0 ? strerror(errno) : "more than 16 MiB (the most a command is given)");
            return 2;
        }
        buf_add(in, tmp, (size_t)k);
    }
    return 0;
}

/* The entry NAME (of run `run`, 0: any) names: 0, or 2 after saying why. */
static int pick(const struct entry *v, size_t n, const char *name, int run, size_t *ret)
{
    size_t alive = 0, dead = 0, last = 0, lastdead = 0;
    struct buf list = BUF_INIT, all = BUF_INIT;
    for (size_t i = 0; i < n; i++) {
        if (v[i].alive)
            buf_addf(&all, "\n    `%s` (run %d, %s)", v[i].name, v[i].run, v[i].file);
        if (strcmp(v[i].name, name) || (run && v[i].run != run && v[i].pid != run))
            continue;
        if (!v[i].alive) {
            dead++, lastdead = i;
            continue;
        }
        alive++, last = i;
        /* two files of one run keep the name: their own processes tell them apart */
        bool shared = false;
        for (size_t k = 0; k < n; k++)
            shared = shared ||
                     (k != i && v[k].alive && v[k].run == v[i].run && !strcmp(v[k].name, name));
        buf_addf(&list, "\n    --run %d: %s (its process %d)", shared ? v[i].pid : v[i].run,
                 v[i].file, v[i].pid);
    }
    struct buf m = BUF_INIT;
    char by[32] = "";
    if (run)
        snprintf(by, sizeof(by), " by run %d", run);
    if (alive > 1)
        buf_addf(&m, "%zu runs keep a VM named `%s`: pick one with --run PID:%s", alive, name,
                 list.data);
    else if (!alive && dead)
        buf_addf(&m,
                 "vm `%s` is no longer kept: the provium that kept it (pid %d, run %d) has "
                 "ended",
                 name, v[lastdead].pid, v[lastdead].run);
    else if (!alive)
        buf_addf(&m, "no VM named `%s` is kept%s on this host; %s%s", name, by,
                 all.len
                     ? "kept now:"
                     : "none is kept now (a failing file keeps its VMs under "
                       "--keep-on-failure: docs/debugging.md#keeping-the-vms-of-a-failing-file)",
                 all.len ? all.data : "");
    *ret = last;
    if (m.len) {
        struct buf e = BUF_INIT;
        buf_add_escaped(&e, m.data, m.len);
        fprintf(stderr, "provium attach: %s\n", e.data);
        buf_release(&e);
    }
    int code = m.len ? 2 : 0;
    buf_release(&m);
    buf_release(&list);
    buf_release(&all);
    return code;
}

/* The arguments: 0 (ret_cmd NULL: --lua or a shell), or 2 after saying why. */
static int parse_args(int argc, char **argv, int *run, bool *lua, const char **name,
                      char ***ret_cmd)
{
    int i = 2;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        char *end;
        if (!strcmp(argv[i], "--lua")) {
            *lua = true;
        } else if (!strcmp(argv[i], "--run") && i + 1 < argc) {
            long v = strtol(argv[++i], &end, 10);
            if (*end || v <= 0 || v > INT_MAX) {
                fprintf(stderr, "provium attach: --run: expected a process id, got `%s`\n",
                        argv[i]);
                return 2;
            }
            *run = (int)v;
        } else if (argv[i][0] == '-' || *name) {
            fprintf(stderr, "provium attach: unexpected `%s`\n%s", argv[i], attach_usage);
            return 2;
        } else {
            *name = argv[i];
        }
    }
    *ret_cmd = i + 1 < argc ? argv + i + 1 : NULL;
    if (!*name) {
        fprintf(stderr, "provium attach: which VM? (NAME is missing)\n%s", attach_usage);
        return 2;
    }
    if (*lua && *ret_cmd) {
        fprintf(stderr, "provium attach: --lua takes no command\n%s", attach_usage);
        return 2;
    }
    if (!*lua && !*ret_cmd && !isatty(0)) {
        fprintf(stderr,
                "provium attach: an interactive shell needs a terminal on stdin: give a "
                "command after `--` (provium attach %s -- sh -c '...'), or --lua for a Lua "
                "prompt on the VM (docs/debugging.md#provium-attach)\n",
                *name);
        return 2;
    }
    return 0;
}

int attach_main(int argc, char **argv)
{
    if (argc > 2 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
        fputs(attach_usage, stdout);
        return 0;
    }
    int run = 0;
    bool lua = false;
    const char *name = NULL;
    char **cmd = NULL;
    int code = parse_args(argc, argv, &run, &lua, &name, &cmd);
    if (code)
        return code;
    struct entry *v = NULL;
    size_t n = find_entries(&v), i = 0;
    struct buf in = BUF_INIT;
    if ((code = pick(v, n, name, run, &i)) == 0 && lua) {
        code = lua_prompt(&v[i]);
    } else if (code == 0 && !cmd) {
        json_t *req = attach_shell_request(name);
        int fd = start_exchange(&v[i], req, &in);
        code = fd < 0 ? 2 : attach_shell_client(fd, name);
        if (fd >= 0)
            close(fd);
        json_decref(req);
    } else if (code == 0 && (code = read_stdin(&in)) == 0) {
        json_t *words = json_array();
        for (char **c = cmd; *c && code == 0; c++)
            if (json_array_append_new(words, json_string(*c)) < 0) {
                fprintf(stderr, "provium attach: the word `%s` is not UTF-8\n", *c);
                code = 2;
            }
        json_t *req = json_pack("{s:s, s:o}", "vm", name, "argv", words);
        code = code ? code : exchange(&v[i], req, &in, NULL);
        json_decref(req);
    }
    for (size_t k = 0; k < n; k++) {
        free(v[k].name);
        free(v[k].file);
        free(v[k].socket);
    }
    free(v);
    buf_release(&in);
    return code;
}
