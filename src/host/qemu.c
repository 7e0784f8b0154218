#include "qemu.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "child.h"
#include "hash.h"
#include "spawn.h"

extern char **environ;

/* The devices every VM gets, and the forms of those it may get: their text
 * names the device set (qemu_device_set). Both virtio devices share slot 3
 * as two functions, and disks and NICs go behind a bridge, because q35's
 * root bus cannot hot-plug; the bridge reserves room for them, or one
 * plugged after boot finds no address space. */
#define DEV_VSER "virtio-serial-pci,id=vser0,addr=0x3.0,multifunction=on"
#define DEV_HVC "virtconsole,bus=vser0.0,chardev=hvc0,nr=0"
#define DEV_AGENT                                                                                  \
    "virtserialport,bus=vser0.0,chardev=agent,name=org.provium.agent,nr=1,id=agentport"
#define DEV_VSOCK "vhost-vsock-pci,guest-cid=%u"
#define DEV_RNG "virtio-rng-pci,rng=rng0,addr=0x3.1"
#define DEV_BRIDGE                                                                                 \
    "pci-bridge,id=" QEMU_HOTPLUG_BUS ",chassis_nr=1,shpc=off,addr=0x4,io-reserve=4K,"             \
    "mem-reserve=8M,pref64-reserve=32M"
#define DEV_DISK "virtio-blk-pci,drive=vd%u,id=vdisk%u,bus=" QEMU_HOTPLUG_BUS ",addr=0x%x,serial=%s"
#define DEV_NIC                                                                                    \
    "virtio-net-pci,netdev=net%u,id=nic%u,bus=" QEMU_HOTPLUG_BUS                                   \
    ",addr=0x%x,mac=%02x:%02x:%02x:%02x:%02x:%02x"

const char *qemu_device_set(void)
{
    static const char all[] = DEV_VSER "\n" DEV_HVC "\n" DEV_AGENT "\n" DEV_VSOCK "\n" DEV_RNG
                                       "\n" DEV_BRIDGE "\n" DEV_DISK "\n" DEV_NIC;
    static char hex[65];
    if (!hex[0]) {
        sha256_hex(all, sizeof(all) - 1, hex);
        hex[16] = 0;
    }
    return hex;
}

struct argv {
    char **v;
    size_t n;
};

static void add(struct argv *a, const char *s)
{
    a->v = xrealloc(a->v, (a->n + 2) * sizeof(char *));
    a->v[a->n++] = xstrdup(s);
    a->v[a->n] = NULL;
}

static void addf(struct argv *a, const char *fmt, ...) PV_PRINTF(2, 3);
static void addf(struct argv *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s;
    if (vasprintf(&s, fmt, ap) < 0)
        abort();
    va_end(ap);
    add(a, s);
    free(s);
}

/* QEMU's option parser splits on ',' and reads ",," as a literal comma. */
static char *qesc(const char *s)
{
    struct buf b = BUF_INIT;
    for (; *s; s++) {
        if (*s == ',')
            buf_add(&b, ",", 1);
        buf_add(&b, s, 1);
    }
    return buf_steal(&b);
}

/* The serial console, hvc0 and the agent's channel. */
static void add_consoles(struct argv *a, const struct qemu_config *qc, const char *dir,
                         const char *sock)
{
    /* Consoles: QEMU listens (console:read connects later) and logs every
     * byte from power-on, whether or not anyone is connected. */
    add(a, "-chardev");
    addf(a,
         "socket,id=ser0,path=%s/serial.sock,server=on,wait=off,logfile=%s/serial.log,"
         "logappend=on",
         sock, dir);
    add(a, "-serial");
    add(a, "chardev:ser0");
    add(a, "-device");
    add(a, DEV_VSER);
    add(a, "-chardev");
    addf(a, "socket,id=hvc0,path=%s/hvc.sock,server=on,wait=off,logfile=%s/hvc.log,logappend=on",
         sock, dir);
    add(a, "-device");
    add(a, DEV_HVC);

    /* The agent's transport. */
    if (qc->transport == TRANSPORT_VSOCK) {
        add(a, "-device");
        addf(a, DEV_VSOCK, qc->cid);
    } else {
        add(a, "-chardev");
        addf(a, "socket,id=agent,path=%s/agent.sock", sock);
        add(a, "-device");
        add(a, DEV_AGENT);
    }
}

/* The profile's disks, then the attached ones (docs/disks.md). */
static void add_disks(struct argv *a, const struct qemu_config *qc)
{
    /* Profile disks: writable for the guest, never modified: writes go to
     * a temporary overlay that QEMU creates in $TMPDIR (the VM's run
     * directory, see qemu_start) and drops when it exits. */
    for (size_t i = 0; qc->disks && qc->disks[i]; i++) {
        _cleanup_free_ char *d = qesc(qc->disks[i]);
        add(a, "-drive");
        addf(a, "file=%s,if=virtio,format=raw,%s", d,
             qc->disk_ro && qc->disk_ro[i] ? "readonly=on" : "snapshot=on");
    }
    /* Attached disks (docs/disks.md): NBD on the disk server's socketpair
     * ends, inherited, or a plain disk's file opened by QEMU itself; slots
     * after the profile's disks, in attach order. */
    for (size_t i = 0; i < qc->nvdisks; i++) {
        const struct qemu_disk *d = &qc->vdisks[i];
        _cleanup_free_ char *serial = qesc(d->serial);
        add(a, "-blockdev");
        if (d->fd < 0)
            addf(a, "driver=%s,node-name=vd%u,file.driver=file,file.filename=%s%s", d->format,
                 d->slot, d->file, d->readonly ? ",read-only=on" : "");
        else
            addf(a, "driver=nbd,node-name=vd%u,server.type=fd,server.str=%d%s", d->slot, d->fd,
                 d->readonly ? ",read-only=on" : "");
        add(a, "-device");
        addf(a, DEV_DISK, d->slot, d->slot, d->slot, serial);
    }
}

/* NICs (docs/networks.md): the switch's socketpair ends, inherited. */
static void add_nics(struct argv *a, const struct qemu_config *qc)
{
    for (size_t i = 0; i < qc->nnics; i++) {
        const struct qemu_nic *n = &qc->nics[i];
        add(a, "-netdev");
        addf(a, "dgram,id=net%u,local.type=fd,local.str=%d", n->slot, n->fd);
        add(a, "-device");
        addf(a, DEV_NIC, n->slot, n->slot, n->slot, n->mac[0], n->mac[1], n->mac[2], n->mac[3],
             n->mac[4], n->mac[5]);
    }
}

char **qemu_argv(const struct qemu_config *qc)
{
    struct argv a = {0};
    _cleanup_free_ char *dir = qesc(qc->dir);
    _cleanup_free_ char *sock = qesc(qc->sockdir ? qc->sockdir : qc->dir);
    add(&a, qc->binary ? qc->binary : "qemu-system-x86_64");
    add(&a, "-name");
    add(&a, "provium");
    add(&a, "-no-user-config");
    add(&a, "-nodefaults");
    add(&a, "-display");
    add(&a, "none");
    add(&a, "-machine");
    addf(&a, "%s,accel=%s,suppress-vmdesc=on%s", qc->machine ? qc->machine : "pc",
         qc->accel == ACCEL_KVM ? "kvm" : "tcg", qc->ram_file ? ",memory-backend=pc.ram" : "");
    /* The backend takes the name of the machine's own RAM, so a migration
     * stream of either kind of RAM restores into the other. */
    if (qc->ram_file) {
        _cleanup_free_ char *f = qesc(qc->ram_file);
        add(&a, "-object");
        addf(&a, "memory-backend-file,id=pc.ram,size=%llum,mem-path=%s,share=off",
             (unsigned long long)(qc->memory >> 20), f);
    }
    /* Under TCG, `max` (qemu64 boots faster only because the guest finds
     * no local APIC and runs in PIC mode with one CPU). */
    add(&a, "-cpu");
    add(&a, qc->accel == ACCEL_KVM ? "host" : "max");
    add(&a, "-m");
    addf(&a, "%llum", (unsigned long long)(qc->memory >> 20));
    add(&a, "-smp");
    addf(&a, "%d", qc->cpus);
    add(&a, "-no-reboot");
    /* A restore's guest booted long ago: QEMU need not read the kernel
     * and initrd into memory (10 MiB of page faults, 30 ms here). */
    if (!qc->incoming) {
        add(&a, "-kernel");
        add(&a, qc->kernel);
        if (qc->initrd) {
            add(&a, "-initrd");
            add(&a, qc->initrd);
        }
        add(&a, "-append");
        add(&a, qc->cmdline);
    }

    /* Control: QMP; provium listens, QEMU connects at start-up. */
    add(&a, "-chardev");
    addf(&a, "socket,id=qmp,path=%s/qmp.sock", sock);
    add(&a, "-mon");
    add(&a, "chardev=qmp,mode=control");

    add_consoles(&a, qc, dir, sock);

    /* -seed makes QEMU's guest-visible randomness (the built-in rng
     * backend, and RDRAND under TCG) a function of the seed. */
    add(&a, "-object");
    if (qc->has_rng_seed) {
        add(&a, "rng-builtin,id=rng0");
        add(&a, "-seed");
        addf(&a, "%" PRIu64, qc->rng_seed);
    } else {
        add(&a, "rng-random,id=rng0,filename=/dev/urandom");
    }
    add(&a, "-device");
    add(&a, DEV_RNG);
    add(&a, "-device");
    add(&a, DEV_BRIDGE);

    add_disks(&a, qc);
    add_nics(&a, qc);
    if (qc->gdb) {
        add(&a, "-chardev");
        addf(&a, "socket,id=gdb0,fd=%d,server=on,wait=off", qc->gdb_fd);
        add(&a, "-gdb");
        add(&a, "chardev:gdb0");
    }
    /* A snapshot's device state (xen-save-devices-state) has neither the
     * configuration section nor the description that a migration's loader
     * otherwise demands. */
    add(&a, "-global");
    add(&a, "migration.send-configuration=off");
    /* a restore: the state arrives by migrate-incoming, RAM aside */
    if (qc->incoming) {
        add(&a, "-incoming");
        add(&a, "defer");
    }
    return a.v;
}

void qemu_argv_free(char **argv)
{
    for (size_t i = 0; argv && argv[i]; i++)
        free(argv[i]);
    free(argv);
}

char *qemu_which(const char *name)
{
    if (strchr(name, '/'))
        return access(name, X_OK) == 0 ? xstrdup(name) : NULL;
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    _cleanup_free_ char *copy = xstrdup(path);
    char *save;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char *p = xasprintf("%s/%s", d, name);
        if (access(p, X_OK) == 0)
            return p;
        free(p);
    }
    return NULL;
}

/* QEMU itself, in a process group of its own (child.h has the rules). */
__attribute__((noreturn)) static void qemu_child(const char *exe, const char *const *argv,
                                                 char **env, int nullfd, int logfd, int report_fd,
                                                 const int *keep, size_t nkeep, pid_t parent)
{
    struct child_opts o = {
        .parent = parent,
        .flags = CHILD_PGRP,
        .stdio = {nullfd, logfd, logfd},
        .report_fd = report_fd,
    };
    int step = child_setup(&o);
    for (size_t i = 0; !step && i < nkeep; i++)
        if (fcntl(keep[i], F_SETFD, 0) < 0)
            step = CHILD_STDIO;
    if (!step) {
        execve(exe, (char *const *)argv, env);
        step = CHILD_EXEC;
    }
    child_fail(o.report_fd, step);
}

int qemu_start(const char *const *argv, const char *dir, const int *keep, size_t nkeep,
               pid_t *ret_pid, int *ret_pidfd, struct pv_err *err)
{
    _cleanup_free_ char *exe = qemu_which(argv[0]);
    if (!exe)
        return pv_err_set(err, ENOENT,
                          "%s not found in PATH: install QEMU (apt-get install "
                          "--no-install-recommends qemu-system-x86)",
                          argv[0]);
    _cleanup_free_ char *log = xasprintf("%s/qemu.log", dir);
    _cleanup_close_ int logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0)
        return pv_err_set(err, errno, "%s: %s", log, strerror(errno));
    _cleanup_close_ int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (nullfd < 0)
        return pv_err_set(err, errno, "/dev/null: %s", strerror(errno));
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return pv_err_set(err, errno, "cannot exec `%s`: pipe: %s", exe, strerror(errno));
    _cleanup_close_ int rep_r = p[0], rep_w = p[1];
    /* QEMU's temporary files (snapshot=on overlays) live in the run dir.
     * Its heap comes in transparent huge pages where the host allows them
     * (glibc 2.35's tunable; ignored elsewhere): QEMU's start-up takes 40 %
     * fewer page faults, 15 ms here (docs/boot-cache.md). */
    size_t n = 0;
    while (environ[n])
        n++;
    _cleanup_free_ char **env = xcalloc(n + 3, sizeof(char *));
    _cleanup_free_ char *tmpdir = xasprintf("TMPDIR=%s", dir);
    const char *tun = getenv("GLIBC_TUNABLES");
    _cleanup_free_ char *tunables = xasprintf("GLIBC_TUNABLES=%s%sglibc.malloc.hugetlb=1",
                                              tun ? tun : "", tun && *tun ? ":" : "");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "TMPDIR=", 7) && strncmp(environ[i], "GLIBC_TUNABLES=", 15))
            env[k++] = environ[i];
    env[k++] = tmpdir;
    env[k++] = tunables;
    pid_t parent = getpid();
    pid_t pid = child_fork(NULL);
    if (pid < 0)
        return pv_err_set(err, errno, "fork: %s", strerror(errno));
    if (pid == 0)
        qemu_child(exe, argv, env, nullfd, logfd, rep_w, keep, nkeep, parent);
    setpgid(pid, pid);
    close(steal_fd(&rep_w));
    struct child_report f;
    int r = child_wait_exec(rep_r, &f);
    if (r != 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        if (r < 0)
            return pv_err_set(err, -r, "cannot exec `%s`: %s", exe, strerror(-r));
        if (f.step == CHILD_EXEC)
            return pv_err_set(err, f.errnum, "cannot exec `%s`: %s", exe, strerror(f.errnum));
        return pv_err_set(err, f.errnum, "cannot exec `%s`: %s: %s", exe, child_step_name(f.step),
                          strerror(f.errnum));
    }
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        int e = errno;
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return pv_err_set(err, e, "pidfd_open: %s", strerror(e));
    }
    fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    *ret_pid = pid;
    *ret_pidfd = pidfd;
    return 0;
}

const char *qemu_version(void)
{
    static char version[64];
    if (version[0])
        return version;
    const char *argv[] = {"qemu-system-x86_64", "--version", NULL};
    struct buf out = BUF_INIT;
    int status;
    if (spawn_run(argv, NULL, &out, 4096, 10000, &status, NULL) == 0) {
        const char *p = strstr(out.data ? out.data : "", "version ");
        if (p)
            sscanf(p + 8, "%63[^ \n]", version);
    }
    buf_release(&out);
    return version[0] ? version : NULL;
}

uint32_t qemu_next_cid(void)
{
    /* CIDs 0-2 are reserved. Spread processes apart by pid so parallel runs
     * rarely meet; within a process, count up. */
    static uint32_t n;
    return 3 + ((uint32_t)getpid() * 1024u + n++) % 0x7ffffff0u;
}
