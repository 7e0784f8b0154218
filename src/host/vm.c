#include "vm.h"

#include "accel.h"
#include "events.h"
#include "pool.h"
#include "zpipe.h"

#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/vm_sockets.h>

struct vm_globals vm_globals = {.accel = ACCEL_TCG, .transport = TRANSPORT_VIRTIO_SERIAL,
                                .machine = "pc", .timeout_scale = 1.0};

/* QEMU pids to kill from a signal handler; plain stores only. */
static volatile pid_t live_pids[256];
/* Every struct vm of this process, for vm_kill_everything(). */
static struct vm *all_vms;

static void track(pid_t pid)
{
    for (size_t i = 0; i < ARRAY_SIZE(live_pids); i++) {
        if (!live_pids[i]) {
            live_pids[i] = pid;
            return;
        }
    }
}

static void untrack(pid_t pid)
{
    for (size_t i = 0; i < ARRAY_SIZE(live_pids); i++)
        if (live_pids[i] == pid)
            live_pids[i] = 0;
}

void vm_forget_all(void)
{
    for (size_t i = 0; i < ARRAY_SIZE(live_pids); i++)
        live_pids[i] = 0;
    all_vms = NULL;
}

void vm_kill_all(void)
{
    for (size_t i = 0; i < ARRAY_SIZE(live_pids); i++) {
        pid_t p = live_pids[i];
        if (p > 0) {
            kill(-p, SIGKILL);
            kill(p, SIGKILL);
        }
    }
}

const char *vm_state_name(enum vm_state s)
{
    static const char *names[] = {"created", "booted", "paused", "shutdown", "dead"};
    return names[s];
}

void vm_boot_release(struct vm_boot *b)
{
    free(b->kernel);
    free(b->initrd);
    free(b->cmdline);
    free(b->modules_dir);
    for (size_t i = 0; b->disks && b->disks[i]; i++)
        free(b->disks[i]);
    free(b->disks);
    free(b->disk_ro);
    memset(b, 0, sizeof(*b));
}


void vm_kill_everything(const char *why)
{
    for (struct vm *vm = all_vms; vm; vm = vm->next_live) {
        if (vm->state != VM_BOOTED && vm->state != VM_PAUSED)
            continue;
        vm_kill(vm);
        vm->state = VM_DEAD;
        free(vm->exit_reason);
        vm->exit_reason = xstrdup(why);
    }
}

struct vm *vm_new(const char *name, const char *profile)
{
    struct vm *vm = xcalloc(1, sizeof(*vm));
    vm->next_live = all_vms;
    all_vms = vm;
    vm->name = xstrdup(name);
    vm->profile = xstrdup(profile);
    vm->pidfd = -1;
    vm->qmp.fd = -1;
    vm->chan.fd = -1;
    vm->kmsg_fd = -1;
    return vm;
}

/* Reap QEMU; SIGKILL first unless it already exited. */
static void stop_qemu(struct vm *vm, int grace_ms)
{
    vm_globals.memory_in_use -= MIN(vm->charged, vm_globals.memory_in_use);
    vm->charged = 0;
    if (vm->announced)
        events_emit("vm_shutdown",
                    json_pack("{s:s, s:s, s:I}", "file", vm_globals.file ? vm_globals.file : "",
                              "vm_name", vm->name, "duration_ns",
                              (json_int_t)(now_ns() - vm->boot_ns)));
    vm->announced = false;
    if (vm->pid <= 0)
        return;
    if (grace_ms > 0) {
        struct pollfd p = {vm->pidfd, POLLIN, 0};
        poll(&p, 1, grace_ms);
    }
    kill(-vm->pid, SIGKILL);
    kill(vm->pid, SIGKILL);
    waitpid(vm->pid, NULL, 0);
    untrack(vm->pid);
    vm->pid = 0;
    if (vm->pidfd >= 0)
        close(vm->pidfd);
    vm->pidfd = -1;
    qmp_release(&vm->qmp);
    chan_release(&vm->chan);
}

void vm_free(struct vm *vm)
{
    if (!vm)
        return;
    for (struct vm **pp = &all_vms; *pp; pp = &(*pp)->next_live) {
        if (*pp == vm) {
            *pp = vm->next_live;
            break;
        }
    }
    stop_qemu(vm, 0);
    if (vm->kmsg_fd >= 0)
        close(vm->kmsg_fd);
    if (vm->dir)
        rm_rf(vm->dir);
    free(vm->dir);
    free(vm->name);
    free(vm->profile);
    free(vm->exit_reason);
    free(vm->modules_dir);
    vm_boot_release(&vm->plan);
    free(vm);
}

static int listen_unix(const char *path, struct pv_err *err)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(a.sun_path))
        return pv_err_set(err, ENAMETOOLONG, "socket path too long: %s", path);
    strcpy(a.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return pv_err_set(err, errno, "socket: %s", strerror(errno));
    unlink(path);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1) < 0) {
        int e = errno;
        close(fd);
        return pv_err_set(err, e, "listen on %s: %s", path, strerror(e));
    }
    return fd;
}

/* Accept QEMU's connection, watching for QEMU's death. */
static int accept_qemu(struct vm *vm, int lfd, int64_t deadline_ns, struct pv_err *err)
{
    for (;;) {
        struct pollfd p[2] = {{lfd, POLLIN, 0}, {vm->pidfd, POLLIN, 0}};
        int64_t left = (deadline_ns - now_ns()) / 1000000;
        if (left <= 0)
            return pv_err_set(err, ETIMEDOUT, "QEMU did not connect");
        int n = poll(p, 2, (int)left);
        if (n < 0 && errno != EINTR)
            return pv_err_set(err, errno, "poll: %s", strerror(errno));
        if (p[0].revents & POLLIN) {
            int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0)
                return fd;
        }
        if (p[1].revents & POLLIN)
            return pv_err_set(err, EPIPE, "QEMU exited");
    }
}

/* vsock: the agent listens in the guest; connect until it answers. */
static int connect_vsock(struct vm *vm, int64_t deadline_ns, struct pv_err *err)
{
    struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = vm->cid, .svm_port = PV_VSOCK_PORT};
    for (;;) {
        int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return pv_err_set(err, errno, "vsock socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
            return fd;
        close(fd);
        struct pollfd p = {vm->pidfd, POLLIN, 0};
        if (poll(&p, 1, 20) == 1)
            return pv_err_set(err, EPIPE, "QEMU exited");
        if (now_ns() >= deadline_ns)
            return pv_err_set(err, ETIMEDOUT, "no agent on vsock cid %u port %d", vm->cid,
                              PV_VSOCK_PORT);
    }
}

static const char *last_console(const char *cmdline)
{
    const char *last = NULL;
    for (const char *p = cmdline; (p = strstr(p, "console=")); p += 8)
        if (p == cmdline || p[-1] == ' ')
            last = p + 8;
    return last;
}

void vm_console_socket(const struct vm *vm, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", vm->dir, vm->hvc_primary ? "hvc.sock" : "serial.sock");
}

int vm_console_log(struct vm *vm, struct buf *out)
{
    if (!vm->dir)
        return -ENOENT;
    _cleanup_free_ char *p = xasprintf("%s/%s", vm->dir, vm->hvc_primary ? "hvc.log" : "serial.log");
    int r = read_file(p, 256u << 20, out);
    if (r == 0 && out->len == 0 && vm->hvc_primary) {
        /* nothing reached hvc0 (its driver never loaded): show the serial port */
        free(p);
        p = xasprintf("%s/serial.log", vm->dir);
        r = read_file(p, 256u << 20, out);
    }
    return r;
}

void vm_console_tail(struct vm *vm, int lines, struct buf *out)
{
    struct buf log = BUF_INIT;
    vm_console_log(vm, &log);
    /* drop carriage returns; keep the last `lines` lines */
    size_t w = 0;
    for (size_t i = 0; i < log.len; i++)
        if (log.data[i] != '\r')
            log.data[w++] = log.data[i];
    log.len = w;
    while (log.len && log.data[log.len - 1] == '\n')
        log.len--;
    size_t start = log.len;
    for (int n = 0; start > 0; start--) {
        if (log.data[start - 1] == '\n' && ++n == lines)
            break;
    }
    if (log.len == 0)
        buf_adds(out, "    (the console printed nothing)\n");
    for (size_t i = start; i < log.len;) {
        const char *nl = memchr(log.data + i, '\n', log.len - i);
        size_t e = nl ? (size_t)(nl - log.data) : log.len;
        buf_adds(out, "    | ");
        buf_add(out, log.data + i, e - i);
        buf_adds(out, "\n");
        i = e + 1;
    }
    buf_release(&log);
}

/* Mark the VM dead and describe why, with the console tail. */
static int died(struct vm *vm, struct pv_err *err, const char *what)
{
    int status = 0;
    char how[128] = "";
    /* the sockets close a moment before QEMU is reapable */
    if (vm->pidfd >= 0) {
        struct pollfd p = {vm->pidfd, POLLIN, 0};
        poll(&p, 1, 1000);
    }
    if (vm->pid > 0 && waitpid(vm->pid, &status, WNOHANG) == vm->pid) {
        untrack(vm->pid);
        vm->pid = 0;
        if (WIFEXITED(status))
            snprintf(how, sizeof(how), " (QEMU exited with status %d)", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            snprintf(how, sizeof(how), " (QEMU killed by signal %d)", WTERMSIG(status));
    }
    stop_qemu(vm, 0);
    vm->state = VM_DEAD;
    struct buf tail = BUF_INIT;
    _cleanup_free_ char *qlog = xasprintf("%s/qemu.log", vm->dir);
    struct buf ql = BUF_INIT;
    if (read_file(qlog, 8192, &ql) == 0 && ql.len) {
        while (ql.len && ql.data[ql.len - 1] == '\n')
            ql.data[--ql.len] = 0;
        buf_addf(&tail, "  QEMU said: %s\n", ql.data);
    }
    buf_release(&ql);
    struct buf log = BUF_INIT;
    vm_console_log(vm, &log);
    if (log.data && strstr(log.data, "Kernel panic"))
        buf_adds(&tail, "  the guest kernel panicked\n");
    buf_release(&log);
    buf_adds(&tail, "  last console lines:\n");
    vm_console_tail(vm, 40, &tail);
    free(vm->exit_reason);
    vm->exit_reason = xasprintf("%s%s", what, how);
    pv_err_set(err, EPIPE, "vm `%s`: %s%s\n%s", vm->name, what, how, tail.data);
    buf_release(&tail);
    return -EPIPE;
}

void vm_kmsg_format(const void *p, size_t n, struct buf *out)
{
    const char *s = p, *end = s + n;
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *e = nl ? nl : end;
        const char *semi = memchr(s, ';', (size_t)(e - s));
        if (*s != ' ' && semi) {
            unsigned long long usec = 0;
            const char *f = memchr(s, ',', (size_t)(semi - s));
            f = f ? memchr(f + 1, ',', (size_t)(semi - f - 1)) : NULL;
            if (f)
                usec = strtoull(f + 1, NULL, 10);
            buf_addf(out, "[%5llu.%06llu] ", usec / 1000000, usec % 1000000);
            buf_add(out, semi + 1, (size_t)(e - semi - 1));
            buf_adds(out, "\n");
        }
        s = e + 1;
    }
}

/* PV_EV_KMSG: appended to kmsg.log. */
static void on_kmsg(void *ctx, uint16_t type, const void *p, size_t n)
{
    struct vm *vm = ctx;
    (void)type;
    struct buf out = BUF_INIT;
    vm_kmsg_format(p, n, &out);
    if (out.len && vm->kmsg_fd >= 0)
        write_all(vm->kmsg_fd, out.data, out.len);
    buf_release(&out);
}

int vm_kernel_log(struct vm *vm, struct buf *out)
{
    if (!vm->dir)
        return -ENOENT;
    _cleanup_free_ char *p = xasprintf("%s/kmsg.log", vm->dir);
    return read_file(p, 256u << 20, out);
}

/* While a call waits: did QEMU say the agent's port closed in the guest? */
static bool agent_gone(void *ctx)
{
    struct vm *vm = ctx;
    return qmp_port_closed(&vm->qmp, "agentport");
}

/* Watch QMP for the agent going away, once the agent is up; not while it
 * (re)starts, when the port closes and opens on purpose. */
static void watch_agent(struct vm *vm, bool on)
{
    qmp_clear_events(&vm->qmp);
    vm->chan.gone_fd = on && vm_globals.transport != TRANSPORT_VSOCK ? vm->qmp.fd : -1;
    vm->chan.gone = agent_gone;
}

/* The file's claim bounds the memory of its VMs at once. */
static int check_claim(struct vm *vm, uint64_t cost, struct pv_err *err)
{
    if (!vm_globals.claim_memory || vm_globals.memory_in_use + cost <= vm_globals.claim_memory)
        return 0;
    double mib = 1 << 20;
    return pv_err_set(
        err, ENOMEM,
        "vm `%s`: booting it would bring this file's VMs to %.0f MiB (guest memory plus %.0f "
        "MiB each for QEMU), over the %.0f MiB %s; declare what the file needs at its top, "
        "e.g. provium:claim{memory = \"%.0fM\", cpus = 2} (docs/running.md)",
        vm->name, (double)(vm_globals.memory_in_use + cost) / mib, POOL_VM_OVERHEAD / mib,
        (double)vm_globals.claim_memory / mib,
        vm_globals.claim_declared ? "of its provium:claim" : "a file without a provium:claim may use",
        (double)(vm_globals.memory_in_use + cost) / mib);
}

void vm_boot_copy(struct vm_boot *dst, const struct vm_boot *src)
{
    *dst = *src;
    dst->kernel = xstrdup(src->kernel);
    dst->initrd = src->initrd ? xstrdup(src->initrd) : NULL;
    dst->cmdline = xstrdup(src->cmdline);
    dst->modules_dir = src->modules_dir ? xstrdup(src->modules_dir) : NULL;
    size_t n = 0;
    while (src->disks && src->disks[n])
        n++;
    dst->disks = src->disks ? xcalloc(n + 1, sizeof(char *)) : NULL;
    dst->disk_ro = src->disks ? xcalloc(n + 1, sizeof(bool)) : NULL;
    for (size_t i = 0; i < n; i++) {
        dst->disks[i] = xstrdup(src->disks[i]);
        dst->disk_ro[i] = src->disk_ro && src->disk_ro[i];
    }
}

/* The VM's run directory, made at its first boot. */
static int vm_dir(struct vm *vm, struct pv_err *err)
{
    static unsigned seq;
    if (vm->dir)
        return 0;
    char *dir = xasprintf("%s/vm%u-%d", vm_globals.rundir, seq++, (int)getpid());
    if (mkdir(dir, 0700) < 0) {
        int e = errno;
        pv_err_set(err, e, "%s: %s", dir, strerror(e));
        free(dir);
        return -e;
    }
    vm->dir = dir;
    return 0;
}

/* The logs a boot writes (console, QEMU's own, the kernel's). */
static const char vm_logs[] = "serial.log\0hvc.log\0qemu.log\0kmsg.log\0";

/* Copy the logs in directory from into directory to (those it has). */
static int copy_logs(const char *from, const char *to, struct pv_err *err)
{
    for (const char *f = vm_logs; *f; f += strlen(f) + 1) {
        _cleanup_free_ char *src = xasprintf("%s/%s", from, f);
        _cleanup_free_ char *dst = xasprintf("%s/%s", to, f);
        struct buf log = BUF_INIT;
        int r = read_file(src, 64u << 20, &log);
        if (r == 0)
            r = write_file_atomic(dst, log.data ? log.data : "", log.len, 0600);
        buf_release(&log);
        if (r < 0 && r != -ENOENT)
            return pv_err_set(err, -r, "%s: %s", dst, strerror(-r));
    }
    return 0;
}

static void drop_logs(struct vm *vm)
{
    for (const char *f = vm_logs; *f; f += strlen(f) + 1) {
        _cleanup_free_ char *p = xasprintf("%s/%s", vm->dir, f);
        unlink(p);
    }
}

/* How launch starts QEMU, beyond the plan. */
struct start {
    bool incoming;        /* wait for a migration stream */
    bool fresh;           /* a new boot: the logs start empty (a restore continues them) */
    const char *ram_file; /* guest RAM in this file (struct qemu_config) */
    bool ram_shared;
};

/* Start QEMU for plan b as st says and negotiate QMP. Returns 0 with
 * *agent_l, the socket to accept the agent's channel on (-1 under vsock),
 * or -errno (the VM dead if QEMU had started). */
static int launch(struct vm *vm, const struct vm_boot *b, const struct start *st, int *agent_lp,
                  struct pv_err *err)
{
    *agent_lp = -1;
    uint64_t cost = (b->memory ? b->memory : POOL_DEFAULT_VM_MEMORY) + POOL_VM_OVERHEAD;
    int r = check_claim(vm, cost, err);
    if (r < 0)
        return r;
    if (access(b->kernel, R_OK) < 0)
        return pv_err_set(err, ENOENT, "vm `%s`: kernel %s: %s", vm->name, b->kernel,
                          strerror(errno));
    if ((r = vm_dir(vm, err)) < 0)
        return r;
    if (b != &vm->plan) {
        vm_boot_release(&vm->plan);
        vm_boot_copy(&vm->plan, b);
    }
    free(vm->modules_dir);
    vm->modules_dir = b->modules_dir ? xstrdup(b->modules_dir) : NULL;
    const char *con = last_console(b->cmdline);
    vm->hvc_primary = con && !strncmp(con, "hvc", 3);
    free(vm->exit_reason);
    vm->exit_reason = NULL;
    if (st->fresh)
        drop_logs(vm);
    if (vm->kmsg_fd >= 0)
        close(vm->kmsg_fd);
    _cleanup_free_ char *kpath = xasprintf("%s/kmsg.log", vm->dir);
    vm->kmsg_fd = open(kpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

    _cleanup_free_ char *qmp_path = xasprintf("%s/qmp.sock", vm->dir);
    _cleanup_free_ char *agent_path = xasprintf("%s/agent.sock", vm->dir);
    _cleanup_close_ int qmp_l = listen_unix(qmp_path, err);
    if (qmp_l < 0)
        return qmp_l;
    int agent_l = -1;
    if (vm_globals.transport != TRANSPORT_VSOCK) {
        agent_l = listen_unix(agent_path, err);
        if (agent_l < 0)
            return agent_l;
    }
    vm->cid = qemu_next_cid();
    struct qemu_config qc = {
        .machine = vm_globals.machine,
        .accel = vm_globals.accel,
        .transport = vm_globals.transport,
        .memory = b->memory,
        .cpus = b->cpus,
        .kernel = b->kernel,
        .initrd = b->initrd,
        .cmdline = b->cmdline,
        .dir = vm->dir,
        .cid = vm->cid,
        .has_rng_seed = b->has_rng_seed,
        .rng_seed = b->rng_seed,
        .disks = (const char *const *)b->disks,
        .disk_ro = b->disk_ro,
        .incoming = st->incoming,
        .ram_file = st->ram_file,
        .ram_shared = st->ram_shared,
    };
    char **argv = qemu_argv(&qc);
    vm->boot_ns = now_ns();
    r = qemu_start((const char *const *)argv, vm->dir, &vm->pid, &vm->pidfd, err);
    qemu_argv_free(argv);
    if (r < 0) {
        if (agent_l >= 0)
            close(agent_l);
        return pv_err_wrap(err, "vm `%s`", vm->name);
    }
    track(vm->pid);
    vm->state = VM_BOOTED;
    vm->charged = cost;
    vm_globals.memory_in_use += cost;

    int64_t qdeadline = now_ns() + (int64_t)(20e9 * vm_globals.timeout_scale);
    int fd = accept_qemu(vm, qmp_l, qdeadline, err);
    if (fd < 0)
        r = died(vm, err, "QEMU failed to start");
    else {
        qmp_init(&vm->qmp, fd, vm->pidfd);
        if (qmp_negotiate(&vm->qmp, qdeadline, err) < 0)
            r = died(vm, err, "QMP negotiation failed");
    }
    if (r < 0 && agent_l >= 0)
        close(agent_l);
    if (r == 0)
        *agent_lp = agent_l;
    return r;
}

/* Connect to the agent (accepting on agent_l, which is closed) and shake
 * hands; the VM is dead on failure. */
static int handshake(struct vm *vm, int agent_l, double agent_timeout, const char *since,
                     struct pv_err *err)
{
    uint32_t next_id = vm->chan.next_id;
    int64_t deadline = now_ns() + (int64_t)(agent_timeout * 1e9);
    int fd;
    if (vm_globals.transport == TRANSPORT_VSOCK)
        fd = connect_vsock(vm, deadline, err);
    else
        fd = accept_qemu(vm, agent_l, deadline, err);
    if (agent_l >= 0)
        close(agent_l);
    char what[sizeof(err->msg)];
    /* the usual cause: a kernel whose virtio drivers are modules, given none */
    snprintf(what, sizeof(what), "no agent within %.0fs of %s%s", agent_timeout, since,
             vm->modules_dir ? ""
                             : " (booted without a modules directory: a kernel whose virtio "
                               "drivers are modules needs PROVIUM_MODULES or a profile's "
                               "`modules`, docs/kernels.md)");
    if (fd == -ETIMEDOUT)
        return died(vm, err, what);
    if (fd < 0)
        return died(vm, err, "QEMU did not open the agent channel");
    chan_init(&vm->chan, fd, vm->pidfd);
    /* ids are never reused on a VM: a request of before may still be named */
    if (next_id > 1)
        vm->chan.next_id = next_id;
    vm->chan.on_event = on_kmsg;
    vm->chan.event_ctx = vm;
    int r = chan_hello(&vm->chan, deadline, err);
    if (r == -ETIMEDOUT)
        return died(vm, err, what);
    if (r < 0) {
        snprintf(what, sizeof(what), "%.900s", err->msg);
        return died(vm, err, what);
    }
    vm->ready_ns = now_ns();
    vm->agent_gen++;
    watch_agent(vm, true);
    vm->announced = !vm->quiet;
    if (vm->announced)
        events_emit("vm_spawned",
                    json_pack("{s:s, s:s, s:s, s:I, s:i, s:b}", "file",
                              vm_globals.file ? vm_globals.file : "", "vm_name", vm->name,
                              "profile", vm->profile, "memory_bytes",
                              (json_int_t)(vm->charged - POOL_VM_OVERHEAD), "cid", (int)vm->cid,
                              "boot_cache", vm->from_boot_cache));
    return 0;
}

static int need_stopped(struct vm *vm, const char *op, struct pv_err *err)
{
    if (vm->state == VM_CREATED || vm->state == VM_SHUTDOWN || vm->state == VM_DEAD)
        return 0;
    return pv_err_set(err, EBUSY, "vm `%s`: %s() needs a created or shut-down VM, it is %s",
                      vm->name, op, vm_state_name(vm->state));
}

static int boot(struct vm *vm, const struct vm_boot *b, const struct start *st,
                struct pv_err *err)
{
    int r = need_stopped(vm, "boot", err);
    if (r < 0)
        return r;
    vm->from_boot_cache = false;
    int agent_l;
    r = launch(vm, b, st, &agent_l, err);
    return r < 0 ? r : handshake(vm, agent_l, b->agent_timeout, "power-on", err);
}

int vm_boot(struct vm *vm, const struct vm_boot *b, struct pv_err *err)
{
    return boot(vm, b, &(struct start){.fresh = true}, err);
}

static int need_state(struct vm *vm, const char *op, enum vm_state want, struct pv_err *err)
{
    if (vm->state == want)
        return 0;
    if (vm->state == VM_DEAD && vm->exit_reason)
        return pv_err_set(err, EPIPE, "vm `%s`: %s() on a dead VM (%s)", vm->name, op,
                          vm->exit_reason);
    return pv_err_set(err, EINVAL, "vm `%s`: %s() needs a %s VM, but it is %s", vm->name, op,
                      vm_state_name(want), vm_state_name(vm->state));
}

/* The earlier of d (0: none) and the running test's deadline. */
static int64_t test_bound(int64_t d)
{
    int64_t t = vm_globals.op_deadline_ns;
    return t && (!d || t < d) ? t : d;
}

/* An operation's own limit, scaled for TCG, bounded by the test's. */
static int64_t op_deadline(double seconds)
{
    return test_bound(seconds > 0 ? now_ns() + (int64_t)(seconds * 1e9 * vm_globals.timeout_scale)
                                  : 0);
}

/* A guest op failed: a dead QEMU turns into the full story. */
static int op_failed(struct vm *vm, int r, struct pv_err *err)
{
    if (r == -EPIPE) {
        char what[sizeof(err->msg)];
        snprintf(what, sizeof(what), "%.900s", err ? err->msg : "connection lost");
        return died(vm, err, what);
    }
    return r;
}

int vm_ping(struct vm *vm, struct pv_err *err)
{
    int r = need_state(vm, "ping", VM_BOOTED, err);
    if (r < 0)
        return r;
    r = chan_call(&vm->chan, PV_PING, NULL, op_deadline(30), NULL, NULL, NULL, err);
    return op_failed(vm, r, err);
}

void vm_run_result_release(struct vm_run_result *r)
{
    buf_release(&r->out);
    buf_release(&r->err);
}

void vm_run_chunk(void *ctx, uint8_t stream, const void *p, size_t n)
{
    struct vm_run_result *res = ctx;
    struct buf *b = stream == PV_STDERR ? &res->err : &res->out;
    if (b->len + n <= VM_OUTPUT_CAP)
        buf_add(b, p, n);
}

void vm_encode_run(struct buf *b, const struct vm_run_req *req)
{
    struct pv_wr w = {b};
    pv_put_u32(&w, req->env_clear ? PV_RUN_ENV_CLEAR : 0);
    size_t argc = 0, envc = 0;
    while (req->argv[argc])
        argc++;
    while (req->env && req->env[envc])
        envc++;
    pv_put_u32(&w, (uint32_t)argc);
    for (size_t i = 0; i < argc; i++)
        pv_put_str(&w, req->argv[i]);
    pv_put_u32(&w, (uint32_t)envc);
    for (size_t i = 0; i < envc; i++)
        pv_put_str(&w, req->env[i]);
    pv_put_str(&w, req->cwd);
    pv_put_bytes(&w, req->stdin_data, req->stdin_len);
    pv_put_u32(&w, req->timeout_ms);
    pv_put_u64(&w, VM_OUTPUT_CAP);
}

int vm_decode_status(struct vm *vm, const struct buf *reply, struct vm_run_result *res,
                         struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    res->status = (int)pv_get_u32(&rd);
    res->exit_code = (int32_t)pv_get_u32(&rd);
    res->signal = (int)pv_get_u32(&rd);
    res->out_total = pv_get_u64(&rd);
    res->err_total = pv_get_u64(&rd);
    if (pv_rd_done(&rd) < 0 || res->status < PV_EXITED || res->status > PV_TIMED_OUT)
        return pv_err_set(err, EBADMSG, "vm `%s`: malformed exit status", vm->name);
    return 0;
}

/* Run and Wait: the output as chunks, then the exit status. */
static int run_call(struct vm *vm, const char *op, uint16_t type, const struct buf *req,
                    double limit, struct vm_run_result *res, struct pv_err *err)
{
    int r = need_state(vm, op, VM_BOOTED, err);
    if (r < 0)
        return r;
    struct buf reply = BUF_INIT;
    r = chan_call(&vm->chan, type, req, op_deadline(limit), vm_run_chunk, res, &reply, err);
    if (r == 0)
        r = vm_decode_status(vm, &reply, res, err);
    buf_release(&reply);
    return op_failed(vm, r, err);
}

int vm_run(struct vm *vm, const struct vm_run_req *req, struct vm_run_result *res,
           struct pv_err *err)
{
    struct buf b = BUF_INIT;
    vm_encode_run(&b, req);
    /* The agent enforces the timeout; the host waits a little longer. */
    double limit = req->timeout_ms ? req->timeout_ms / 1000.0 + 30 : 0;
    int r = run_call(vm, "run", PV_RUN, &b, limit, res, err);
    buf_release(&b);
    return r;
}

int vm_spawn(struct vm *vm, const struct vm_run_req *req, uint64_t *handle, uint32_t *pid,
             struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    vm_encode_run(&b, req);
    int r = vm_call(vm, "run_async", PV_SPAWN, &b, 60, &reply, err);
    if (r == 0) {
        struct pv_rd rd;
        pv_rd_init(&rd, reply.data, reply.len);
        *handle = pv_get_u64(&rd);
        *pid = pv_get_u32(&rd);
        if (pv_rd_done(&rd) < 0)
            r = pv_err_set(err, EBADMSG, "vm `%s`: malformed Spawn reply", vm->name);
    }
    buf_release(&b);
    buf_release(&reply);
    return r;
}

int vm_wait(struct vm *vm, uint64_t handle, uint32_t timeout_ms, struct vm_run_result *res,
            struct pv_err *err)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, handle);
    pv_put_u32(&w, timeout_ms);
    double limit = timeout_ms ? timeout_ms / 1000.0 + 30 : 0;
    int r = run_call(vm, "wait", PV_WAIT, &b, limit, res, err);
    buf_release(&b);
    return r;
}

#define VM_READ_CAP (1ull << 30)

struct read_ctx {
    struct buf *out;
    bool too_big;
};

static void data_chunk(void *ctx, uint8_t stream, const void *p, size_t n)
{
    struct read_ctx *rc = ctx;
    if (stream != PV_DATA)
        return;
    if (rc->out->len + n > VM_READ_CAP)
        rc->too_big = true;
    else
        buf_add(rc->out, p, n);
}

int vm_read_file(struct vm *vm, const char *path, struct buf *out, struct pv_err *err)
{
    int r = need_state(vm, "read_file", VM_BOOTED, err);
    if (r < 0)
        return r;
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_str(&w, path);
    struct read_ctx rc = {out, false};
    r = chan_call(&vm->chan, PV_READ_FILE, &b, op_deadline(120), data_chunk, &rc, NULL, err);
    buf_release(&b);
    if (r == 0 && rc.too_big)
        return pv_err_set(err, EFBIG, "vm `%s`: read_file %s: larger than 1 GiB", vm->name, path);
    return op_failed(vm, r, err);
}

int vm_write_file(struct vm *vm, const char *path, const void *data, size_t len, uint32_t mode,
                  bool append, struct pv_err *err)
{
    int r = need_state(vm, "write_file", VM_BOOTED, err);
    if (r < 0)
        return r;
    size_t off = 0;
    do {
        size_t n = MIN(len - off, (size_t)PV_CHUNK * 8);
        struct buf b = BUF_INIT;
        struct pv_wr w = {&b};
        uint32_t flags = PV_WR_CREATE;
        flags |= (off == 0 && !append) ? PV_WR_TRUNC : PV_WR_APPEND;
        if (off == 0 && mode != VM_DEFAULT_MODE)
            flags |= PV_WR_MODE;
        pv_put_str(&w, path);
        pv_put_u32(&w, mode);
        pv_put_u32(&w, flags);
        pv_put_bytes(&w, (const char *)data + off, n);
        r = chan_call(&vm->chan, PV_WRITE_FILE, &b, op_deadline(120), NULL, NULL, NULL, err);
        buf_release(&b);
        off += n;
    } while (r == 0 && off < len);
    return op_failed(vm, r, err);
}

int vm_decode_stat(struct vm *vm, const struct buf *reply, struct vm_stat *st, struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    st->type = (int)pv_get_u32(&rd);
    st->perm = pv_get_u32(&rd);
    st->size = pv_get_u64(&rd);
    st->mtime_ns = pv_get_i64(&rd);
    st->uid = pv_get_u32(&rd);
    st->gid = pv_get_u32(&rd);
    st->ino = pv_get_u64(&rd);
    st->nlink = pv_get_u32(&rd);
    if (pv_rd_done(&rd) < 0)
        return pv_err_set(err, EBADMSG, "vm `%s`: malformed Stat reply", vm->name);
    return 0;
}

int vm_stat(struct vm *vm, const char *path, bool nofollow, struct vm_stat *st, struct pv_err *err)
{
    int r = need_state(vm, "stat", VM_BOOTED, err);
    if (r < 0)
        return r;
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_str(&w, path);
    pv_put_u32(&w, nofollow ? PV_STAT_NOFOLLOW : 0);
    r = chan_call(&vm->chan, PV_STAT, &b, op_deadline(60), NULL, NULL, &reply, err);
    if (r == 0)
        r = vm_decode_stat(vm, &reply, st, err);
    buf_release(&b);
    buf_release(&reply);
    return op_failed(vm, r, err);
}

static bool wait_exit(struct vm *vm, int ms)
{
    struct pollfd p = {vm->pidfd, POLLIN, 0};
    return poll(&p, 1, ms) == 1;
}

int vm_shutdown(struct vm *vm, struct pv_err *err)
{
    if (vm->state == VM_SHUTDOWN)
        return 0;
    if (vm->state == VM_BOOTED && !vm->chan.broken) {
        struct buf b = BUF_INIT;
        struct pv_wr w = {&b};
        pv_put_u32(&w, PV_POWER_OFF);
        vm->chan.route = 0; /* to the agent, whoever spoke last */
        chan_call(&vm->chan, PV_POWEROFF, &b, now_ns() + 2000000000LL, NULL, NULL, NULL, NULL);
        buf_release(&b);
        wait_exit(vm, 3000);
    }
    stop_qemu(vm, 0);
    vm->state = VM_SHUTDOWN;
    (void)err;
    return 0;
}

void vm_kill(struct vm *vm)
{
    stop_qemu(vm, 0);
    if (vm->state != VM_CREATED)
        vm->state = VM_SHUTDOWN;
}

static int qmp_simple(struct vm *vm, const char *cmd, json_t *args, struct pv_err *err)
{
    int r = qmp_exec(&vm->qmp, cmd, args, now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale),
                     NULL, err);
    if (r == -EPIPE)
        return died(vm, err, "QEMU exited");
    return r < 0 ? pv_err_wrap(err, "vm `%s`", vm->name) : 0;
}

int vm_reset(struct vm *vm, struct pv_err *err)
{
    int r = need_state(vm, "reset", VM_BOOTED, err);
    if (r < 0)
        return r;
    /* -no-reboot turns every reset into an exit (so a panic ends the VM);
     * let this one through. */
    r = qmp_simple(vm, "set-action", json_pack("{s:s}", "reboot", "reset"), err);
    if (r == 0)
        r = qmp_simple(vm, "system_reset", NULL, err);
    if (r < 0)
        return r;
    int64_t deadline = now_ns() + (int64_t)(60e9 * vm_globals.timeout_scale);
    watch_agent(vm, false);
    /* Requests in flight died with the old agent (their streams end), and
     * its workers with it. */
    chan_drop_all(&vm->chan);
    vm->chan.route = 0;
    if (vm_globals.transport == TRANSPORT_VSOCK) {
        /* the guest's listener died with the old kernel: connect afresh,
         * never reusing a request id a stale handle may still name */
        uint32_t next_id = vm->chan.next_id;
        chan_release(&vm->chan);
        int fd = connect_vsock(vm, deadline, err);
        if (fd < 0)
            return died(vm, err, "no agent after reset");
        chan_init(&vm->chan, fd, vm->pidfd);
        vm->chan.next_id = next_id;
        vm->chan.on_event = on_kmsg;
        vm->chan.event_ctx = vm;
    } else {
        /* the same byte stream carries on; chan_hello resynchronises */
        buf_consume(&vm->chan.in, vm->chan.in.len);
        vm->chan.broken = false;
    }
    r = chan_hello(&vm->chan, deadline, err);
    if (r < 0) {
        char what[sizeof(err->msg)];
        snprintf(what, sizeof(what), "no agent after reset: %.900s", err->msg);
        return died(vm, err, what);
    }
    vm->agent_gen++;
    r = qmp_simple(vm, "set-action", json_pack("{s:s}", "reboot", "shutdown"), err);
    watch_agent(vm, true);
    return r;
}

int vm_pause(struct vm *vm, struct pv_err *err)
{
    int r = need_state(vm, "pause", VM_BOOTED, err);
    if (r == 0 && (r = qmp_simple(vm, "stop", NULL, err)) == 0)
        vm->state = VM_PAUSED;
    return r;
}

int vm_resume(struct vm *vm, struct pv_err *err)
{
    int r = need_state(vm, "resume", VM_PAUSED, err);
    if (r == 0 && (r = qmp_simple(vm, "cont", NULL, err)) == 0)
        vm->state = VM_BOOTED;
    return r;
}

int vm_power_button(struct vm *vm, struct pv_err *err)
{
    int r = need_state(vm, "power_button", VM_BOOTED, err);
    if (r < 0)
        return r;
    r = qmp_simple(vm, "system_powerdown", NULL, err);
    if (r < 0)
        return r;
    int ms = (int)(60000 * vm_globals.timeout_scale);
    if (!wait_exit(vm, ms)) {
        stop_qemu(vm, 0);
        vm->state = VM_SHUTDOWN;
        return pv_err_set(err, ETIMEDOUT,
                          "vm `%s`: the guest ignored the ACPI power button for %d s; killed it",
                          vm->name, ms / 1000);
    }
    stop_qemu(vm, 0);
    vm->state = VM_SHUTDOWN;
    return 0;
}

void vm_syscall_res_release(struct vm_syscall_res *res)
{
    for (uint32_t i = 0; i < res->nout; i++)
        buf_release(&res->out[i]);
    res->nout = 0;
}

void vm_encode_syscall(struct buf *b, const struct vm_syscall_req *req)
{
    struct pv_wr w = {b};
    pv_put_u64(&w, (uint64_t)req->nr);
    pv_put_u32(&w, req->nargs);
    for (uint32_t i = 0; i < req->nargs; i++)
        pv_put_i64(&w, req->args[i]);
    pv_put_u32(&w, req->nbufs);
    for (uint32_t i = 0; i < req->nbufs; i++)
        pv_put_bytes(&w, req->bufs[i], req->lens[i]);
    pv_put_u32(&w, req->nptrs);
    for (uint32_t i = 0; i < req->nptrs; i++) {
        pv_put_u32(&w, req->ptrs[i].buf);
        pv_put_u32(&w, req->ptrs[i].slot);
    }
    pv_put_u32(&w, req->nnested);
    for (uint32_t i = 0; i < req->nnested; i++) {
        pv_put_u32(&w, req->nested[i].parent);
        pv_put_u32(&w, req->nested[i].child);
        pv_put_u32(&w, req->nested[i].offset);
    }
}

uint32_t vm_syscall_start(struct vm *vm, const struct vm_syscall_req *req, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    vm_encode_syscall(&b, req);
    uint32_t id = vm_start(vm, "syscall", PV_SYSCALL, &b, NULL, NULL, err);
    buf_release(&b);
    return id;
}

int vm_decode_syscall(struct vm *vm, const struct buf *reply, struct vm_syscall_res *res,
                      struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    res->ret = pv_get_i64(&rd);
    res->err = (int)pv_get_u32(&rd);
    uint32_t n = pv_get_count(&rd, 4);
    for (uint32_t i = 0; i < n && i < 64 && !rd.bad; i++) {
        size_t len;
        const void *p = pv_get_bytes(&rd, &len);
        buf_add(&res->out[i], p, len);
        res->nout = i + 1;
    }
    if (n > 64 || pv_rd_done(&rd) < 0 || res->err < 0 || res->err > 4095) {
        vm_syscall_res_release(res);
        return pv_err_set(err, EBADMSG, "vm `%s`: malformed Syscall reply", vm->name);
    }
    return 0;
}

int vm_syscall_finish(struct vm *vm, uint32_t id, double timeout_s, struct vm_syscall_res *res,
                      struct pv_err *err)
{
    struct buf reply = BUF_INIT;
    int r = vm_finish(vm, id, timeout_s, &reply, err);
    if (r == 0)
        r = vm_decode_syscall(vm, &reply, res, err);
    buf_release(&reply);
    return r;
}

int vm_syscall(struct vm *vm, const struct vm_syscall_req *req, struct vm_syscall_res *res,
               struct pv_err *err)
{
    uint32_t id = vm_syscall_start(vm, req, err);
    if (!id)
        return -err->code;
    /* a blocking call waits as long as the test allows */
    int r = vm_syscall_finish(vm, id, 0, res, err);
    if (r == -ETIMEDOUT)
        chan_drop(&vm->chan, id);
    return r;
}

int vm_read_mem(struct vm *vm, uint64_t addr, uint32_t len, struct buf *out, struct pv_err *err)
{
    int r = need_state(vm, "read_mem", VM_BOOTED, err);
    if (r < 0)
        return r;
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, addr);
    pv_put_u32(&w, len);
    r = chan_call(&vm->chan, PV_READ_MEM, &b, op_deadline(30), NULL, NULL, &reply, err);
    if (r == 0) {
        struct pv_rd rd;
        pv_rd_init(&rd, reply.data, reply.len);
        size_t n;
        const void *p = pv_get_bytes(&rd, &n);
        if (pv_rd_done(&rd) < 0 || n > len)
            r = pv_err_set(err, EBADMSG, "vm `%s`: malformed ReadMem reply", vm->name);
        else
            buf_add(out, p, n);
    }
    buf_release(&b);
    buf_release(&reply);
    return op_failed(vm, r, err);
}

int vm_write_mem(struct vm *vm, uint64_t addr, const void *data, size_t len, struct pv_err *err)
{
    int r = need_state(vm, "write_mem", VM_BOOTED, err);
    if (r < 0)
        return r;
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, addr);
    pv_put_bytes(&w, data, len);
    r = chan_call(&vm->chan, PV_WRITE_MEM, &b, op_deadline(30), NULL, NULL, NULL, err);
    buf_release(&b);
    return op_failed(vm, r, err);
}

int vm_call(struct vm *vm, const char *op, uint16_t type, const struct buf *req, double timeout_s,
            struct buf *reply, struct pv_err *err)
{
    int r = need_state(vm, op, VM_BOOTED, err);
    if (r < 0)
        return r;
    r = chan_call(&vm->chan, type, req, op_deadline(timeout_s), NULL, NULL, reply, err);
    return op_failed(vm, r, err);
}

uint32_t vm_start(struct vm *vm, const char *op, uint16_t type, const struct buf *req,
                  chan_chunk_fn fn, void *ctx, struct pv_err *err)
{
    if (need_state(vm, op, VM_BOOTED, err) < 0)
        return 0;
    uint32_t id = chan_start(&vm->chan, type, req, op_deadline(30), fn, ctx, err);
    if (!id)
        op_failed(vm, -EPIPE, err);
    return id;
}

int vm_finish(struct vm *vm, uint32_t id, double timeout_s, struct buf *reply, struct pv_err *err)
{
    /* the caller's own time, not scaled */
    int64_t d = test_bound(timeout_s > 0 ? now_ns() + (int64_t)(timeout_s * 1e9) : 0);
    int r = chan_wait(&vm->chan, id, d, reply, err);
    return r == -ETIMEDOUT ? r : op_failed(vm, r, err);
}

int vm_pump(struct vm *vm, double timeout_s, struct pv_err *err)
{
    if (vm->state != VM_BOOTED)
        return 0;
    int r = chan_pump(&vm->chan, now_ns() + (int64_t)(timeout_s * 1e9), err);
    return r < 0 ? op_failed(vm, r, err) : r;
}

/* ---- snapshots (docs/snapshots.md) ---- */

#define SNAP_MAGIC "PROVIUM-SNAPSHOT 1\n"
#define SNAP_HEADER_MAX (64u << 10)

/* Wait for the migration to end: 0 when it completed. */
static int wait_migration(struct vm *vm, const char *what, struct pv_err *err)
{
    int64_t deadline = now_ns() + (int64_t)(120e9 * vm_globals.timeout_scale);
    /* a boot cache's stream ends within milliseconds: ask often at first */
    for (int ms = 1;; ms = MIN(ms * 2, 20)) {
        json_t *ret = NULL;
        int r = qmp_exec(&vm->qmp, "query-migrate", NULL, deadline, &ret, err);
        if (r < 0)
            return r;
        const char *st = json_string_value(json_object_get(ret, "status"));
        if (st && !strcmp(st, "completed")) {
            json_decref(ret);
            return 0;
        }
        if (st && (!strcmp(st, "failed") || !strcmp(st, "cancelled"))) {
            const char *why = json_string_value(json_object_get(ret, "error-desc"));
            r = pv_err_set(err, EIO, "vm `%s`: %s failed: %s", vm->name, what,
                           why ? why : st);
            json_decref(ret);
            return r;
        }
        json_decref(ret);
        if (now_ns() > deadline)
            return pv_err_set(err, ETIMEDOUT, "vm `%s`: %s timed out", vm->name, what);
        poll(NULL, 0, ms);
    }
}

/* The header: what a restore needs to start the same machine. */
static json_t *snap_header(struct vm *vm, const char *version)
{
    const struct vm_boot *b = &vm->plan;
    json_t *disks = json_array();
    for (size_t i = 0; b->disks && b->disks[i]; i++)
        json_array_append_new(disks, json_pack("{s:s, s:b}", "path", b->disks[i], "ro",
                                               b->disk_ro && b->disk_ro[i]));
    json_t *h = json_pack("{s:s, s:s, s:s, s:s, s:I, s:i, s:s, s:s, s:o}", "qemu", version,
                          "machine", vm_globals.machine, "accel", accel_name(vm_globals.accel),
                          "profile", vm->profile, "memory", (json_int_t)b->memory, "cpus",
                          b->cpus, "kernel", b->kernel, "cmdline", b->cmdline, "disks", disks);
    json_object_set_new(h, "initrd", b->initrd ? json_string(b->initrd) : json_null());
    json_object_set_new(h, "modules_dir", b->modules_dir ? json_string(b->modules_dir) : json_null());
    json_object_set_new(h, "agent_timeout", json_real(b->agent_timeout));
    if (b->has_rng_seed)
        json_object_set_new(h, "rng_seed", json_integer((json_int_t)b->rng_seed));
    json_object_set_new(h, "vm", json_string(vm->name));
    return h;
}

/* Before a migration. x-ignore-shared: the stream leaves out guest RAM
 * that lives in a shared file (a boot the boot cache saves, and its
 * resumes); QEMU keeps a capability from one migration to the next, so
 * each sets it. An outgoing stream is not throttled: QEMU's default of 128
 * MiB/s made a snapshot of a fresh 512 MiB guest take 0.7 s, not 0.4. */
static int migration_setup(struct vm *vm, bool outgoing, bool ignore_shared,
                           struct pv_err *err)
{
    int r = outgoing ? qmp_simple(vm, "migrate-set-parameters",
                                  json_pack("{s:I}", "max-bandwidth", (json_int_t)1 << 40), err)
                     : 0;
    return r < 0 ? r
                 : qmp_simple(vm, "migrate-set-capabilities",
                              json_pack("{s:[{s:s, s:b}]}", "capabilities", "capability",
                                        "x-ignore-shared", "state", ignore_shared),
                              err);
}

/* Stop the machine and write its snapshot to path. ram: the name, beside
 * path, of the shared file the VM's RAM lives in, which the stream then
 * leaves out; NULL: the stream carries the RAM. The VM stays stopped. */
static int save_machine(struct vm *vm, const char *path, const char *ram, struct pv_err *err)
{
    const char *version = qemu_version();
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return pv_err_set(err, errno, "vm `%s`: snapshot: %s: %s", vm->name, path,
                          strerror(errno));
    json_t *h = snap_header(vm, version ? version : "?");
    json_object_set_new(h, "compression", json_string("zstd"));
    if (ram)
        json_object_set_new(h, "ram", json_string(ram));
    char *text = json_dumps(h, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(h);
    struct buf head = BUF_INIT;
    buf_adds(&head, SNAP_MAGIC);
    buf_adds(&head, text);
    buf_adds(&head, "\n");
    free(text);
    int r = write_all(fd, head.data, head.len);
    buf_release(&head);
    if (r < 0)
        return pv_err_set(err, -r, "vm `%s`: snapshot: %s: %s", vm->name, path, strerror(-r));
    /* QEMU writes the stream into a pipe; a thread compresses it into the file */
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return pv_err_set(err, errno, "vm `%s`: snapshot: %s", vm->name, strerror(errno));
    struct zpipe z;
    if ((r = zpipe_start(&z, p[0], dup(fd), true, err)) < 0) {
        close(p[1]);
        return r;
    }
    /* stopped, the state is consistent and the copy one pass */
    r = qmp_simple(vm, "stop", NULL, err);
    if (r == 0)
        r = migration_setup(vm, true, ram != NULL, err);
    int64_t d = now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale);
    if (r == 0)
        r = qmp_exec_fd(&vm->qmp, "getfd", json_pack("{s:s}", "fdname", "snap"), p[1], d, NULL,
                        err);
    close(p[1]); /* QEMU holds its own copy now: EOF comes when it closes it */
    if (r == 0)
        r = qmp_exec(&vm->qmp, "migrate", json_pack("{s:s}", "uri", "fd:snap"), d, NULL, err);
    if (r == 0)
        r = wait_migration(vm, "snapshot", err);
    if (r < 0 && vm->state == VM_BOOTED)
        qmp_exec(&vm->qmp, "closefd", json_pack("{s:s}", "fdname", "snap"), d, NULL, NULL);
    struct pv_err zerr = {0};
    int zr = zpipe_join(&z, "compressing", &zerr);
    if (r == 0 && zr < 0)
        r = pv_err_set(err, -zr, "vm `%s`: snapshot to %s: %s", vm->name, path, zerr.msg);
    if (r < 0)
        unlink(path);
    return r;
}

int vm_snapshot(struct vm *vm, const char *path, struct pv_err *err)
{
    int r = need_state(vm, "snapshot", VM_BOOTED, err);
    if (r < 0)
        return r;
    r = save_machine(vm, path, NULL, err);
    struct pv_err cerr = {0}; /* a failed snapshot's story is its own */
    int c = vm->state == VM_BOOTED ? qmp_simple(vm, "cont", NULL, r < 0 ? &cerr : err) : 0;
    return r < 0 ? r : c;
}

/* Read and check a snapshot's header; *fd is left at the migration stream. */
static int snap_open(struct vm *vm, const char *path, json_t **header, int *ret_fd,
                     struct pv_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pv_err_set(err, errno, "vm `%s`: restore: %s: %s", vm->name, path,
                          strerror(errno));
    char buf[SNAP_HEADER_MAX];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    buf[n > 0 ? n : 0] = 0;
    size_t m = strlen(SNAP_MAGIC);
    char *nl = n > (ssize_t)m ? memchr(buf + m, '\n', (size_t)n - m) : NULL;
    json_error_t je;
    json_t *h = NULL;
    if (n < (ssize_t)m || memcmp(buf, SNAP_MAGIC, m) || !nl ||
        !(h = json_loadb(buf + m, (size_t)(nl - buf - (ptrdiff_t)m), 0, &je))) {
        close(fd);
        return pv_err_set(err, EINVAL, "vm `%s`: restore: %s is not a provium snapshot",
                          vm->name, path);
    }
    lseek(fd, nl + 1 - buf, SEEK_SET);
    *header = h;
    *ret_fd = fd;
    return 0;
}

static int snap_mismatch(struct vm *vm, const char *path, const char *what, const char *was,
                         const char *is, struct pv_err *err)
{
    return pv_err_set(err, EINVAL,
                      "vm `%s`: restore: %s was taken with %s %s, this is %s %s", vm->name,
                      path, what, was ? was : "?", what, is ? is : "?");
}

/* The boot plan a snapshot's header records. */
static void header_plan(json_t *h, struct vm_boot *b)
{
    const char *v;
    *b = (struct vm_boot){
        .kernel = xstrdup(json_string_value(json_object_get(h, "kernel")) ?: ""),
        .cmdline = xstrdup(json_string_value(json_object_get(h, "cmdline")) ?: ""),
        .memory = (uint64_t)json_integer_value(json_object_get(h, "memory")),
        .cpus = (int)json_integer_value(json_object_get(h, "cpus")),
        .agent_timeout = json_number_value(json_object_get(h, "agent_timeout")),
        .has_rng_seed = json_object_get(h, "rng_seed") != NULL,
        .rng_seed = (uint64_t)json_integer_value(json_object_get(h, "rng_seed")),
    };
    if ((v = json_string_value(json_object_get(h, "initrd"))))
        b->initrd = xstrdup(v);
    if ((v = json_string_value(json_object_get(h, "modules_dir"))))
        b->modules_dir = xstrdup(v);
    json_t *disks = json_object_get(h, "disks");
    if (json_array_size(disks)) {
        size_t n = json_array_size(disks);
        b->disks = xcalloc(n + 1, sizeof(char *));
        b->disk_ro = xcalloc(n + 1, sizeof(bool));
        for (size_t i = 0; i < n; i++) {
            json_t *d = json_array_get(disks, i);
            b->disks[i] = xstrdup(json_string_value(json_object_get(d, "path")) ?: "");
            b->disk_ro[i] = json_is_true(json_object_get(d, "ro"));
        }
    }
    if (b->agent_timeout <= 0)
        b->agent_timeout = 60 * vm_globals.timeout_scale;
}

/* Start vm from the snapshot at path: with the plan its header records,
 * or (plan) with that one, which the caller vouches is the same machine.
 * fresh: the logs start empty (else they go on). since: what the agent's
 * deadline counts from, for the error. */
static int restore(struct vm *vm, const char *path, const struct vm_boot *plan, bool fresh,
                   const char *since, struct pv_err *err)
{
    json_t *h = NULL;
    _cleanup_close_ int fd = -1;
    int r = snap_open(vm, path, &h, &fd, err);
    if (r < 0)
        return r;
    const char *v;
    if (!plan && strcmp((v = json_string_value(json_object_get(h, "profile"))) ?: "", vm->profile))
        r = snap_mismatch(vm, path, "profile", v, vm->profile, err);
    else if (strcmp((v = json_string_value(json_object_get(h, "machine"))) ?: "",
                    vm_globals.machine))
        r = snap_mismatch(vm, path, "machine", v, vm_globals.machine, err);
    else if (strcmp((v = json_string_value(json_object_get(h, "accel"))) ?: "",
                    accel_name(vm_globals.accel)))
        r = snap_mismatch(vm, path, "accelerator", v, accel_name(vm_globals.accel), err);
    else if (strcmp((v = json_string_value(json_object_get(h, "qemu"))) ?: "",
                    qemu_version() ? qemu_version() : "?"))
        r = snap_mismatch(vm, path, "QEMU", v, qemu_version(), err);
    bool compressed = !strcmp(json_string_value(json_object_get(h, "compression")) ?: "", "zstd");
    struct vm_boot own = {0};
    if (!plan) {
        header_plan(h, &own);
        plan = &own;
        if (r == 0 && own.initrd && access(own.initrd, R_OK) < 0)
            r = pv_err_set(err, ENOENT, "vm `%s`: restore: %s needs the initrd %s, which is gone",
                           vm->name, path, own.initrd);
    }
    /* RAM kept in a file beside the snapshot: mapped copy-on-write */
    _cleanup_free_ char *ram = NULL;
    if (r == 0 && (v = json_string_value(json_object_get(h, "ram")))) {
        _cleanup_free_ char *dir = xstrdup(path);
        ram = xasprintf("%s/%s", dirname(dir), v);
        struct stat st;
        bool gone = stat(ram, &st) < 0;
        if (strchr(v, '/')) /* a name beside it, nothing else */
            r = pv_err_set(err, EINVAL, "vm `%s`: restore: %s is not a provium snapshot",
                           vm->name, path);
        else if (gone || (uint64_t)st.st_size != plan->memory)
            r = pv_err_set(err, EINVAL,
                           "vm `%s`: restore: %s needs its guest RAM in %s (%llu MiB), which is %s",
                           vm->name, path, ram, (unsigned long long)(plan->memory >> 20),
                           gone ? "gone" : "cut short");
    }
    json_decref(h);
    int agent_l = -1;
    if (r == 0)
        r = launch(vm, plan, &(struct start){.incoming = true, .fresh = fresh, .ram_file = ram},
                   &agent_l, err);
    vm_boot_release(&own);
    if (r < 0)
        return r;
    /* a compressed stream reaches QEMU through a pipe, decompressed on the way */
    int qfd = fd, p[2] = {-1, -1};
    struct zpipe z;
    bool zstd = compressed;
    if (zstd) {
        if (pipe2(p, O_CLOEXEC) < 0)
            r = pv_err_set(err, errno, "vm `%s`: restore: %s", vm->name, strerror(errno));
        else if ((r = zpipe_start(&z, dup(fd), p[1], false, err)) < 0)
            close(p[0]);
        else
            qfd = p[0];
        zstd = r == 0;
    }
    int64_t d = now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale);
    if (r == 0)
        r = migration_setup(vm, false, ram != NULL, err);
    if (r == 0)
        r = qmp_exec_fd(&vm->qmp, "getfd", json_pack("{s:s}", "fdname", "snap"), qfd, d, NULL,
                        err);
    if (zstd)
        close(p[0]);
    if (r == 0)
        r = qmp_exec(&vm->qmp, "migrate-incoming", json_pack("{s:s}", "uri", "fd:snap"), d, NULL,
                     err);
    if (r == 0)
        r = wait_migration(vm, "restore", err);
    if (r < 0 && vm->state == VM_BOOTED) {
        /* before the join: the thread may be blocked writing to QEMU */
        char what[sizeof(err->msg)];
        snprintf(what, sizeof(what), "restore from %s failed (%.300s)", path, err->msg);
        died(vm, err, what);
    }
    if (zstd) {
        struct pv_err zerr = {0};
        int zr = zpipe_join(&z, "decompressing", &zerr);
        if (r == 0 && zr < 0)
            r = pv_err_set(err, -zr, "vm `%s`: restore from %s: %s", vm->name, path, zerr.msg);
    }
    if (r == 0)
        r = qmp_simple(vm, "cont", NULL, err);
    if (r < 0) {
        if (agent_l >= 0)
            close(agent_l);
        if (vm->state == VM_BOOTED) { /* the snapshot is damaged: never half started */
            vm_kill(vm);
            vm->state = VM_DEAD;
        }
        return r;
    }
    return handshake(vm, agent_l, vm->plan.agent_timeout, since, err);
}

int vm_restore(struct vm *vm, const char *path, struct pv_err *err)
{
    int r = need_stopped(vm, "restore", err);
    if (r < 0)
        return r;
    vm->from_boot_cache = false;
    return restore(vm, path, NULL, vm->state == VM_CREATED, "the restore", err);
}

int vm_resume_boot(struct vm *vm, const char *entry, const struct vm_boot *b, struct pv_err *err)
{
    int r = need_stopped(vm, "boot", err);
    if (r == 0)
        r = vm_dir(vm, err);
    if (r < 0)
        return r;
    drop_logs(vm);
    copy_logs(entry, vm->dir, NULL); /* a log it lacks stays empty */
    vm->from_boot_cache = true;
    _cleanup_free_ char *snap = xasprintf("%s/vm.snap", entry);
    return restore(vm, snap, b, false, "the resume from the boot cache", err);
}

/* Copy the pages of the file fd that are not all zeros into a new sparse
 * file at path, as long as fd's (size). */
static int copy_nonzero(int fd, const char *path, uint64_t size, struct pv_err *err)
{
    _cleanup_close_ int out = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (out < 0 || ftruncate(out, (off_t)size) < 0)
        return pv_err_set(err, errno, "%s: %s", path, strerror(errno));
    enum { PAGE = 4096, CHUNK = 256 * PAGE };
    static const char zero[PAGE];
    _cleanup_free_ char *buf = xmalloc(CHUNK);
    for (off_t at = 0; (at = lseek(fd, at, SEEK_DATA)) >= 0;) {
        ssize_t n = pread(fd, buf, CHUNK, at);
        if (n <= 0)
            return pv_err_set(err, n < 0 ? errno : EIO, "reading the guest's RAM: %s",
                              n < 0 ? strerror(errno) : "cut short");
        for (ssize_t i = 0, j; i < n; i = j > i ? j : i + PAGE) {
            for (j = i; j < n && memcmp(buf + j, zero, (size_t)MIN(PAGE, n - j));)
                j += MIN(PAGE, n - j); /* the non-zero pages from i, written at once */
            ssize_t w = j > i ? pwrite(out, buf + i, (size_t)(j - i), at + i) : 0;
            if (w != j - i)
                return pv_err_set(err, w < 0 ? errno : ENOSPC, "%s: %s", path,
                                  w < 0 ? strerror(errno) : "short write");
        }
        at += n;
    }
    return 0;
}

int vm_save_boot(struct vm *vm, const struct vm_boot *b, const char *dir, struct pv_err *err)
{
    /* While it boots, the guest's RAM is a memfd that QEMU opens through
     * /proc: as fast as anonymous memory (a file on disk costs the boot
     * 0.7 s in page faults), and nothing is left behind if provium dies. */
    _cleanup_close_ int mfd = memfd_create("provium-ram", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, (off_t)b->memory) < 0) {
        pv_err_set(err, errno, "a memfd for the guest's RAM: %s", strerror(errno));
        return 1;
    }
    _cleanup_free_ char *memfd = xasprintf("/proc/%d/fd/%d", (int)getpid(), mfd);
    int r = boot(vm, b, &(struct start){.fresh = true, .ram_file = memfd, .ram_shared = true},
                 err);
    if (r < 0)
        return r;
    _cleanup_free_ char *snap = xasprintf("%s/vm.snap", dir);
    _cleanup_free_ char *ram = xasprintf("%s/ram", dir);
    r = vm_ping(vm, err); /* the kernel log so far has arrived */
    if (r == 0)
        r = save_machine(vm, snap, "ram", err);
    if (r == 0)
        r = copy_logs(vm->dir, dir, err);
    vm_kill(vm); /* stopped: the memfd holds the RAM as the snapshot left it */
    if (r == 0)
        r = copy_nonzero(mfd, ram, b->memory, err);
    return r < 0 ? 1 : 0;
}
