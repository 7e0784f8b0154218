/* Running processes. Each PV_RUN or PV_SPAWN forks a child in its own
 * session with pipes for stdin/stdout/stderr. For PV_RUN, output travels
 * back as PV_EV_CHUNK events as it is produced (up to the request's cap,
 * counted beyond it), and the final PV_OK carries the exit status once the
 * child is reaped. A PV_SPAWN process has a handle instead: its output is
 * captured here (up to the cap) and forwarded to any PV_TAIL that follows
 * it, and PV_WAIT collects the lot. A command's background children may keep
 * its pipes open: nothing waits for them, what is buffered is drained when
 * the child itself exits. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>

#include "agent.h"
#include "child.h"

/* Above this much queued stdin, PV_STDIN refuses more. */
#define STDIN_MAX (64u << 20)

struct run {
    struct run *next;
    uint32_t id;     /* PV_RUN: the request answered at exit (0 for PV_SPAWN) */
    uint64_t handle; /* PV_SPAWN: the host's name for it (0 for PV_RUN) */
    uint32_t waiter; /* PV_SPAWN: the PV_WAIT answered at exit, or 0 */
    pid_t pid;
    int fd[3]; /* stdin (write end), stdout, stderr (read ends) */
    struct buf in;
    size_t in_off;
    bool close_in; /* close stdin once `in` is written */
    int64_t deadline_ms;
    uint64_t cap, total[3];
    struct buf out[3]; /* PV_SPAWN: captured stdout and stderr */
    bool exited, timed_out, cancelled;
    bool pty; /* fd[0] and fd[1] are the pseudo-terminal's master (PV_RUN_PTY) */
    int wstatus;
};

extern char **environ;

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

static void run_free(struct run *p)
{
    for (int i = 0; i < 3; i++) {
        close_fd(&p->fd[i]);
        buf_release(&p->out[i]);
    }
    buf_release(&p->in);
    free(p);
}

static struct run *by_handle(struct agent *a, uint64_t handle)
{
    for (struct run *p = a->runs; p; p = p->next)
        if (handle && p->handle == handle)
            return p;
    return NULL;
}

char **agent_env(const char **set, uint32_t nset, bool clear)
{
    size_t n = 0;
    if (!clear)
        while (environ[n])
            n++;
    char **env = xcalloc(n + nset + 1, sizeof(char *));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t klen = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        bool replaced = false;
        for (uint32_t j = 0; j < nset && !replaced; j++)
            replaced = !strncmp(set[j], environ[i], klen) && set[j][klen] == '=';
        if (!replaced)
            env[k++] = environ[i];
    }
    for (uint32_t j = 0; j < nset; j++)
        env[k++] = (char *)set[j];
    env[k] = NULL;
    return env;
}

/* The program, in a session of its own: the host's signals, a timeout and
 * a cancel reach its whole group (kill(-pid)). PR_SET_PDEATHSIG: a worker
 * killed takes its commands along. child.h has the rules. */
__attribute__((noreturn)) static void child(const char **argv, char **env, const char *cwd,
                                            const int stdio[3], bool ctty, int report_fd,
                                            pid_t parent)
{
    struct child_opts o = {
        .parent = parent,
        .flags = CHILD_SESSION | (ctty ? CHILD_CTTY : 0),
        .cwd = cwd,
        .stdio = {stdio[0], stdio[1], stdio[2]},
        .report_fd = report_fd,
    };
    int step = child_setup(&o);
    if (!step) {
        environ = env; /* so that execvp() searches the program's PATH */
        execvp(argv[0], (char *const *)argv);
        step = CHILD_EXEC;
    }
    child_fail(o.report_fd, step);
}

static void close_all(int *fds, int n)
{
    for (int i = 0; i < n; i++)
        close_fd(&fds[i]);
}

/* A pseudo-terminal of rows x cols: its master (and a second descriptor of
 * it, to write) in mine[0..1], the terminal in child[0..2]. */
static int open_pty(uint32_t rows, uint32_t cols, int child[3], int mine[3])
{
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    char name[64];
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC), s = -1, w = -1;
    if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, name, sizeof(name)) != 0 ||
        ioctl(m, TIOCSWINSZ, &ws) < 0 || (s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0 ||
        (w = fcntl(m, F_DUPFD_CLOEXEC, 3)) < 0) {
        int e = errno;
        close_all((int[]){m, s}, 2);
        return -e;
    }
    child[0] = child[1] = child[2] = s;
    mine[0] = w, mine[1] = m, mine[2] = -1;
    return 0;
}

/* The child's stdin, stdout and stderr (child[]) and the agent's ends of
 * them (mine[]): three pipes, or one pseudo-terminal. */
static int open_stdio(bool pty, uint32_t rows, uint32_t cols, int child[3], int mine[3])
{
    if (pty)
        return open_pty(rows, cols, child, mine);
    int p[3][2] = {{-1, -1}, {-1, -1}, {-1, -1}};
    for (int i = 0; i < 3; i++) {
        if (pipe2(p[i], O_CLOEXEC) < 0) {
            int e = errno;
            close_all(&p[0][0], 6);
            return -e;
        }
    }
    /* the child reads stdin and writes the others; the agent the reverse */
    for (int i = 0; i < 3; i++) {
        child[i] = p[i][i ? 1 : 0];
        mine[i] = p[i][i ? 0 : 1];
    }
    return 0;
}

/* The child's ends, once it has them: a terminal is one descriptor thrice. */
static void close_child_ends(int child[3])
{
    if (child[1] == child[0])
        child[1] = child[2] = -1;
    close_all(child, 3);
}

/* Decode a PV_RUN/PV_SPAWN request and start the child. Returns 0 with
 * *ret (or with the request answered when exec failed: *ret NULL), or -errno. */
static int start(struct agent *a, uint32_t id, struct pv_rd *r, struct run **ret)
{
    *ret = NULL;
    uint32_t flags = pv_get_u32(r);
    uint32_t argc = pv_get_count(r, 5);
    _cleanup_free_ const char **argv = xcalloc(argc + 1, sizeof(char *));
    for (uint32_t i = 0; i < argc; i++)
        argv[i] = pv_get_str(r);
    uint32_t envc = pv_get_count(r, 5);
    _cleanup_free_ const char **envs = xcalloc(envc + 1, sizeof(char *));
    for (uint32_t i = 0; i < envc; i++)
        envs[i] = pv_get_str(r);
    const char *cwd = pv_get_str(r);
    size_t in_len;
    const void *in = pv_get_bytes(r, &in_len);
    uint32_t timeout_ms = pv_get_u32(r);
    uint64_t cap = pv_get_u64(r);
    bool pty = flags & PV_RUN_PTY;
    uint32_t rows = pty ? pv_get_u32(r) : 0, cols = pty ? pv_get_u32(r) : 0;
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (argc == 0)
        return -EINVAL;
    for (uint32_t i = 0; i < envc; i++)
        if (!strchr(envs[i], '='))
            return -EINVAL;

    int cfd[3] = {-1, -1, -1}, mine[3] = {-1, -1, -1}, p_exec[2];
    int e = open_stdio(pty, rows, cols, cfd, mine);
    if (e < 0)
        return e;
    if (pipe2(p_exec, O_CLOEXEC) < 0) {
        e = -errno;
        close_child_ends(cfd);
        close_all(mine, 3);
        return e;
    }
    _cleanup_free_ char **env = agent_env(envs, envc, flags & PV_RUN_ENV_CLEAR);
    pid_t parent = getpid();
    pid_t pid = child_fork(NULL);
    if (pid == 0)
        child(argv, env, cwd, cfd, pty, p_exec[1], parent);
    int fork_errno = errno;
    close_child_ends(cfd);
    close(p_exec[1]);
    if (pid < 0) {
        close_all(mine, 3);
        close(p_exec[0]);
        return -fork_errno;
    }
    struct child_report f;
    int got = child_wait_exec(p_exec[0], &f);
    close(p_exec[0]);
    if (got != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close_all(mine, 3);
        if (got < 0)
            return got;
        if (f.step == CHILD_EXEC)
            agent_send_err(a, id, f.errnum, "%s: %s", argv[0], strerror(f.errnum));
        else if (f.step == CHILD_CHDIR)
            agent_send_err(a, id, f.errnum, "%s: %s", cwd, strerror(f.errnum));
        else
            agent_send_err(a, id, f.errnum, "%s: %s: %s", argv[0], child_step_name(f.step),
                           strerror(f.errnum));
        return 0;
    }

    struct run *p = xcalloc(1, sizeof(*p));
    p->pid = pid;
    memcpy(p->fd, mine, sizeof(p->fd));
    p->pty = pty;
    p->cap = cap;
    p->deadline_ms = timeout_ms ? now_ms() + timeout_ms : 0;
    for (int i = 0; i < 3; i++)
        if (p->fd[i] >= 0)
            fcntl(p->fd[i], F_SETFL, O_NONBLOCK);
    buf_add(&p->in, in, in_len);
    p->next = a->runs;
    a->runs = p;
    *ret = p;
    return 0;
}

int agent_op_run(struct agent *a, uint32_t id, struct pv_rd *r)
{
    struct run *p;
    int ret = start(a, id, r, &p);
    if (p) {
        p->id = id;
        p->close_in = true;
        if (!p->in.len)
            close_fd(&p->fd[0]);
    }
    return ret;
}

int agent_op_spawn(struct agent *a, uint32_t id, struct pv_rd *r)
{
    struct run *p;
    int ret = start(a, id, r, &p);
    if (!p)
        return ret;
    p->deadline_ms = 0;
    p->handle = ++a->next_handle;
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, p->handle);
    pv_put_u32(&w, (uint32_t)p->pid);
    agent_send_ok(a, id, &b);
    buf_release(&b);
    return 0;
}

/* Decode a request that starts with a process handle. */
static int handle_arg(struct agent *a, struct pv_rd *r, struct run **ret)
{
    uint64_t handle = pv_get_u64(r);
    if (r->bad)
        return -EBADMSG;
    *ret = by_handle(a, handle);
    return *ret ? 0 : -ESRCH;
}

int agent_op_wait(struct agent *a, uint32_t id, struct pv_rd *r)
{
    struct run *p;
    int ret = handle_arg(a, r, &p);
    uint32_t timeout_ms = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (ret < 0)
        return ret;
    if (p->waiter)
        return -EBUSY;
    p->waiter = id;
    if (timeout_ms && !p->exited)
        p->deadline_ms = now_ms() + timeout_ms;
    proc_sweep(a);
    return 0;
}

static int signal_one(const struct run *p, int sig)
{
    if (!p->exited && kill(-p->pid, sig) < 0 && kill(p->pid, sig) < 0 && errno != ESRCH)
        return -errno;
    return 0;
}

/* Handle 0 signals every process: a worker's kill(). */
int agent_op_signal(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint64_t handle = pv_get_u64(r);
    uint32_t sig = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (sig >= 65)
        return -EINVAL;
    int ret = 0;
    if (handle == 0) {
        for (struct run *p = a->runs; p; p = p->next) {
            int e = signal_one(p, (int)sig);
            ret = ret ? ret : e;
        }
    } else {
        struct run *p = by_handle(a, handle);
        ret = p ? signal_one(p, (int)sig) : -ESRCH;
    }
    if (ret < 0)
        return ret;
    agent_send_ok(a, id, NULL);
    return 0;
}

/* The exit status fields of PV_RUN/PV_WAIT replies and PV_PROC_STATUS. */
static void put_status(struct pv_wr *w, const struct run *p)
{
    int st = p->wstatus;
    if (!p->exited) {
        pv_put_u32(w, PV_EXITED);
        pv_put_u32(w, 0);
        pv_put_u32(w, 0);
    } else if (p->timed_out) {
        pv_put_u32(w, PV_TIMED_OUT);
        pv_put_u32(w, (uint32_t)-2);
        pv_put_u32(w, WIFSIGNALED(st) ? (uint32_t)WTERMSIG(st) : 0);
    } else if (WIFSIGNALED(st)) {
        pv_put_u32(w, PV_SIGNALLED);
        pv_put_u32(w, (uint32_t)-1);
        pv_put_u32(w, (uint32_t)WTERMSIG(st));
    } else {
        pv_put_u32(w, PV_EXITED);
        pv_put_u32(w, (uint32_t)WEXITSTATUS(st));
        pv_put_u32(w, 0);
    }
    pv_put_u64(w, p->total[1]);
    pv_put_u64(w, p->total[2]);
}

int agent_op_proc_status(struct agent *a, uint32_t id, struct pv_rd *r)
{
    struct run *p;
    int ret = handle_arg(a, r, &p);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (ret < 0)
        return ret;
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, !p->exited);
    pv_put_u32(&w, (uint32_t)p->pid);
    put_status(&w, p);
    agent_send_ok(a, id, &b);
    buf_release(&b);
    return 0;
}

int agent_op_pty_resize(struct agent *a, uint32_t id, struct pv_rd *r)
{
    struct run *p;
    int ret = handle_arg(a, r, &p);
    uint32_t rows = pv_get_u32(r), cols = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (ret < 0)
        return ret;
    if (!p->pty || p->fd[1] < 0 || rows > 0xffff || cols > 0xffff)
        return p->pty && p->fd[1] >= 0 ? -EINVAL : -ENOTTY;
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    if (ioctl(p->fd[1], TIOCSWINSZ, &ws) < 0)
        return -errno;
    agent_send_ok(a, id, NULL);
    return 0;
}

static void feed_stdin(struct run *p);

int agent_op_stdin(struct agent *a, uint32_t id, struct pv_rd *r)
{
    struct run *p;
    int ret = handle_arg(a, r, &p);
    size_t n;
    const void *data = pv_get_bytes(r, &n);
    uint32_t close_after = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (ret < 0)
        return ret;
    if (p->fd[0] < 0 || p->close_in)
        return -EPIPE;
    if (p->in.len - p->in_off + n > STDIN_MAX)
        return -ENOBUFS;
    buf_add(&p->in, data, n);
    p->close_in = close_after;
    feed_stdin(p);
    agent_reply_u32(a, id, (uint32_t)n);
    return 0;
}

/* The output a PV_SPAWN process captured so far, for a new PV_TAIL; false
 * when no such process. *open says whether more may come. */
bool proc_backlog(struct agent *a, uint64_t handle, int stream, const struct buf **out, bool *open)
{
    struct run *p = by_handle(a, handle);
    if (!p || stream < 1 || stream > 2)
        return false;
    *out = &p->out[stream];
    *open = p->fd[stream] >= 0;
    return true;
}

int agent_op_cancel(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint32_t target = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    for (struct run *p = a->runs; p; p = p->next) {
        if (p->id == target && !p->exited) {
            p->cancelled = true;
            kill(-p->pid, SIGKILL);
        }
        if (p->waiter == target) {
            p->waiter = 0;
            p->deadline_ms = 0;
        }
    }
    stream_cancel(a, target);
    net_cancel(a, target);
    agent_send_ok(a, id, NULL);
    return 0;
}

int proc_pollfds(struct agent *a, struct pollfd *fds, int max, int64_t *deadline_ms)
{
    int n = 0;
    for (struct run *p = a->runs; p; p = p->next) {
        if (p->deadline_ms && !p->exited && !p->timed_out &&
            (!*deadline_ms || p->deadline_ms < *deadline_ms))
            *deadline_ms = p->deadline_ms;
        for (int i = 0; i < 3 && n < max; i++)
            if (p->fd[i] >= 0 && (i || p->in_off < p->in.len))
                fds[n++] = (struct pollfd){p->fd[i], (short)(i ? POLLIN : POLLOUT), 0};
    }
    return n;
}

/* Read what a stream has now; returns false at EOF or error. */
static bool pump(struct agent *a, struct run *p, int i)
{
    char chunk[65536];
    for (;;) {
        ssize_t n = read(p->fd[i], chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return true;
        if (n <= 0)
            return false;
        uint64_t room = p->total[i] < p->cap ? p->cap - p->total[i] : 0;
        size_t keep = (size_t)MIN((uint64_t)n, room);
        if (keep && p->id)
            agent_send_chunk(a, p->id, (uint8_t)i, chunk, keep);
        else if (keep)
            buf_add(&p->out[i], chunk, keep);
        if (p->handle)
            stream_proc_data(a, p->handle, i, chunk, (size_t)n);
        p->total[i] += (uint64_t)n;
    }
}

static void feed_stdin(struct run *p)
{
    if (p->fd[0] < 0)
        return;
    while (p->in_off < p->in.len) {
        ssize_t n = write(p->fd[0], p->in.data + p->in_off, p->in.len - p->in_off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) { /* the reader is gone */
            close_fd(&p->fd[0]);
            return;
        }
        p->in_off += (size_t)n;
    }
    buf_consume(&p->in, p->in.len);
    p->in_off = 0;
    if (p->close_in)
        close_fd(&p->fd[0]);
}

static void close_out(struct agent *a, struct run *p, int i)
{
    close_fd(&p->fd[i]);
    if (p->handle)
        stream_proc_end(a, p->handle, i);
}

static void reply_status(struct agent *a, uint32_t id, const struct run *p)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    put_status(&w, p);
    agent_send_ok(a, id, &b);
    buf_release(&b);
}

/* Answer what can be answered now, and forget processes nobody will ask
 * about again. */
void proc_sweep(struct agent *a)
{
    for (struct run **pp = &a->runs; *pp;) {
        struct run *p = *pp;
        if (p->exited) {
            /* take what the pipes hold now: the child's own children may
             * keep them open for ever */
            for (int i = 1; i < 3; i++) {
                if (p->fd[i] >= 0) {
                    pump(a, p, i);
                    close_out(a, p, i);
                }
            }
            close_fd(&p->fd[0]);
        }
        bool done = p->exited && (p->id || p->waiter);
        if (p->exited && p->id && p->cancelled) {
            agent_send_err(a, p->id, ECANCELED, "cancelled");
        } else if (p->exited && p->id) {
            reply_status(a, p->id, p);
        } else if (done) {
            for (int i = 1; i < 3; i++)
                for (size_t off = 0; off < p->out[i].len; off += PV_CHUNK)
                    agent_send_chunk(a, p->waiter, (uint8_t)i, p->out[i].data + off,
                                     MIN((size_t)PV_CHUNK, p->out[i].len - off));
            reply_status(a, p->waiter, p);
        }
        if (done) {
            *pp = p->next;
            run_free(p);
        } else {
            pp = &p->next;
        }
    }
}

void proc_events(struct agent *a, struct pollfd *fds, int n)
{
    for (int k = 0; k < n; k++) {
        if (!fds[k].revents)
            continue;
        for (struct run *p = a->runs; p; p = p->next) {
            for (int i = 0; i < 3; i++) {
                if (p->fd[i] != fds[k].fd)
                    continue;
                if (i == 0)
                    feed_stdin(p);
                else if (!pump(a, p, i))
                    close_out(a, p, i);
            }
        }
    }
}

void proc_reap(struct agent *a)
{
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        if (worker_reaped(a, pid, st))
            continue;
        for (struct run *p = a->runs; p; p = p->next) {
            if (p->pid == pid) {
                p->exited = true;
                p->wstatus = st;
            }
        }
    }
    proc_sweep(a);
}

void proc_timeouts(struct agent *a)
{
    int64_t now = now_ms();
    for (struct run *p = a->runs; p; p = p->next) {
        if (p->deadline_ms && !p->exited && !p->timed_out && now >= p->deadline_ms) {
            p->timed_out = true;
            kill(-p->pid, SIGKILL);
            kill(p->pid, SIGKILL);
        }
    }
}

void proc_kill_all(struct agent *a)
{
    for (struct run *p = a->runs; p; p = p->next) {
        kill(-p->pid, SIGKILL);
        kill(p->pid, SIGKILL);
    }
    while (a->runs) {
        struct run *p = a->runs;
        a->runs = p->next;
        waitpid(p->pid, NULL, 0);
        run_free(p);
    }
}
