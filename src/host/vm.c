#include "vm.h"

#include "attach.h"
#include "accel.h"
#include "disk/vdisk.h"
#include "guest.h"
#include "net/nic.h"
#include "pvh.h"
#include "vm_priv.h"
#include "events.h"
#include "pool.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <linux/vm_sockets.h>

struct vm_globals vm_globals = {.accel = ACCEL_TCG,
                                .transport = TRANSPORT_VIRTIO_SERIAL,
                                .machine = "q35",
                                .timeout_scale = 1.0};

/* QEMU pids to kill from a signal handler; plain stores only. */
static volatile pid_t live_pids[256];
/* Every struct vm of this process, for vm_kill_everything(). */
static struct vm *all_vms;

void vm_track(pid_t pid)
{
    for (size_t i = 0; i < ARRAY_SIZE(live_pids); i++) {
        if (!live_pids[i]) {
            live_pids[i] = pid;
            return;
        }
    }
}

void vm_untrack(pid_t pid)
{
    for (size_t i = 0; i < ARRAY_SIZE(live_pids); i++)
        if (live_pids[i] == pid)
            live_pids[i] = 0;
}

void vm_reap(pid_t pid)
{
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    vm_untrack(pid);
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
    free(b->vmlinux);
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

void vm_logs_bound_all(void)
{
    for (struct vm *vm = all_vms; vm; vm = vm->next_live)
        if (vm->state == VM_BOOTED || vm->state == VM_PAUSED)
            vm_logs_bound(vm);
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
    vm->cache_hold = -1;
    vm->ram_fd = -1;
    return vm;
}

/* The guest's RAM file, once no QEMU maps it (vm_spawn opened it). */
static void release_ram(struct vm *vm)
{
    if (vm->ram_fd >= 0)
        close(vm->ram_fd);
    vm->ram_fd = -1;
    free(vm->ram_base);
    vm->ram_base = NULL;
}

/* Reap QEMU; SIGKILL first unless it already exited. */
static void stop_qemu(struct vm *vm, int grace_ms)
{
    nic_ports_close(vm->ports, &vm->nports);
    vm_globals.memory_in_use -= MIN(vm->charged, vm_globals.memory_in_use);
    vm->charged = 0;
    if (vm->announced)
        events_emit("vm_shutdown",
                    json_pack("{s:s, s:s, s:I}", "file", vm_globals.file ? vm_globals.file : "",
                              "vm_name", vm->name, "duration_ns",
                              (json_int_t)(now_ns() - vm->boot_ns)));
    vm->announced = false;
    vm->gdb_port = 0;
    if (vm->cache_hold >= 0) /* no QEMU maps the entry's RAM any more */
        close(vm->cache_hold);
    vm->cache_hold = -1;
    if (vm->pid <= 0) {
        release_ram(vm);
        return;
    }
    if (grace_ms > 0) {
        struct pollfd p = {vm->pidfd, POLLIN, 0};
        poll(&p, 1, grace_ms);
    }
    vm_reap(vm->pid);
    vm->pid = 0;
    if (vm->pidfd >= 0)
        close(vm->pidfd);
    vm->pidfd = -1;
    qmp_release(&vm->qmp);
    chan_release(&vm->chan);
    release_ram(vm);
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
    vm_standby_drop(vm);
    if (vm->kmsg_fd >= 0)
        close(vm->kmsg_fd);
    if (vm->dir)
        rm_rf(vm->dir);
    free(vm->dir);
    free(vm->name);
    free(vm->profile);
    free(vm->exit_reason);
    free(vm->story);
    free(vm->infra_error);
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

/* A TCP socket listening on 127.0.0.1, on a port the kernel picks, for
 * QEMU's gdbstub: QEMU inherits it, so the port is QEMU's from the start
 * (no window in which another process could take it). */
static int listen_gdb(int *ret_port, struct pv_err *err)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    _cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 1) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return pv_err_set(err, errno, "--gdb: a socket on 127.0.0.1: %s", strerror(errno));
    *ret_port = ntohs(a.sin_port);
    return steal_fd(&fd);
}

/* Accept QEMU's connection, watching for QEMU's death. */
int vm_accept_qemu(int pidfd, int lfd, int64_t deadline_ns, struct pv_err *err)
{
    for (;;) {
        struct pollfd p[2] = {{lfd, POLLIN, 0}, {pidfd, POLLIN, 0}};
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

/* Mark the VM dead and describe why, with the console tail. */
static const char *last_console(const char *cmdline)
{
    const char *last = NULL;
    for (const char *p = cmdline; (p = strstr(p, "console=")); p += 8)
        if (p == cmdline || p[-1] == ' ')
            last = p + 8;
    return last;
}

/* Why a boot that died before the agent's handshake is the machine's doing
 * rather than the guest's, or NULL (docs/debugging.md#infrastructure-errors):
 * a QEMU killed or failing (not a guest's power-off or reset, which exit 0)
 * with no kernel panic on the console, or a guest that printed nothing. */
static const char *boot_blame(struct vm *vm, bool exited, int status)
{
    if (vm_console_says(vm, "Kernel panic"))
        return NULL;
    if (exited && (WIFSIGNALED(status) || WEXITSTATUS(status) != 0))
        return "QEMU ended before the agent's handshake";
    if (!exited && hang_console_bytes(vm) == vm->boot_console)
        return "the guest printed nothing";
    return NULL;
}

int vm_died(struct vm *vm, struct pv_err *err, const char *what)
{
    int status = 0;
    bool exited = false;
    char how[128] = "";
    /* the sockets close a moment before QEMU is reapable */
    if (vm->pidfd >= 0) {
        struct pollfd p = {vm->pidfd, POLLIN, 0};
        poll(&p, 1, 1000);
    }
    if (vm->pid > 0 && waitpid(vm->pid, &status, WNOHANG) == vm->pid) {
        exited = true;
        vm_untrack(vm->pid);
        vm->pid = 0;
        if (WIFEXITED(status))
            snprintf(how, sizeof(how), " (QEMU exited with status %d)", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
            snprintf(how, sizeof(how), " (QEMU killed by signal %d)", WTERMSIG(status));
    }
    if (vm->booting)
        vm->boot_infra = boot_blame(vm, exited, status);
    vm->booting = false;
    stop_qemu(vm, 0);
    vm->state = VM_DEAD;
    struct buf tail = BUF_INIT;
    buf_adds(&tail, "\n");
    _cleanup_free_ char *qlog = xasprintf("%s/qemu.log", vm->dir);
    struct buf ql = BUF_INIT;
    if (read_file(qlog, 8192, &ql) == 0 && ql.len) {
        while (ql.len && ql.data[ql.len - 1] == '\n')
            ql.data[--ql.len] = 0;
        buf_addf(&tail, "  QEMU said: %s\n", ql.data);
    }
    buf_release(&ql);
    if (vm_console_says(vm, "Kernel panic"))
        buf_adds(&tail, "  the guest kernel panicked\n");
    buf_adds(&tail, "  last console lines:\n");
    vm_console_tail(vm, 40, &tail);
    free(vm->exit_reason);
    vm->exit_reason = xasprintf("%s%s", what, how);
    free(vm->story);
    vm->story = buf_steal(&tail);
    pv_err_set(err, EPIPE, "vm `%s`: %s%s", vm->name, what, how);
    if (err)
        err->story = vm->story;
    return -EPIPE;
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
        vm_globals.claim_declared ? "of its provium:claim"
                                  : "a file without a provium:claim may use",
        (double)(vm_globals.memory_in_use + cost) / mib);
}

void vm_boot_copy(struct vm_boot *dst, const struct vm_boot *src)
{
    *dst = *src;
    dst->kernel = xstrdup(src->kernel);
    dst->initrd = src->initrd ? xstrdup(src->initrd) : NULL;
    dst->cmdline = xstrdup(src->cmdline);
    dst->modules_dir = src->modules_dir ? xstrdup(src->modules_dir) : NULL;
    dst->vmlinux = src->vmlinux ? xstrdup(src->vmlinux) : NULL;
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
int vm_make_dir(struct vm *vm, struct pv_err *err)
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

/* A standby QEMU becomes the VM's: its consoles' sockets and its log move
 * to where the VM's are looked for. */
static void adopt_files(struct vm *vm, const char *from)
{
    static const char *const names[] = {"serial.sock", "hvc.sock", "qemu.log"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
        _cleanup_free_ char *a = xasprintf("%s/%s", from, names[i]);
        _cleanup_free_ char *b = xasprintf("%s/%s", vm->dir, names[i]);
        rename(a, b);
    }
}

/* Start QEMU for plan b as st says and negotiate QMP. Returns 0 with
 * *agent_l, the socket to accept the agent's channel on (-1 under vsock),
 * or -errno (the VM dead if QEMU had started). */
int vm_launch(struct vm *vm, const struct vm_boot *b, const struct start *st, int *agent_lp,
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
    if ((r = vm_make_dir(vm, err)) < 0)
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
        vm_drop_logs(vm);
    vm->booting = true;
    vm->boot_console = hang_console_bytes(vm);
    vm->boot_infra = NULL;
    free(vm->infra_error);
    vm->infra_error = NULL;
    if (vm->kmsg_fd >= 0)
        close(vm->kmsg_fd);
    _cleanup_free_ char *kpath = xasprintf("%s/kmsg.log", vm->dir);
    vm->kmsg_fd = open(kpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

    struct qemu_proc p;
    if (st->adopt) {
        p = *st->adopt;
        *st->adopt = (struct qemu_proc)QEMU_PROC_INIT;
        adopt_files(vm, p.sockdir);
    } else if ((r = vm_spawn(vm, b, st, vm->dir, &p, err)) < 0) {
        return pv_err_wrap(err, "vm `%s`", vm->name);
    }
    vm->pid = p.pid;
    vm->pidfd = p.pidfd;
    memcpy(vm->ports, p.ports, sizeof(vm->ports));
    vm->nports = p.nports;
    vm->ram_fd = p.ram_fd;
    vm->ram_base = p.ram_base;
    vm->cid = p.cid;
    vm->gdb_port = p.gdb_port;
    if (vm->gdb_port && !vm->quiet) {
        struct buf g = BUF_INIT;
        attach_gdb_line(vm, b, &g);
        fprintf(stderr, "provium: vm `%s`: %s\n", vm->name, g.data);
        buf_release(&g);
    }
    vm->boot_ns = st->adopt ? now_ns() : p.start_ns;
    vm->state = VM_BOOTED;
    vm->charged = cost;
    vm_globals.memory_in_use += cost;
    /* a standby connected long ago: its QMP waits in the backlog */
    _cleanup_close_ int qmp_l = p.qmp_l;
    int64_t qdeadline = now_ns() + (int64_t)(20e9 * vm_globals.timeout_scale);
    int fd = vm_accept_qemu(vm->pidfd, qmp_l, qdeadline, err);
    if (fd < 0)
        r = vm_died(vm, err, "QEMU failed to start");
    else {
        qmp_init(&vm->qmp, fd, vm->pidfd);
        if (qmp_negotiate(&vm->qmp, qdeadline, err) < 0)
            r = vm_died(vm, err, "QMP negotiation failed");
    }
    free(p.sockdir);
    if (r < 0 && p.agent_l >= 0)
        close(p.agent_l);
    if (r == 0)
        *agent_lp = p.agent_l;
    return r;
}

int vm_spawn(struct vm *vm, const struct vm_boot *b, const struct start *st, const char *sockdir,
             struct qemu_proc *p, struct pv_err *err)
{
    *p = (struct qemu_proc)QEMU_PROC_INIT;
    p->sockdir = xstrdup(sockdir);
    _cleanup_free_ char *qmp_path = xasprintf("%s/qmp.sock", sockdir);
    _cleanup_free_ char *agent_path = xasprintf("%s/agent.sock", sockdir);
    int r = p->qmp_l = listen_unix(qmp_path, err);
    if (r >= 0 && vm_globals.transport != TRANSPORT_VSOCK)
        r = p->agent_l = listen_unix(agent_path, err);
    /* The guest's RAM (docs/snapshots.md): a restore maps its snapshot's
     * file copy-on-write, held open: a snapshot of this VM needs it even
     * once its path is gone. A cold boot runs in QEMU's anonymous memory,
     * in transparent huge pages where the host allows them. */
    if (r >= 0 && st->ram_file) {
        p->ram_base = xstrdup(st->ram_file);
        if ((p->ram_fd = open(st->ram_file, O_RDONLY | O_CLOEXEC)) < 0)
            r = pv_err_set(err, errno, "%s: %s", st->ram_file, strerror(errno));
    }
    if (r < 0) {
        vm_proc_release(p);
        return r;
    }
    struct qemu_nic qn[VM_MAX_NICS];
    if (nic_ports_open(b, vm->name, p->ports, qn, err) < 0) {
        vm_proc_release(p);
        return pv_err_wrap(err, "vm `%s`", vm->name);
    }
    p->nports = b->nnics;
    struct qemu_disk qd[VM_MAX_DISKS];
    if ((r = vdisk_conns_open(b, vm->name, qd, err)) < 0) {
        for (size_t i = 0; i < b->nnics; i++)
            close(qn[i].fd);
        vm_proc_release(p);
        return r;
    }
    int keep[VM_MAX_NICS + VM_MAX_DISKS + 1];
    size_t nkeep = 0;
    for (size_t i = 0; i < b->nnics; i++)
        keep[nkeep++] = qn[i].fd;
    for (size_t i = 0; i < b->nattached; i++)
        if (qd[i].fd >= 0) /* a plain disk has none */
            keep[nkeep++] = qd[i].fd;
    int gdb_fd = -1;
    if (vm_globals.gdb && (gdb_fd = listen_gdb(&p->gdb_port, err)) < 0) {
        for (size_t i = 0; i < nkeep; i++)
            close(keep[i]);
        vm_proc_release(p);
        return gdb_fd;
    }
    if (gdb_fd >= 0)
        keep[nkeep++] = gdb_fd;
    p->cid = qemu_next_cid();
    /* a cold boot skips the kernel's decompression when it can (pvh.c) */
    _cleanup_free_ char *pvh = st->incoming || b->no_pvh ? NULL : pvh_kernel(b->kernel);
    struct qemu_config qc = {
        .machine = vm_globals.machine,
        .accel = vm_globals.accel,
        .transport = vm_globals.transport,
        .memory = b->memory,
        .cpus = b->cpus,
        .kernel = pvh ? pvh : b->kernel,
        .initrd = b->initrd,
        .cmdline = b->cmdline,
        .dir = vm->dir,
        .sockdir = sockdir,
        .cid = p->cid,
        .has_rng_seed = b->has_rng_seed,
        .rng_seed = b->rng_seed,
        .disks = (const char *const *)b->disks,
        .disk_ro = b->disk_ro,
        .incoming = st->incoming,
        .ram_file = st->ram_file,
        .nics = qn,
        .nnics = b->nnics,
        .vdisks = qd,
        .nvdisks = b->nattached,
        .gdb = gdb_fd >= 0,
        .gdb_fd = gdb_fd,
    };
    char **argv = qemu_argv(&qc);
    p->start_ns = now_ns();
    r = qemu_start((const char *const *)argv, sockdir, keep, nkeep, &p->pid, &p->pidfd, err);
    qemu_argv_free(argv);
    for (size_t i = 0; i < nkeep; i++)
        close(keep[i]);
    if (r < 0) {
        vm_proc_release(p);
        return r;
    }
    vm_track(p->pid);
    return 0;
}

void vm_proc_release(struct qemu_proc *p)
{
    if (p->pid > 0)
        vm_reap(p->pid);
    nic_ports_close(p->ports, &p->nports);
    int *fds[] = {&p->pidfd, &p->qmp_l, &p->agent_l, &p->ram_fd};
    for (size_t i = 0; i < ARRAY_SIZE(fds); i++)
        if (*fds[i] >= 0)
            close(*fds[i]);
    free(p->ram_base);
    free(p->sockdir);
    *p = (struct qemu_proc)QEMU_PROC_INIT;
}

/* Connect to the agent (accepting on agent_l, which is closed) and shake
 * hands; the VM is dead on failure. */
int vm_handshake(struct vm *vm, int agent_l, double agent_timeout, const char *since,
                 struct pv_err *err)
{
    uint32_t next_id = vm->chan.next_id;
    int64_t deadline = now_ns() + (int64_t)(agent_timeout * 1e9);
    int fd;
    if (vm_globals.transport == TRANSPORT_VSOCK)
        fd = connect_vsock(vm, deadline, err);
    else
        fd = vm_accept_qemu(vm->pidfd, agent_l, deadline, err);
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
        return vm_died(vm, err, what);
    if (fd < 0)
        return vm_died(vm, err, "QEMU did not open the agent channel");
    chan_init(&vm->chan, fd, vm->pidfd);
    /* ids are never reused on a VM: a request of before may still be named */
    if (next_id > 1)
        vm->chan.next_id = next_id;
    vm->chan.on_event = vm_on_kmsg;
    vm->chan.event_ctx = vm;
    /* In slices: an agent that cannot start says why on the console
     * (src/agent/main.c, "provium-agent: fatal: "), and the boot fails at
     * once with its words rather than at the deadline. */
    int r;
    for (;;) {
        r = chan_hello(&vm->chan, MIN(deadline, now_ns() + 500 * 1000000LL), err);
        if (r != -ETIMEDOUT || now_ns() >= deadline)
            break;
        _cleanup_free_ char *fatal = vm_console_line(vm, "provium-agent: fatal: ");
        if (fatal) {
            snprintf(what, sizeof(what), "the agent cannot start: %s%s", fatal,
                     vm->modules_dir ? ""
                                     : " (booted without a modules directory, docs/kernels.md)");
            return vm_died(vm, err, what);
        }
    }
    if (r == -ETIMEDOUT)
        return vm_died(vm, err, what);
    if (r < 0) {
        snprintf(what, sizeof(what), "%s", err->msg);
        return vm_died(vm, err, what);
    }
    vm->ready_ns = now_ns();
    vm->booting = false;
    vm->agent_gen++;
    watch_agent(vm, true);
    vm->announced = !vm->quiet;
    if (vm->announced)
        events_emit("vm_spawned", json_pack("{s:s, s:s, s:s, s:I, s:i, s:b}", "file",
                                            vm_globals.file ? vm_globals.file : "", "vm_name",
                                            vm->name, "profile", vm->profile, "memory_bytes",
                                            (json_int_t)(vm->charged - POOL_VM_OVERHEAD), "cid",
                                            (int)vm->cid, "boot_cache", vm->from_boot_cache));
    return 0;
}

int vm_need_stopped(struct vm *vm, const char *op, struct pv_err *err)
{
    if (vm->state == VM_CREATED || vm->state == VM_SHUTDOWN || vm->state == VM_DEAD)
        return 0;
    return pv_err_set(err, EBUSY, "vm `%s`: %s() needs a created or shut-down VM, it is %s",
                      vm->name, op, vm_state_name(vm->state));
}

int vm_boot_as(struct vm *vm, const struct vm_boot *b, const struct start *st, struct pv_err *err)
{
    int r = vm_need_stopped(vm, "boot", err);
    if (r < 0)
        return r;
    vm->from_boot_cache = false;
    int agent_l;
    r = vm_launch(vm, b, st, &agent_l, err);
    return r < 0 ? r : vm_handshake(vm, agent_l, b->agent_timeout, "power-on", err);
}

int vm_boot(struct vm *vm, const struct vm_boot *b, struct pv_err *err)
{
    return vm_boot_as(vm, b, &(struct start){.fresh = true}, err);
}

bool vm_boot_failed(struct vm *vm, int attempt, struct pv_err *err)
{
    if (!vm->boot_infra || vm->state != VM_DEAD)
        return false;
    if (attempt < 2)
        return true;
    /* the first failure's message without its "vm `a`: " */
    _cleanup_free_ char *prefix = xasprintf("vm `%s`: ", vm->name);
    const char *msg = err ? err->msg : "";
    if (!strncmp(msg, prefix, strlen(prefix)))
        msg += strlen(prefix);
    _cleanup_free_ char *what = xstrdup(msg);
    pv_err_set(err, err && err->code ? err->code : EIO,
               "vm `%s`: infrastructure error: %s (%s; the boot failed twice: "
               "docs/debugging.md#infrastructure-errors)",
               vm->name, what, vm->boot_infra);
    if (err)
        err->story = vm->story;
    free(vm->infra_error);
    vm->infra_error = xstrdup(err ? err->msg : "infrastructure error");
    return false;
}

int vm_need_state(struct vm *vm, const char *op, enum vm_state want, struct pv_err *err)
{
    if (vm->state == want)
        return 0;
    if (vm->state == VM_DEAD && vm->exit_reason)
        return pv_err_set(err, EPIPE, "vm `%s`: %s() on a dead VM (%s)", vm->name, op,
                          vm->exit_reason);
    return pv_err_set(err, EINVAL, "vm `%s`: %s() needs a %s VM, but it is %s", vm->name, op,
                      vm_state_name(want), vm_state_name(vm->state));
}

/* now + seconds (0: none). Beyond a year is as good as none: a huge
 * duration must not wrap into a deadline in the past. */
static int64_t deadline_after(double seconds)
{
    if (!(seconds > 0))
        return 0;
    if (seconds > 365 * 86400.0)
        seconds = 365 * 86400.0;
    return now_ns() + (int64_t)(seconds * 1e9);
}

/* The earlier of d (0: none) and the running test's deadline; with
 * neither (the REPL, a fixture's build), VM_WAIT_DEFAULT_S scaled: no wait
 * is without an end (docs/vms.md#deadlines). */
static int64_t test_bound(int64_t d)
{
    int64_t t = vm_globals.op_deadline_ns;
    int64_t r = t && (!d || t < d) ? t : d;
    return r ? r : deadline_after(VM_WAIT_DEFAULT_S * vm_globals.timeout_scale);
}

int vm_wait_ms(double seconds)
{
    int64_t d = test_bound(seconds >= 0 ? deadline_after(MAX(seconds, 1e-9)) : 0);
    int64_t left = (d - now_ns() + 999999) / 1000000;
    return left <= 0 ? 0 : (int)MIN(left, INT32_MAX);
}

/* An operation's own limit, scaled for TCG, bounded by the test's. */
static int64_t op_deadline(double seconds)
{
    return test_bound(deadline_after(seconds * vm_globals.timeout_scale));
}

/* A guest op failed: a dead QEMU turns into the full story; any other
 * failure of the connection (garbage from the guest) names the VM. */
static int op_failed(struct vm *vm, int r, struct pv_err *err)
{
    if (r == -EPIPE) {
        char what[sizeof(err->msg)];
        snprintf(what, sizeof(what), "%s", err ? err->msg : "connection lost");
        return vm_died(vm, err, what);
    }
    if (r < 0 && vm->chan.broken)
        return pv_err_wrap(err, "vm `%s`", vm->name);
    return r;
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
        chan_call(&vm->chan, 0, PV_POWEROFF, &b, now_ns() + 2000000000LL, NULL, NULL, NULL, NULL);
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

int vm_qmp(struct vm *vm, const char *cmd, json_t *args, struct pv_err *err)
{
    int r = qmp_exec(&vm->qmp, cmd, args, now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale),
                     NULL, err);
    if (r == -EPIPE)
        return vm_died(vm, err, "QEMU exited");
    return r < 0 ? pv_err_wrap(err, "vm `%s`", vm->name) : 0;
}

int vm_reset(struct vm *vm, struct pv_err *err)
{
    int r = vm_need_state(vm, "reset", VM_BOOTED, err);
    if (r < 0)
        return r;
    /* A restored QEMU has no firmware to reboot into: a snapshot holds no
     * ROMs, and QEMU waiting for one skips loading them. The reboot takes a
     * new QEMU instead (docs/snapshots.md). */
    if (vm->ram_base) {
        vm_kill(vm);
        return vm_boot_as(vm, &vm->plan, &(struct start){0}, err);
    }
    /* -no-reboot turns every reset into an exit (so a panic ends the VM);
     * let this one through. */
    r = vm_qmp(vm, "set-action", json_pack("{s:s}", "reboot", "reset"), err);
    if (r == 0)
        r = vm_qmp(vm, "system_reset", NULL, err);
    if (r < 0)
        return r;
    int64_t deadline = now_ns() + (int64_t)(60e9 * vm_globals.timeout_scale);
    watch_agent(vm, false);
    /* Requests in flight died with the old agent (their streams end), and
     * its workers with it. */
    chan_drop_all(&vm->chan);
    if (vm_globals.transport == TRANSPORT_VSOCK) {
        /* the guest's listener died with the old kernel: connect afresh,
         * never reusing a request id a stale handle may still name */
        uint32_t next_id = vm->chan.next_id;
        chan_release(&vm->chan);
        int fd = connect_vsock(vm, deadline, err);
        if (fd < 0)
            return vm_died(vm, err, "no agent after reset");
        chan_init(&vm->chan, fd, vm->pidfd);
        vm->chan.next_id = next_id;
        vm->chan.on_event = vm_on_kmsg;
        vm->chan.event_ctx = vm;
    } else {
        /* the same byte stream carries on; chan_hello resynchronises */
        buf_consume(&vm->chan.in, vm->chan.in.len);
        vm->chan.broken = false;
    }
    r = chan_hello(&vm->chan, deadline, err);
    if (r < 0) {
        _cleanup_free_ char *what = xasprintf("no agent after reset: %s", err->msg);
        return vm_died(vm, err, what);
    }
    vm->agent_gen++;
    r = vm_qmp(vm, "set-action", json_pack("{s:s}", "reboot", "shutdown"), err);
    watch_agent(vm, true);
    return r;
}

int vm_pause(struct vm *vm, struct pv_err *err)
{
    int r = vm_need_state(vm, "pause", VM_BOOTED, err);
    if (r == 0 && (r = vm_qmp(vm, "stop", NULL, err)) == 0)
        vm->state = VM_PAUSED;
    return r;
}

int vm_resume(struct vm *vm, struct pv_err *err)
{
    int r = vm_need_state(vm, "resume", VM_PAUSED, err);
    if (r == 0 && (r = vm_qmp(vm, "cont", NULL, err)) == 0)
        vm->state = VM_BOOTED;
    return r;
}

int vm_power_button(struct vm *vm, struct pv_err *err)
{
    int r = vm_need_state(vm, "power_button", VM_BOOTED, err);
    if (r < 0)
        return r;
    /* The shim loads the button's modules only now (src/agent/main.c) */
    uint32_t state;
    r = guest_power_button(&(struct target){vm, 0}, &state, err);
    if (r < 0 && err && err->guest)
        return pv_err_wrap(err, "vm `%s`: power_button: the agent could not arm it", vm->name);
    if (r < 0)
        return r;
    if (state == PV_BUTTON_NONE)
        return pv_err_set(err, ENODEV,
                          "vm `%s`: the guest has no ACPI power button device (its kernel lacks "
                          "the button and evdev modules, docs/kernels.md#modules)",
                          vm->name);
    r = vm_qmp(vm, "system_powerdown", NULL, err);
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

/* chan_wait until d, a second at a time: between, the logs are bounded,
 * since QEMU writes the consoles while a long call waits, and the hang
 * watchdog looks for a sign of life (src/host/hang.c): -EHOSTDOWN when the
 * guest showed none for the hang timeout (the VM is dead). */
static int wait_reply(struct vm *vm, uint32_t id, int64_t d, struct buf *reply, struct pv_err *err)
{
    hang_start(vm);
    for (;;) {
        int64_t slice = now_ns() + 1000000000LL;
        int r = chan_wait(&vm->chan, id, MIN(d, slice), reply, err);
        if (r != -ETIMEDOUT || now_ns() >= d || vm->chan.broken)
            return r;
        vm_logs_bound(vm);
        if ((r = hang_check(vm, err)) < 0)
            return r;
    }
}

int vm_call(struct vm *vm, uint64_t route, const char *op, uint16_t type, const struct buf *req,
            double timeout_s, chan_chunk_fn fn, void *ctx, struct buf *reply, struct pv_err *err)
{
    uint32_t id = vm_start(vm, route, op, type, req, fn, ctx, err);
    if (!id)
        return err ? -err->code : -EIO;
    int r = wait_reply(vm, id, op_deadline(timeout_s), reply, err);
    if (r < 0)
        chan_drop(&vm->chan, id);
    if (r == -ETIMEDOUT)
        return pv_err_wrap(err, "vm `%s`: %s", vm->name, op);
    return op_failed(vm, r, err);
}

uint32_t vm_start(struct vm *vm, uint64_t route, const char *op, uint16_t type,
                  const struct buf *req, chan_chunk_fn fn, void *ctx, struct pv_err *err)
{
    if (vm_need_state(vm, op, VM_BOOTED, err) < 0)
        return 0;
    vm_logs_bound(vm);
    uint32_t id = chan_start(&vm->chan, route, type, req, op_deadline(GUEST_SHORT_S), fn, ctx, err);
    if (!id && vm->chan.broken)
        op_failed(vm, -EPIPE, err);
    else if (!id)
        pv_err_wrap(err, "vm `%s`: %s", vm->name, op);
    return id;
}

int vm_finish(struct vm *vm, uint32_t id, double timeout_s, struct buf *reply, struct pv_err *err)
{
    /* the caller's own time, not scaled */
    int r = wait_reply(vm, id, test_bound(deadline_after(timeout_s)), reply, err);
    return r == -ETIMEDOUT && !vm->chan.broken ? r : op_failed(vm, r, err);
}

int vm_pump(struct vm *vm, double timeout_s, struct pv_err *err)
{
    if (vm->state != VM_BOOTED)
        return 0;
    vm_logs_bound(vm);
    int r = chan_pump(&vm->chan, deadline_after(timeout_s), err);
    return r < 0 ? op_failed(vm, r, err) : r;
}
