#include "runner.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "lua/l_json.h"
#include "lua/l_provium.h"
#include "barrier.h"
#include "ci.h"
#include "luascan.h"
#include "events.h"
#include "filter.h"
#include "report.h"
#include "vm.h"

/* Files at once at most, whatever --jobs says. */
#define RUNNER_MAX_JOBS 64
/* How often a file's end is looked for when it has no pidfd: 10 wake-ups a
 * second cost nothing measurable, and a file's results wait at most that. */
#define JOB_WAITPID_MS 100

static bool has_suffix(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

struct list {
    char **v;
    size_t n;
};

static void list_add(struct list *l, char *s)
{
    l->v = xrealloc(l->v, (l->n + 1) * sizeof(char *));
    l->v[l->n++] = s;
}

static void walk(const char *dir, const char *suffix, struct list *out, int depth)
{
    if (depth > 32)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char *p = !strcmp(dir, ".") ? xstrdup(e->d_name) : xasprintf("%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            walk(p, suffix, out, depth + 1);
            free(p);
        } else if (has_suffix(e->d_name, suffix)) {
            list_add(out, p);
        } else {
            free(p);
        }
    }
    closedir(d);
}

int runner_discover(const struct config *cfg, char **paths, size_t npaths, const char *suffix,
                    char ***ret, size_t *ret_n, struct pv_err *err)
{
    struct list out = {0};
    if (npaths == 0 && cfg && cfg->nroots) {
        paths = cfg->roots;
        npaths = cfg->nroots;
    }
    if (npaths == 0) {
        walk(".", suffix, &out, 0);
    }
    for (size_t i = 0; i < npaths; i++) {
        struct stat st;
        if (stat(paths[i], &st) < 0) {
            for (size_t k = 0; k < out.n; k++)
                free(out.v[k]);
            free(out.v);
            return pv_err_set(err, errno, "%s: %s", paths[i], strerror(errno));
        }
        if (S_ISDIR(st.st_mode)) {
            struct list sub = {0};
            walk(paths[i], suffix, &sub, 0);
            qsort(sub.v, sub.n, sizeof(char *), cmp_str);
            for (size_t k = 0; k < sub.n; k++)
                list_add(&out, sub.v[k]);
            free(sub.v);
        } else {
            list_add(&out, xstrdup(paths[i]));
        }
    }
    if (npaths == 0)
        qsort(out.v, out.n, sizeof(char *), cmp_str);
    /* the same file named twice runs once */
    size_t w = 0;
    for (size_t i = 0; i < out.n; i++) {
        bool dup = false;
        for (size_t k = 0; k < w && !dup; k++)
            dup = !strcmp(out.v[k], out.v[i]);
        if (dup)
            free(out.v[i]);
        else
            out.v[w++] = out.v[i];
    }
    *ret = out.v;
    *ret_n = w;
    return 0;
}

/* Where the child is told to stop: kill our VMs and go. */
static void child_fatal(int sig)
{
    vm_kill_all();
    _exit(128 + sig);
}

int runner_file_child(const struct config *cfg, const char *path, const char *display, int resfd)
{
    struct sigaction sa = {.sa_handler = child_fatal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    l_ctx.config = cfg;
    l_ctx.file = path;
    l_ctx.display = display;
    vm_globals.file = display;
    lua_State *L = l_newstate();
    if (!L)
        return 3;
    lua_getglobal(L, "_provium_run_file");
    lua_pushstring(L, path);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "provium: internal error running %s: %s\n", display, lua_tostring(L, -1));
        vm_kill_all();
        return 3;
    }
    l_push_json_encode_lossy(L);
    lua_pushvalue(L, -2);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        fprintf(stderr, "provium: cannot encode the outcome of %s: %s\n", display,
                lua_tostring(L, -1));
        vm_kill_all();
        return 3;
    }
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    write_all(resfd, s, len);
    close(resfd);
    vm_kill_all();
    lua_close(L);
    return 0;
}

struct job {
    char *file, *display;
    struct amount claim, reservation;
    bool claimed;       /* the file has a provium:claim */
    char *cannot;       /* why it cannot run (a bad claim, too big for the pool), or NULL */
    bool blocked_said;  /* a file_blocked event went out for the current reason */
    const char *status; /* file_completed's status, once it ended */
    pid_t pid;
    int pidfd;
    int outfd, resfd, evfd; /* captured output, outcome JSON, event lines */
    int barfd;              /* the runner's end of its lab:barrier socketpair */
    struct buf out, res, ev;
    bool ev_skip; /* the rest of an event line too long to keep is dropped */
    int64_t start_ns, deadline_ns;
    bool timed_out, term_sent, interrupted;
    bool kept; /* keeps its VMs until Ctrl-C (--keep-on-failure): no --timeout */
    int64_t kill_at_ns;
};

char *runner_display_name(const char *file)
{
    if (!strncmp(file, "./", 2))
        file += 2;
    char cwd[4096];
    if (file[0] == '/' && getcwd(cwd, sizeof(cwd))) {
        size_t n = strlen(cwd);
        if (!strncmp(file, cwd, n) && file[n] == '/')
            return xstrdup(file + n + 1);
    }
    return xstrdup(file);
}

int runner_list(char **files, size_t nfiles)
{
    size_t ntests = 0;
    int code = 0;
    for (size_t i = 0; i < nfiles; i++) {
        _cleanup_free_ char *display = runner_display_name(files[i]);
        struct buf src = BUF_INIT;
        int r = read_file(files[i], 4u << 20, &src);
        if (r < 0) {
            fprintf(stderr, "provium: %s: %s\n", display, strerror(-r));
            buf_release(&src);
            code = 2;
            continue;
        }
        printf("%s\n", display);
        struct lscan s;
        lscan_init(&s, src.data, src.len);
        while (lscan_find(&s, "test")) {
            char name[512];
            bool quoted;
            int line = s.line;
            if (!lscan_eat(&s, '('))
                continue; /* a variable named test, not a call */
            /* a literal name, and nothing joined to it ("case " .. i) */
            if (lscan_literal(&s, name, sizeof(name), &quoted) && quoted &&
                (lscan_eat(&s, ',') || lscan_eat(&s, ')')))
                printf("    %s\n", name);
            else
                printf("    (a test named by an expression, line %d)\n", line);
            ntests++;
        }
        buf_release(&src);
    }
    printf("%zu file(s), %zu test(s)\n", nfiles, ntests);
    return code;
}

static int start_job(const struct config *cfg, struct job *j, const struct run_opts *o,
                     const sigset_t *oldmask)
{
    int p[4][2]; /* the file's output, its outcome, its events; its barriers (a socketpair) */
    for (int i = 0; i < 4; i++) {
        if ((i < 3 ? pipe2(p[i], O_CLOEXEC)
                   : socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p[i])) < 0) {
            int e = errno;
            while (i--)
                close(p[i][0]), close(p[i][1]);
            return -e;
        }
    }
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        for (int i = 0; i < 4; i++)
            close(p[i][0]), close(p[i][1]);
        return -e;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(1);
        sigprocmask(SIG_SETMASK, oldmask, NULL);
        for (int i = 0; i < 4; i++)
            close(p[i][0]);
        barrier_fd = p[3][1];
        dup2(p[0][1], 1);
        dup2(p[0][1], 2);
        close(p[0][1]);
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        dup2(nul, 0);
        if (o->include_slow)
            setenv("PROVIUM_INCLUDE_SLOW", "1", 1);
        vm_globals.claim_memory = j->claim.memory;
        vm_globals.claim_cpus = j->claim.cpus;
        vm_globals.claim_declared = j->claimed;
        events_child(events_enabled() ? p[2][1] : -1);
        _exit(runner_file_child(cfg, j->file, j->display, p[1][1]));
    }
    for (int i = 0; i < 4; i++)
        close(p[i][1]);
    j->pid = pid;
    j->barfd = p[3][0];
    fcntl(j->barfd, F_SETFL, O_NONBLOCK);
    /* PROVIUM_TEST_NO_PIDFD (tests only) stands for a kernel without
     * pidfd_open (before 5.3) or a runner out of descriptors */
    j->pidfd = getenv("PROVIUM_TEST_NO_PIDFD") ? -1 : (int)syscall(SYS_pidfd_open, pid, 0);
    j->outfd = p[0][0];
    j->resfd = p[1][0];
    j->evfd = p[2][0];
    j->start_ns = now_ns();
    j->deadline_ns = o->file_timeout > 0 ? j->start_ns + (int64_t)(o->file_timeout * 1e9) : 0;
    fcntl(j->outfd, F_SETFL, O_NONBLOCK);
    fcntl(j->resfd, F_SETFL, O_NONBLOCK);
    fcntl(j->evfd, F_SETFL, O_NONBLOCK);
    return 0;
}

/* The whole JSON lines of events a file's process sent: onto the stream. */
/* Read what *fd holds into b, keeping up to cap bytes. At the end of the
 * file, close it and set -1: poll would report the hang-up at once every
 * time, a busy loop until the process is reaped. */
static void drain(int *fd, struct buf *b, size_t cap)
{
    char tmp[65536];
    ssize_t n;
    while (*fd >= 0 && (n = read(*fd, tmp, sizeof(tmp))) != 0) {
        if (n < 0)
            return; /* EAGAIN: all read for now */
        if (b->len < cap)
            buf_add(b, tmp, (size_t)n);
    }
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* The longest event line a file may send; a longer one is dropped. */
#define EVENT_LINE_MAX (16u << 20)

/* Forward each whole line as it is read, so the buffer holds at most one
 * line of at most EVENT_LINE_MAX (a file that floods its events cannot
 * grow the main process). */
static void forward_events(struct job *j)
{
    char tmp[65536];
    ssize_t n = 1;
    while (j->evfd >= 0 && (n = read(j->evfd, tmp, sizeof(tmp))) > 0) {
        buf_add(&j->ev, tmp, (size_t)n);
        char *nl;
        while (j->ev.len && (nl = memchr(j->ev.data, '\n', j->ev.len))) {
            size_t len = (size_t)(nl - j->ev.data);
            if (!j->ev_skip)
                events_forward(j->ev.data, len);
            j->ev_skip = false;
            buf_consume(&j->ev, len + 1);
        }
        if (j->ev.len > EVENT_LINE_MAX) { /* drop it, up to its end */
            buf_consume(&j->ev, j->ev.len);
            j->ev_skip = true;
        }
    }
    if (j->evfd >= 0 && (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))) {
        close(j->evfd);
        j->evfd = -1;
    }
}

/* A file's output and outcome kept, at most: the rest is read and dropped. */
#define JOB_OUTPUT_MAX (16u << 20)

/* A NUL in a message (a console excerpt, a program's output) would cut the
 * C strings the human, TAP and JUnit writers print: every NUL of the outcome
 * becomes the four characters \x00, as show() in lua/framework.lua writes
 * it. The event stream keeps the byte (msgpack strings carry it). */
static void outcome_escape_nul(json_t *j)
{
    const char *k;
    size_t i;
    json_t *v;
    if (json_is_object(j)) {
        json_object_foreach(j, k, v) outcome_escape_nul(v);
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v) outcome_escape_nul(v);
    } else if (json_is_string(j) && strlen(json_string_value(j)) < json_string_length(j)) {
        const char *s = json_string_value(j);
        struct buf b = BUF_INIT;
        for (i = 0; i < json_string_length(j); i++)
            buf_add(&b, s[i] ? s + i : "\\x00", s[i] ? 1 : 4);
        json_string_setn_nocheck(j, b.data, b.len);
        buf_release(&b);
    }
}

/* Whether j's process ended (reaped, *status filled): its pidfd says so at
 * once; without one (pidfd_open fails with EMFILE, or on a kernel before
 * 5.3) waitpid(WNOHANG) is asked each time round, and run_wait wakes at
 * least every JOB_WAITPID_MS. */
static bool job_exited(struct job *j, int *status)
{
    if (j->pidfd >= 0) {
        struct pollfd pf = {j->pidfd, POLLIN, 0};
        return poll(&pf, 1, 0) == 1 && waitpid(j->pid, status, 0) == j->pid;
    }
    return waitpid(j->pid, status, WNOHANG) == j->pid;
}

/* A job ended with status: build its result and print it. Returns
 * report_file's verdict. */
static int finish_job(struct job *j, int status, const struct run_opts *o, struct report *rep)
{
    drain(&j->outfd, &j->out, JOB_OUTPUT_MAX);
    drain(&j->resfd, &j->res, JOB_OUTPUT_MAX);
    forward_events(j);
    /* what a grandchild still holds open is not waited for */
    closep(&j->outfd);
    closep(&j->resfd);
    closep(&j->evfd);
    buf_release(&j->ev);
    if (j->pidfd >= 0)
        close(j->pidfd);
    struct file_result fr = {.display = j->display,
                             .output = j->out.data,
                             .output_len = j->out.len,
                             .seconds = (double)(now_ns() - j->start_ns) / 1e9};
    if (j->timed_out) {
        fr.kind = FILE_TIMED_OUT;
        fr.reason = xasprintf("file timed out after %gs (--timeout)", o->file_timeout);
    } else if (j->res.len) {
        json_error_t je;
        fr.outcome = json_loadb(j->res.data, j->res.len, JSON_ALLOW_NUL, &je);
        outcome_escape_nul(fr.outcome);
        if (!fr.outcome)
            fr.reason = xasprintf("unreadable outcome: %s", je.text);
    }
    if (!fr.outcome && !fr.reason) {
        char how[128] = "ended without a result";
        if (WIFSIGNALED(status))
            snprintf(how, sizeof(how), "crashed: killed by signal %d (%s)", WTERMSIG(status),
                     strsignal(WTERMSIG(status)));
        else if (WIFEXITED(status))
            snprintf(how, sizeof(how), "ended without a result (exit status %d)",
                     WEXITSTATUS(status));
        fr.reason = xstrdup(how);
    }
    if (!j->timed_out && !fr.outcome)
        fr.kind = j->interrupted ? FILE_INTERRUPTED : FILE_CRASHED;
    int verdict = report_file(rep, &fr);
    j->status = report_status(&fr);
    json_decref(fr.outcome);
    free(fr.reason);
    buf_release(&j->out);
    buf_release(&j->res);
    return verdict;
}

static void fmt_amount(char *buf, size_t len, struct amount a)
{
    snprintf(buf, len, "%.0f MiB and %u vCPU%s", (double)a.memory / (1 << 20), a.cpus,
             a.cpus == 1 ? "" : "s");
}

/* The fixtures a file names with a literal, vm_fixture("x") or
 * lab_fixture("x") (either call form), each once, as file_discovered's
 * fixture_refs (docs/events.md). A name built at run time is not seen. */
static json_t *fixture_refs(const char *path)
{
    static const char *const calls[] = {"vm_fixture", "lab_fixture"};
    json_t *refs = json_array();
    struct buf src = BUF_INIT;
    if (read_file(path, 4u << 20, &src) < 0)
        return refs;
    for (size_t i = 0; i < ARRAY_SIZE(calls); i++) {
        struct lscan s;
        lscan_init(&s, src.data, src.len);
        while (lscan_find(&s, calls[i])) {
            char name[PATH_MAX];
            bool quoted = false;
            lscan_eat(&s, '(');
            if (!lscan_literal(&s, name, sizeof(name), &quoted) || !quoted)
                continue;
            bool dup = false;
            for (size_t k = 0; k < json_array_size(refs) && !dup; k++)
                dup = !strcmp(json_string_value(json_array_get(refs, k)), name);
            if (!dup)
                json_array_append_new(refs, json_string(name));
        }
    }
    buf_release(&src);
    return refs;
}

/* A file's claim and reservation, or why it cannot run; its
 * file_discovered event. */
static void plan_job(struct job *j, const struct pool *pool)
{
    struct pv_err err = {0};
    if (pool_scan_claim(j->file, &j->claim, &j->claimed, &err) < 0) {
        j->cannot = xstrdup(err.msg);
        j->claimed = false;
    }
    json_t *ev = json_pack("{s:s, s:o}", "path", j->display, "fixture_refs", fixture_refs(j->file));
    if (j->claimed)
        json_object_set_new(ev, "declared_claim", events_amount(j->claim.memory, j->claim.cpus));
    events_emit("file_discovered", ev);
    if (!j->claimed)
        j->claim = POOL_DEFAULT_CLAIM;
    j->reservation = pool_reservation(&j->claim);
    if (!j->cannot && !pool_could_fit(pool, j->reservation)) {
        char want[64], have[64];
        fmt_amount(want, sizeof(want), j->reservation);
        fmt_amount(have, sizeof(have), pool->total);
        j->cannot = xasprintf(
            "it needs %s (its claim plus %llu MiB for the runner), more than the whole pool "
            "of %s: lower its provium:claim, or give the pool more with --mem / --cpus",
            want, POOL_FILE_OVERHEAD >> 20, have);
    }
}

static json_t *amount_of(struct amount a)
{
    return events_amount(a.memory, a.cpus);
}

static void file_completed(const struct job *j, const char *status, int64_t ns)
{
    events_emit("file_completed", json_pack("{s:s, s:s, s:I}", "path", j->display, "status", status,
                                            "duration_ns", (json_int_t)ns));
}

static void pool_state(const struct pool *p)
{
    struct amount avail = {p->total.memory - p->used.memory, p->total.cpus - p->used.cpus};
    events_emit("pool_state",
                json_pack("{s:o, s:o}", "used", amount_of(p->used), "available", amount_of(avail)));
}

static void show_progress(struct report *rep, size_t done, int active, size_t queued,
                          const char *blocked, int64_t t0)
{
    char line[160];
    snprintf(line, sizeof(line), "[provium] %zu done, %d running, %zu queued%s%s, %.0fs", done,
             active, queued, blocked ? "; waiting: " : "", blocked ? blocked : "",
             (double)(now_ns() - t0) / 1e9);
    report_progress(rep, line);
}

int runner_signalfd(sigset_t *old)
{
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, old);
    return signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
}

/* One run of the files: what the steps of runner_run share. */
struct run {
    const struct config *cfg;
    const struct run_opts *o;
    struct report rep;
    struct pool pool;
    struct cpu_wait cpu; /* how long the running files waited for a CPU */
    struct job *plans;   /* every file, in discovery order */
    size_t nfiles, next, done;
    struct job **slots; /* the running files; NULL is a free slot */
    int nslots, active;
    char **failed, **passed; /* for --rerun-failed's state */
    size_t nfailed, npassed;
    bool interrupted, stop;
    const char *blocked; /* why the next file waits (an event reason), or NULL */
    int sfd;             /* Ctrl-C, SIGTERM, SIGHUP */
    sigset_t oldmask;
    int64_t t0, next_tick;
};

/* A file ends without having run (a bad claim, no process): it failed. */
static void run_not_started(struct run *r, struct job *j, const char *why)
{
    report_error(&r->rep, j->display, why);
    r->failed[r->nfailed++] = j->file;
    file_completed(j, "failed", 0);
    r->done++;
}

/* Start files while slots and the pool allow, FIFO in discovery order: a
 * file that does not fit holds back the ones behind it. */
static void run_dispatch(struct run *r)
{
    r->blocked = NULL;
    while (!r->stop && !r->interrupted && r->active < r->nslots && r->next < r->nfiles) {
        struct job *j = &r->plans[r->next];
        if (j->cannot) {
            r->next++;
            run_not_started(r, j, j->cannot);
            continue;
        }
        /* the host is short of CPU: start nothing new unless idle (files
         * waiting at a barrier are: the file they wait for may be this one) */
        bool busy = (size_t)r->active > barrier_waiting() && pool_cpu_busy(&r->cpu);
        const char *reason = !pool_fits(&r->pool, j->reservation) ? "pool_full"
                             : busy                               ? "psi_pressure"
                                                                  : NULL;
        if (reason) {
            r->blocked = reason;
            if (!j->blocked_said)
                events_emit("file_blocked",
                            json_pack("{s:s, s:o, s:s}", "path", j->display, "waiting_for",
                                      amount_of(j->reservation), "reason", reason));
            j->blocked_said = true;
            return;
        }
        int slot = 0;
        while (r->slots[slot])
            slot++;
        r->next++;
        if (start_job(r->cfg, j, r->o, &r->oldmask) < 0) {
            run_not_started(r, j, "cannot start a process for it");
            continue;
        }
        r->slots[slot] = j;
        pool_take(&r->pool, j->reservation);
        r->active++;
        events_emit("file_dispatched", json_pack("{s:s, s:o}", "path", j->display, "reservation",
                                                 amount_of(j->reservation)));
        events_emit("claim_acquired", json_pack("{s:s, s:o}", "path", j->display, "amount",
                                                amount_of(j->reservation)));
    }
}

static void sample_cpu_wait(struct run *r, int64_t now)
{
    pid_t pids[RUNNER_MAX_JOBS];
    size_t n = 0;
    for (int k = 0; k < r->nslots; k++)
        if (r->slots[k])
            pids[n++] = r->slots[k]->pid;
    pool_cpu_sample(&r->cpu, pids, n, now);
}

/* Wait until a running file has something to say, a deadline passes, a
 * signal or an events client arrives, or the once-a-second tick is due. */
static void run_wait(struct run *r, struct pollfd *p)
{
    int n = 0;
    p[n++] = (struct pollfd){r->sfd, POLLIN, 0};
    p[n++] = (struct pollfd){events_pollfd(), POLLIN, 0};
    int64_t now = now_ns(), wake = 0;
    for (int k = 0; k < r->nslots; k++) {
        struct job *j = r->slots[k];
        if (!j)
            continue;
        p[n++] = (struct pollfd){j->outfd, POLLIN, 0};
        p[n++] = (struct pollfd){j->resfd, POLLIN, 0};
        p[n++] = (struct pollfd){j->evfd, POLLIN, 0};
        p[n++] = (struct pollfd){j->pidfd, POLLIN, 0};
        p[n++] = (struct pollfd){j->barfd, POLLIN, 0};
        int64_t at = j->kill_at_ns ? j->kill_at_ns : j->deadline_ns;
        if (at && (!wake || at < wake))
            wake = at;
        if (j->pidfd < 0) {
            int64_t look = now + JOB_WAITPID_MS * 1000000LL;
            wake = wake ? MIN(wake, look) : look;
        }
    }
    wake = wake ? MIN(wake, r->next_tick) : r->next_tick;
    int timeout = (int)MAX(0, (wake - now) / 1000000 + 1);
    poll(p, (nfds_t)n, timeout);
    /* once a second: the progress line, the pool's state, and another look
     * at how long the files wait for a CPU, before the next dispatch */
    now = now_ns();
    if (now >= r->next_tick) {
        show_progress(&r->rep, r->done, r->active, r->nfiles - r->done - (size_t)r->active,
                      r->blocked, r->t0);
        pool_state(&r->pool);
        sample_cpu_wait(r, now);
        r->next_tick = now + 1000000000LL;
    }
}

/* Ctrl-C, SIGTERM or SIGHUP: SIGTERM to every running file, SIGKILL 5 s
 * later; nothing new starts. */
static void run_interrupt(struct run *r)
{
    struct signalfd_siginfo si;
    while (read(r->sfd, &si, sizeof(si)) > 0)
        ;
    if (!r->interrupted)
        report_note(&r->rep, "provium: interrupted; stopping the running files");
    r->interrupted = true;
    for (int k = 0; k < r->nslots; k++) {
        struct job *j = r->slots[k];
        if (j && !j->term_sent) {
            kill(j->pid, SIGTERM);
            j->term_sent = true;
            j->interrupted = true;
            j->kill_at_ns = now_ns() + 5000000000LL;
        }
    }
}

/* A file past its --timeout gets SIGTERM, and SIGKILL 5 s after that. */
static void job_deadlines(struct job *j, int64_t now)
{
    if (j->deadline_ns && now >= j->deadline_ns && !j->term_sent && !j->kept) {
        j->timed_out = true;
        j->term_sent = true;
        kill(j->pid, SIGTERM);
        j->kill_at_ns = now + 5000000000LL;
    }
    if (j->kill_at_ns && now >= j->kill_at_ns)
        kill(j->pid, SIGKILL);
}

/* The run's files that may still arrive at a barrier: those not ended,
 * or only the running ones once nothing new will start. */
static size_t run_left(const struct run *r)
{
    return r->stop || r->interrupted ? (size_t)r->active : r->nfiles - r->done;
}

/* The barrier requests a file sent (docs/labs.md), and 'K': the file
 * keeps its VMs until Ctrl-C (--keep-on-failure, src/host/attach.c), with
 * the lines that say how to attach to them, printed now. */
static void job_barriers(struct run *r, struct job *j)
{
    char pkt[4096];
    ssize_t n;
    while ((n = recv(j->barfd, pkt, sizeof(pkt) - 1, 0)) > 0) {
        if (pkt[0] != 'K') {
            barrier_packet(j->barfd, j->display, pkt, (size_t)n);
            continue;
        }
        pkt[n] = 0;
        j->kept = true;
        report_note(&r->rep, pkt + 1);
    }
}

/* Collect what the running files wrote, enforce their deadlines, and
 * report the ones that ended. */
static void run_reap(struct run *r)
{
    int64_t now = now_ns();
    for (int k = 0; k < r->nslots; k++) {
        struct job *j = r->slots[k];
        if (!j)
            continue;
        drain(&j->outfd, &j->out, JOB_OUTPUT_MAX);
        drain(&j->resfd, &j->res, JOB_OUTPUT_MAX);
        forward_events(j);
        job_barriers(r, j);
        job_deadlines(j, now);
        int status = 0;
        if (!job_exited(j, &status))
            continue;
        int verdict = finish_job(j, status, r->o, &r->rep);
        if (verdict > 0) /* an infrastructure error runs again too */
            r->failed[r->nfailed++] = j->file;
        else if (verdict == 0)
            r->passed[r->npassed++] = j->file;
        pool_give(&r->pool, j->reservation);
        file_completed(j, j->status, now_ns() - j->start_ns);
        events_emit("claim_released", json_pack("{s:s, s:o}", "path", j->display, "amount",
                                                amount_of(j->reservation)));
        r->slots[k] = NULL;
        r->active--;
        r->done++;
        r->next_tick = 0;
        if (r->o->fail_fast && (r->rep.files_failed || r->rep.files_errored))
            r->stop = true;
        barrier_file_ended(j->barfd, run_left(r));
        closep(&j->barfd);
    }
    barrier_file_ended(-1, run_left(r));
}

/* Every file is discovered (and its claim read) before any starts. */
static void run_init(struct run *r, const struct config *cfg, const struct run_opts *o,
                     char **files, size_t nfiles)
{
    *r = (struct run){.cfg = cfg, .o = o, .nfiles = nfiles, .pool = {.total = o->pool}};
    report_init(&r->rep, o->verbosity, o->json, o->tap, o->junit != NULL, o->events_stdout);
    if (o->header && o->verbosity >= NORMAL)
        report_note(&r->rep, o->header);
    const char *ksm = o->ksm ? pool_ksm_tune() : NULL;
    if (ksm && o->verbosity >= NORMAL)
        fprintf(stderr, "provium: %s\n", ksm);
    r->nslots = o->jobs > 0 ? MIN(o->jobs, RUNNER_MAX_JOBS) : RUNNER_MAX_JOBS;
    r->sfd = runner_signalfd(&r->oldmask);
    r->plans = xcalloc(nfiles + 1, sizeof(*r->plans));
    for (size_t i = 0; i < nfiles; i++) {
        r->plans[i] = (struct job){.file = files[i], .display = runner_display_name(files[i])};
        plan_job(&r->plans[i], &r->pool);
    }
    r->slots = xcalloc((size_t)r->nslots, sizeof(*r->slots));
    barrier_file_ended(-1, nfiles);
    r->failed = xcalloc(nfiles + 1, sizeof(char *));
    r->passed = xcalloc(nfiles + 1, sizeof(char *));
    r->t0 = now_ns();
}

/* The summary, --rerun-failed's state and --junit; returns the exit code. */
static int run_end(struct run *r)
{
    /* files that never started (Ctrl-C, --fail-fast) end too */
    for (; r->next < r->nfiles; r->next++)
        file_completed(&r->plans[r->next], "not_run", 0);
    pool_state(&r->pool);
    struct pv_err err = {0};
    if (rerun_state_update(r->failed, r->nfailed, r->passed, r->npassed, &err) < 0)
        fprintf(stderr, "provium: cannot record the results for --rerun-failed: %s\n", err.msg);
    for (size_t i = 0; i < r->nfiles; i++) {
        free(r->plans[i].display);
        free(r->plans[i].cannot);
    }
    free(r->plans);
    free(r->failed);
    free(r->passed);
    free(r->slots);
    pool_cpu_wait_free(&r->cpu);
    close(r->sfd);
    sigprocmask(SIG_SETMASK, &r->oldmask, NULL);
    double seconds = (double)(now_ns() - r->t0) / 1e9;
    report_summary(&r->rep, seconds);
    /* a failure is the kernel's or the test's; an infrastructure error
     * alone is the machine's (docs/cli.md#exit-status) */
    int code = r->rep.files_failed ? 1 : r->rep.files_errored ? 3 : 0;
    if (r->interrupted)
        code = r->rep.files_failed ? 1 : 130;
    if (r->o->junit && ci_junit_write(r->o->junit, r->rep.junit, seconds, &err) < 0) {
        fprintf(stderr, "provium: %s\n", err.msg);
        code = 2;
    }
    report_release(&r->rep);
    return code;
}

int runner_run(const struct config *cfg, const struct run_opts *o, char **files, size_t nfiles)
{
    struct run r;
    run_init(&r, cfg, o, files, nfiles);
    for (;;) {
        run_dispatch(&r);
        if (r.active == 0)
            break;
        struct pollfd p[2 + 5 * RUNNER_MAX_JOBS];
        run_wait(&r, p);
        if (p[1].revents & POLLIN)
            events_accept();
        if (p[0].revents & POLLIN)
            run_interrupt(&r);
        run_reap(&r);
    }
    return run_end(&r);
}
