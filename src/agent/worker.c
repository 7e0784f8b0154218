/* Workers (docs/workers.md). PV_WORKER starts another agent process with the
 * credentials the test asked for (uid, gid, groups, capabilities,
 * no_new_privs, cwd, environment), connected to this agent by a socketpair.
 * PV_VIA hands it a request; the frames it sends back pass through here
 * unchanged. Only frames that answer a request forwarded to that worker
 * pass, and each is checked: a test that scribbles on the worker's socket
 * (it can: the worker makes raw syscalls) kills that worker, nothing more.
 *
 * A worker that goes away fails the requests it still had with ECHILD and
 * the way it ended; later requests to it get the same answer until the host
 * ends it with PV_WORKER_END. */
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "agent.h"
#include "child.h"
#include "spawn.h"

#define WORKER_GRACE_MS 2000
/* Requests queued for a worker that does not read them. */
#define WORKER_OUT_MAX (64u << 20)
#define WORKER_MAX_GROUPS 256
#define WORKER_MAX_ENV 4096

struct worker {
    struct worker *next;
    uint64_t handle;
    pid_t pid;
    int fd; /* -1 once it hung up */
    struct buf in, out;
    uint32_t *pending; /* ids of the requests it has not answered */
    size_t npending, cap;
    uint32_t ender;  /* the PV_WORKER_END answered once it is reaped */
    int64_t kill_at; /* after PV_WORKER_END: SIGKILL then */
    bool reaped;
    int wstatus;
    char why[96]; /* "exited with status 3": the answer for what it left */
};

static struct worker *find(struct agent *a, uint64_t handle)
{
    for (struct worker *w = a->workers; w; w = w->next)
        if (w->handle == handle)
            return w;
    return NULL;
}

static void unlink_free(struct agent *a, struct worker *w)
{
    for (struct worker **pp = &a->workers; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    if (w->fd >= 0)
        close(w->fd);
    buf_release(&w->in);
    buf_release(&w->out);
    free(w->pending);
    free(w);
}

static void pending_add(struct worker *w, uint32_t id)
{
    if (w->npending == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 16;
        w->pending = xrealloc(w->pending, w->cap * sizeof(*w->pending));
    }
    w->pending[w->npending++] = id;
}

static bool pending_take(struct worker *w, uint32_t id, bool remove)
{
    for (size_t i = 0; i < w->npending; i++) {
        if (w->pending[i] != id)
            continue;
        if (remove)
            w->pending[i] = w->pending[--w->npending];
        return true;
    }
    return false;
}

/* The worker hung up or misbehaved: stop talking to it. Its requests are
 * answered once it is reaped and the reason is known. */
static void hang_up(struct worker *w)
{
    if (w->fd < 0)
        return;
    /* killed before its socket closes: else it may see the hang-up and
     * exit on its own first, and its status would not say it was killed */
    if (!w->reaped) /* else the pid may be someone else's by now */
        kill(w->pid, SIGKILL);
    close(w->fd);
    w->fd = -1;
}

/* ---- the child: credentials, then exec the agent in worker mode ---- */

struct creds {
    uint32_t flags, uid, gid, ngroups;
    gid_t groups[WORKER_MAX_GROUPS];
    uint64_t caps;
    const char *cwd;
};

static int set_caps(uint64_t caps)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2] = {
        {(uint32_t)caps, (uint32_t)caps, (uint32_t)caps},
        {(uint32_t)(caps >> 32), (uint32_t)(caps >> 32), (uint32_t)(caps >> 32)},
    };
    if (syscall(SYS_capset, &h, d) < 0)
        return -1;
    for (int c = 0; c < 64; c++)
        if ((caps >> c & 1) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
            return -1;
    return 0;
}

/* In the forked child: the credentials. Returns 0, or the step that failed
 * (enum child_step) with errno set. */
static int become(const struct creds *c)
{
    bool ids = c->flags & (PV_WK_UID | PV_WK_GID);
    if (c->flags & PV_WK_GROUPS ? setgroups(c->ngroups, c->groups) < 0
                                : ids && setgroups(0, NULL) < 0)
        return CHILD_SETGROUPS;
    if ((c->flags & PV_WK_GID) && setresgid(c->gid, c->gid, c->gid) < 0)
        return CHILD_SETRESGID;
    if (c->flags & PV_WK_CAPS) {
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
            return CHILD_KEEPCAPS;
        for (int cap = 0; cap < 64; cap++)
            if (!(c->caps >> cap & 1) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 &&
                errno != EINVAL)
                return CHILD_CAPBSET_DROP;
    }
    if ((c->flags & PV_WK_UID) && setresuid(c->uid, c->uid, c->uid) < 0)
        return CHILD_SETRESUID;
    if ((c->flags & PV_WK_CAPS) && set_caps(c->caps) < 0)
        return CHILD_CAPSET;
    if ((c->flags & PV_WK_NO_NEW_PRIVS) && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return CHILD_NO_NEW_PRIVS;
    return 0;
}

/* The worker: credentials first, then the common setup (child.h), whose
 * PR_SET_PDEATHSIG comes after them because a change of credentials clears
 * it, and whose chdir is made with the worker's own rights. Then exec the
 * agent in worker mode, the socket as its stdin. */
__attribute__((noreturn)) static void child(const struct creds *c, int sock, int exe, char **env,
                                            int report_fd, pid_t parent)
{
    int step = become(c);
    struct child_opts o = {
        .parent = parent,
        .flags = CHILD_PGRP,
        .cwd = *c->cwd ? c->cwd : "/",
        .stdio = {sock, -1, -1},
        .report_fd = report_fd,
    };
    if (!step)
        step = child_setup(&o);
    if (!step) {
        static char name[] = "provium-worker", flag[] = "--worker";
        char *argv[] = {name, flag, NULL};
        syscall(SYS_execveat, exe, "", argv, env, AT_EMPTY_PATH);
        step = CHILD_EXEC;
    }
    child_fail(o.report_fd, step);
}

/* Returns 0 with *ret, or -errno with msg saying which step failed. */
static int start(struct agent *a, const struct creds *c, char **env, struct worker **ret, char *msg,
                 size_t msglen)
{
    /* The agent's own binary, opened while we still may: after a change of
     * uid, /proc/self/exe is out of reach. */
    const char *path = a->opts.worker_exe ? a->opts.worker_exe : "/proc/self/exe";
    int exe = open(path, O_PATH | O_CLOEXEC);
    if (exe < 0)
        return -errno;
    int sv[2], rep[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        int e = errno;
        close(exe);
        return -e;
    }
    if (pipe2(rep, O_CLOEXEC) < 0) {
        int e = errno;
        close(exe), close(sv[0]), close(sv[1]);
        return -e;
    }
    pid_t parent = getpid();
    pid_t pid = child_fork(NULL);
    if (pid == 0)
        child(c, sv[1], exe, env, rep[1], parent);
    int fork_errno = errno;
    close(exe), close(sv[1]), close(rep[1]);
    if (pid < 0) {
        close(sv[0]), close(rep[0]);
        return -fork_errno;
    }
    /* exec closes rep[1]: a clean EOF means the worker runs */
    struct child_report f;
    int r = child_wait_exec(rep[0], &f);
    close(rep[0]);
    if (r != 0) {
        close(sv[0]);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (r < 0)
            return r;
        snprintf(msg, msglen, "%s: %s", f.step == CHILD_EXEC ? "execveat" : child_step_name(f.step),
                 strerror(f.errnum));
        return -f.errnum;
    }
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    struct worker *w = xcalloc(1, sizeof(*w));
    *w = (struct worker){.next = a->workers, .handle = ++a->next_worker, .pid = pid, .fd = sv[0]};
    a->workers = w;
    *ret = w;
    return 0;
}

int agent_op_worker(struct agent *a, uint32_t id, struct pv_rd *r)
{
    if (a->opts.worker)
        return -EPERM;
    struct creds c = {0};
    c.flags = pv_get_u32(r);
    c.uid = pv_get_u32(r);
    c.gid = pv_get_u32(r);
    c.ngroups = pv_get_count(r, 4);
    if (c.ngroups > WORKER_MAX_GROUPS)
        return -E2BIG;
    for (uint32_t i = 0; i < c.ngroups; i++)
        c.groups[i] = pv_get_u32(r);
    c.caps = pv_get_u64(r);
    c.cwd = pv_get_str(r);
    uint32_t envc = pv_get_count(r, 5);
    if (envc > WORKER_MAX_ENV)
        return -E2BIG;
    _cleanup_free_ const char **envs = xcalloc(envc + 1, sizeof(char *));
    for (uint32_t i = 0; i < envc; i++)
        envs[i] = pv_get_str(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    for (uint32_t i = 0; i < envc; i++)
        if (!strchr(envs[i], '='))
            return -EINVAL;
    _cleanup_free_ char **env = agent_env(envs, envc, c.flags & PV_WK_ENV_CLEAR);
    struct worker *w = NULL;
    char msg[160] = "";
    int ret = start(a, &c, env, &w, msg, sizeof(msg));
    if (ret < 0) {
        agent_send_err(a, id, -ret, "worker: %s", msg[0] ? msg : strerror(-ret));
        return 0;
    }
    struct buf b = BUF_INIT;
    struct pv_wr wr = {&b};
    pv_put_u64(&wr, w->handle);
    pv_put_u32(&wr, (uint32_t)w->pid);
    agent_send_ok(a, id, &b);
    buf_release(&b);
    return 0;
}

static void flush(struct worker *w)
{
    while (w->fd >= 0 && w->out.len) {
        ssize_t n = write(w->fd, w->out.data, w->out.len);
        if (n > 0)
            buf_consume(&w->out, (size_t)n);
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && errno == EAGAIN)
            return;
        else
            hang_up(w);
    }
}

int agent_op_via(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint64_t handle = pv_get_u64(r);
    uint32_t type = pv_get_u32(r);
    size_t len;
    const void *payload = pv_get_bytes(r, &len);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (a->opts.worker)
        return -EPERM;
    struct worker *w = find(a, handle);
    if (!w) {
        agent_send_err(a, id, ESRCH, "no worker %llu", (unsigned long long)handle);
        return 0;
    }
    if (w->fd < 0 || w->ender) {
        agent_send_err(a, id, ECHILD, "worker %llu %s", (unsigned long long)handle,
                       w->reaped ? w->why : "is ending");
        return 0;
    }
    if (type == 0 || type >= PV_REQ_MAX || type == PV_HELLO)
        return -EINVAL;
    if (w->out.len > WORKER_OUT_MAX)
        return -ENOBUFS;
    if (type == PV_CANCEL) {
        /* the host has forgotten the target: drop what it still sends */
        struct pv_rd c;
        pv_rd_init(&c, payload, len);
        uint32_t target = pv_get_u32(&c);
        if (!c.bad)
            pending_take(w, target, true);
    } else {
        pending_add(w, id);
    }
    pv_frame(&w->out, (uint16_t)type, id, payload, len);
    flush(w);
    return 0;
}

int agent_op_worker_end(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint64_t handle = pv_get_u64(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    struct worker *w = find(a, handle);
    if (!w)
        return -ESRCH;
    if (w->ender)
        return -EBUSY;
    if (w->reaped) {
        agent_reply_u32(a, id, (uint32_t)w->wstatus);
        unlink_free(a, w);
        return 0;
    }
    /* at end of input it kills its processes and exits */
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    w->ender = id;
    w->kill_at = now_ms() + WORKER_GRACE_MS;
    return 0;
}

/* Forward each whole frame in w->in that answers one of its requests. */
static void from_worker(struct agent *a, struct worker *w)
{
    while (w->in.len >= PV_HDR_SIZE) {
        struct pv_hdr h;
        const char *why;
        if (pv_hdr_decode((const uint8_t *)w->in.data, &h, &why) < 0 ||
            h.version != PV_PROTO_VERSION) {
            hang_up(w);
            return;
        }
        if (w->in.len - PV_HDR_SIZE < h.len)
            return;
        bool final = h.type == PV_OK || h.type == PV_ERR;
        if ((final || h.type == PV_EV_CHUNK) && pending_take(w, h.id, final))
            agent_send(a, h.type, h.id, w->in.data + PV_HDR_SIZE, h.len);
        buf_consume(&w->in, PV_HDR_SIZE + h.len);
    }
}

int worker_pollfds(struct agent *a, struct pollfd *fds, int max, int64_t *deadline_ms)
{
    int n = 0;
    for (struct worker *w = a->workers; w; w = w->next) {
        if (w->kill_at && (!*deadline_ms || w->kill_at < *deadline_ms))
            *deadline_ms = w->kill_at;
        if (w->fd < 0 || n == max)
            continue;
        fds[n++] = (struct pollfd){w->fd, (short)(POLLIN | (w->out.len ? POLLOUT : 0)), 0};
    }
    return n;
}

/* Read what the worker sent; false once it hung up. */
static bool receive(struct agent *a, struct worker *w)
{
    ssize_t got = buf_read(&w->in, w->fd);
    if (got > 0) {
        from_worker(a, w);
        return w->fd >= 0;
    }
    if (got == 0 || (errno != EAGAIN && errno != EINTR))
        hang_up(w);
    return false;
}

void worker_events(struct agent *a, struct pollfd *fds, int n)
{
    int64_t now = now_ms();
    for (struct worker *w = a->workers; w; w = w->next) {
        if (w->kill_at && now >= w->kill_at && !w->reaped) {
            kill(w->pid, SIGKILL);
            w->kill_at = 0;
        }
        for (int i = 0; i < n && w->fd >= 0; i++) {
            if (fds[i].fd != w->fd)
                continue;
            if (fds[i].revents & POLLOUT)
                flush(w);
            if (w->fd >= 0 && (fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                receive(a, w);
            break;
        }
    }
}

bool worker_reaped(struct agent *a, pid_t pid, int status)
{
    struct worker *w = a->workers;
    while (w && w->pid != pid)
        w = w->next;
    if (!w)
        return false;
    char st[64];
    spawn_describe_status(status, st, sizeof(st));
    snprintf(w->why, sizeof(w->why), "(pid %d) %s", (int)pid, st);
    w->reaped = true;
    w->wstatus = status;
    w->kill_at = 0;
    /* its last replies may still wait in the socket */
    while (w->fd >= 0 && receive(a, w))
        ;
    hang_up(w);
    for (size_t i = 0; i < w->npending; i++)
        agent_send_err(a, w->pending[i], ECHILD, "worker %llu %s", (unsigned long long)w->handle,
                       w->why);
    w->npending = 0;
    if (w->ender) {
        agent_reply_u32(a, w->ender, (uint32_t)status);
        unlink_free(a, w);
    }
    return true;
}

void worker_kill_all(struct agent *a)
{
    for (struct worker *w = a->workers; w; w = w->next)
        if (!w->reaped)
            kill(w->pid, SIGKILL);
    while (a->workers) {
        struct worker *w = a->workers;
        if (!w->reaped)
            waitpid(w->pid, NULL, 0);
        unlink_free(a, w);
    }
}
