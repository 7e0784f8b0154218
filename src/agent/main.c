/* provium-agent: started by the kernel as PID 1 (rdinit=/provium-agent).
 *
 * The PID-1 shim mounts the pseudo filesystems, loads the kernel modules the
 * transport needs (the host wrote their paths, dependencies first, into
 * /.provium/modules; the rest follow from /.provium/modules.late once the
 * agent runs), optionally switches to a root disk (rootfs profiles),
 * forks the agent proper, and then execs the profile's init so that init
 * keeps PID 1. With no init at all the shim stays PID 1, reaps orphans and
 * powers off on the ACPI power button, whose modules
 * (/.provium/modules.button) it loads when the agent first asks
 * (PV_POWER_BUTTON, before vm:power_button presses it): most tests never
 * press it, and under TCG its modules are 30 ms of every boot.
 *
 * Kernel command line parameters read here:
 *   provium.transport=virtio-serial|vsock   (default virtio-serial)
 *   provium.vsock_port=N                    (default 5123)
 *   provium.init=/path                      (the profile's `init` key)
 *   provium.root=/dev/vda provium.rootfstype=ext4  (rootfs profiles)
 *   provium.test_hostile=1                  (serve PV_TEST_MISBEHAVE: tests only)
 *
 * Run by hand (not PID 1) it serves a socket on fd 0 (socat, tests); with
 * --worker, without the handshake, as a worker of another agent. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/input.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/prctl.h>
#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "agent.h"

#define PORT_NAME "org.provium.agent"

static char cmdline[4096];

/* A line in the kernel log (so on the console), or straight on the
 * console when there is no /dev/kmsg (no devtmpfs). crit: at level 2,
 * which the console shows even with `quiet`. */
static void kvlog(bool crit, const char *what, const char *fmt, va_list ap)
{
    char msg[512];
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
    const char *level = crit ? "<2>" : "";
    if (fd < 0) {
        fd = open("/dev/console", O_WRONLY | O_CLOEXEC | O_NOCTTY);
        level = "";
    }
    if (fd >= 0) {
        char line[600];
        int m = snprintf(line, sizeof(line), "%sprovium-agent: %s%.*s\n", level, what, n, msg);
        (void)!write(fd, line, (size_t)MIN(m, (int)sizeof(line) - 1));
        close(fd);
    }
}

static void klog(const char *fmt, ...) PV_PRINTF(1, 2);
static void klog(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kvlog(false, "", fmt, ap);
    va_end(ap);
}

/* A set-up error the agent cannot get past: one line that the host, while
 * it waits for the agent, watches the console for ("provium-agent: fatal:
 * "), failing the boot at once with it (src/host/vm.c, docs/kernels.md). */
static void kfatal(const char *fmt, ...) PV_PRINTF(1, 2);
static void kfatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kvlog(true, MODULES_FATAL, fmt, ap);
    va_end(ap);
}

/* The value of `key=` on the kernel command line, or def. */
static const char *param(const char *key, char *out, size_t outlen, const char *def)
{
    size_t klen = strlen(key);
    for (const char *p = cmdline; *p;) {
        while (*p == ' ' || *p == '\n')
            p++;
        const char *end = p + strcspn(p, " \n");
        if ((size_t)(end - p) > klen && !strncmp(p, key, klen) && p[klen] == '=') {
            size_t n = MIN((size_t)(end - p) - klen - 1, outlen - 1);
            memcpy(out, p + klen + 1, n);
            out[n] = 0;
            return out;
        }
        p = end;
    }
    return def;
}

/* option: the Kconfig option without which the agent cannot work when
 * the kernel does not know the filesystem (ENODEV), or NULL. */
static void mount_one(const char *src, const char *dir, const char *type, unsigned long fl,
                      const char *data, const char *option)
{
    mkdir(dir, 0755);
    if (mount(src, dir, type, fl, data) == 0 || errno == EBUSY)
        return;
    if (errno == ENODEV && option)
        kfatal("mount %s on %s: %s: the kernel lacks CONFIG_%s", type, dir, strerror(errno),
               option);
    else
        klog("mount %s on %s: %s", type, dir, strerror(errno));
}

static void mount_pseudo(void)
{
    mount_one("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, "PROC_FS");
    mount_one("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, "SYSFS");
    mount_one("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", "DEVTMPFS");
    mount_one("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666",
              NULL);
    mount_one("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", NULL);
    mount_one("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", NULL);
    mount_one("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", NULL);
}

/* Load the modules a list of the overlay names (modules.c), each failure
 * into the kernel log; one the agent needs as a fatal error. */
static void load_modules(const char *listfile)
{
    struct buf why = BUF_INIT;
    modules_load(listfile, &why);
    for (char *line = why.data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        size_t fl = strlen(MODULES_FATAL);
        if (!strncmp(line, MODULES_FATAL, fl))
            kfatal("%s", line + fl);
        else
            klog("%s", line);
    }
    buf_release(&why);
}

/* The system calls the agent cannot do without, each behind a Kconfig
 * option that tinyconfig turns off: ENOSYS from one is a fatal error that
 * names the option (docs/kernels.md). */
static void probe_syscalls(void)
{
    sigset_t none;
    sigemptyset(&none);
    int fd = signalfd(-1, &none, SFD_CLOEXEC);
    if (fd < 0 && errno == ENOSYS)
        kfatal("signalfd(): %s: the kernel lacks CONFIG_SIGNALFD", strerror(errno));
    if (fd >= 0)
        close(fd);
    fd = eventfd(0, EFD_CLOEXEC);
    if (fd < 0 && errno == ENOSYS)
        kfatal("eventfd(): %s: the kernel lacks CONFIG_EVENTFD", strerror(errno));
    if (fd >= 0)
        close(fd);
    int word = 0;
    if (syscall(SYS_futex, &word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0) < 0 && errno == ENOSYS)
        kfatal("futex(): %s: the kernel lacks CONFIG_FUTEX", strerror(errno));
}

/* rootfs profiles: mount the root disk and make it /, as switch_root does.
 * The initramfs content stays in memory (it is small: the agent and modules). */
static void switch_root(const char *dev, const char *type)
{
    const char *fstypes[] = {type, "ext4", "xfs", "btrfs", "ext2", NULL};
    mkdir("/newroot", 0755);
    int64_t give_up = now_ms() + 10000;
    for (;;) {
        for (int i = 0; fstypes[i]; i++) {
            if (!*fstypes[i])
                continue;
            if (mount(dev, "/newroot", fstypes[i], 0, NULL) == 0)
                goto mounted;
        }
        if (now_ms() > give_up) {
            klog("cannot mount root %s: %s", dev, strerror(errno));
            return;
        }
        poll(NULL, 0, 20);
    }
mounted:;
    const char *moves[] = {"/dev", "/proc", "/sys", "/run", "/tmp"};
    for (size_t i = 0; i < ARRAY_SIZE(moves); i++) {
        char target[64];
        snprintf(target, sizeof(target), "/newroot%s", moves[i]);
        mkdir(target, 0755);
        if (mount(moves[i], target, NULL, MS_MOVE, NULL) < 0)
            umount2(moves[i], MNT_DETACH);
    }
    if (chdir("/newroot") < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 ||
        chdir("/") < 0)
        klog("switch to root %s: %s", dev, strerror(errno));
}

/* The drivers of the agent's port are registered before the agent starts
 * (built in, or loaded by the shim): when, this long after, sysfs has not
 * got them, the port will never come. */
#define VPORT_DRIVER_MS 2000

static void missing_drivers(void)
{
    static const struct {
        const char *dir, *module, *option;
    } drivers[] = {
        {"/sys/bus/pci/drivers/virtio-pci", "virtio_pci", "VIRTIO_PCI"},
        {"/sys/bus/virtio/drivers/virtio_console", "virtio_console", "VIRTIO_CONSOLE"},
    };
    struct stat st;
    for (size_t i = 0; i < ARRAY_SIZE(drivers); i++)
        if (stat(drivers[i].dir, &st) < 0) {
            kfatal("no virtio port %s: the kernel has no %s driver (is %s loaded? built in, it "
                   "needs CONFIG_%s)",
                   PORT_NAME, drivers[i].module, drivers[i].module, drivers[i].option);
            return;
        }
}

/* The agent's virtio-serial port: /dev/vportNpM whose sysfs name is ours.
 * No udev here, so look it up in sysfs. */
static int open_vport(void)
{
    int64_t started = now_ms(), warned = started + 10000;
    bool checked = false;
    for (;;) {
        DIR *d = opendir("/sys/class/virtio-ports");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char path[300], name[64] = "";
            snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                continue;
            ssize_t n = read(fd, name, sizeof(name) - 1);
            close(fd);
            if (n <= 0 || strncmp(name, PORT_NAME, strlen(PORT_NAME)))
                continue;
            snprintf(path, sizeof(path), "/dev/%s", e->d_name);
            fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
            if (fd >= 0) {
                closedir(d);
                return fd;
            }
        }
        if (d)
            closedir(d);
        if (!checked && now_ms() > started + VPORT_DRIVER_MS) {
            missing_drivers();
            checked = true;
        }
        if (warned && now_ms() > warned) {
            klog("still waiting for virtio port %s (is virtio_console loaded?)", PORT_NAME);
            warned = 0;
        }
        poll(NULL, 0, 10);
    }
}

/* tests/vm/hostile.test.lua's VMs: the agent breaks the protocol on command. */
static bool test_hostile(void)
{
    char v[8];
    return !strcmp(param("provium.test_hostile", v, sizeof(v), "0"), "1");
}

static void agent_virtio_serial(void)
{
    struct agent_opts o = {
        .allow_power = true, .resync = true, .follow_kmsg = true, .test_hostile = test_hostile()};
    for (;;) {
        int fd = open_vport();
        int r = agent_serve(fd, &o);
        klog("virtio-serial session ended: %s", r < 0 ? strerror(-r) : "hang-up");
        close(fd);
        poll(NULL, 0, 50);
    }
}

static void agent_vsock(unsigned port)
{
    int s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_port = port, .svm_cid = VMADDR_CID_ANY};
    while (s < 0 || bind(s, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(s, 4) < 0) {
        klog("vsock port %u: %s; retrying", port, strerror(errno));
        if (s >= 0)
            close(s);
        poll(NULL, 0, 200);
        s = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    }
    struct agent_opts o = {
        .allow_power = true, .resync = false, .follow_kmsg = true, .test_hostile = test_hostile()};
    for (;;) {
        int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            poll(NULL, 0, 10);
            continue;
        }
        agent_serve(c, &o);
        close(c);
    }
}

static void agent_main(void)
{
    char tr[32], port[16];
    prctl(PR_SET_NAME, "provium-agent");
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
    if (chdir("/") < 0)
        _exit(1);
    if (!strcmp(param("provium.transport", tr, sizeof(tr), "virtio-serial"), "vsock"))
        agent_vsock((unsigned)atoi(param("provium.vsock_port", port, sizeof(port), "5123")));
    agent_virtio_serial();
}

/* The input device named "Power Button" (ACPI button + evdev): an fd; -1
 * when there is none; -2 when sysfs has it but devtmpfs has not made its node
 * yet (it does that asynchronously). */
static int find_power_button(void)
{
    for (int i = 0; i < 32; i++) {
        char path[96], name[64] = "";
        snprintf(path, sizeof(path), "/sys/class/input/event%d/device/name", i);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, name, sizeof(name) - 1);
        close(fd);
        if (n > 0 && !strncmp(name, "Power Button", 12)) {
            snprintf(path, sizeof(path), "/dev/input/event%d", i);
            fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
            return fd >= 0 ? fd : -2;
        }
    }
    return -1;
}

static int open_power_button(void)
{
    int fd = find_power_button();
    for (int tries = 0; fd == -2 && tries < 100; tries++) {
        poll(NULL, 0, 5);
        fd = find_power_button();
    }
    return fd < 0 ? -1 : fd;
}

static bool power_pressed(int fd)
{
    struct input_event ev[16];
    ssize_t n = read(fd, ev, sizeof(ev));
    for (ssize_t i = 0; i < n / (ssize_t)sizeof(ev[0]); i++)
        if (ev[i].type == EV_KEY && ev[i].code == KEY_POWER && ev[i].value == 1)
            return true;
    return false;
}

static bool executable(const char *p)
{
    return p && *p && access(p, X_OK) == 0;
}

static int shim(char **argv)
{
    mount_pseudo();
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, cmdline, sizeof(cmdline) - 1);
        cmdline[n > 0 ? n : 0] = 0;
        close(fd);
    }
    setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", 1);
    setenv("HOME", "/root", 1); /* the kernel passes HOME=/ */
    setenv("TERM", "linux", 0);
    /* The transport's modules before the agent starts; entropy's while it
     * answers its first Hello. */
    load_modules("/.provium/modules");
    probe_syscalls();

    char root[128], rtype[32], init[256];
    if (param("provium.root", root, sizeof(root), NULL))
        switch_root(root, param("provium.rootfstype", rtype, sizeof(rtype), ""));

    const char *want = param("provium.init", init, sizeof(init), NULL);
    const char *cands[] = {want, "/init", "/sbin/init"}, *chosen = NULL;
    for (size_t i = 0; i < ARRAY_SIZE(cands) && !chosen; i++)
        if (executable(cands[i]))
            chosen = cands[i];
    if (want && chosen != want)
        klog("init %s is not executable; %s", want, chosen ? chosen : "staying PID 1");
    /* With no init the shim handles the power button, on the agent's word */
    int line[2] = {-1, -1};
    if (!chosen && socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, line) < 0)
        klog("socketpair: %s; the power button is not watched", strerror(errno));

    pid_t pid = fork();
    if (pid == 0) {
        if (line[0] >= 0)
            close(line[0]);
        agent_button_fd = line[1];
        agent_main();
        _exit(1);
    }
    if (pid < 0)
        klog("fork: %s", strerror(errno));
    if (line[1] >= 0)
        close(line[1]);
    load_modules("/.provium/modules.late");
    if (chosen) {
        load_modules("/.provium/modules.button");
        argv[0] = (char *)chosen;
        execv(chosen, argv);
        klog("exec %s: %s; staying PID 1", chosen, strerror(errno));
    }
    /* No init: stay PID 1, reap whatever is orphaned, and do an init's
     * duty on the ACPI power button once the agent asks for it. */
    int button = -1;
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        struct pollfd p[2] = {{line[0], POLLIN, 0}, {button, POLLIN, 0}};
        if (poll(p, 2, 1000) <= 0)
            continue;
        if (p[0].revents) {
            uint8_t c;
            ssize_t n = recv(line[0], &c, 1, MSG_DONTWAIT);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) { /* the agent is gone */
                close(line[0]);
                line[0] = -1;
            } else if (n == 1) {
                if (button < 0) {
                    load_modules("/.provium/modules.button");
                    button = open_power_button();
                }
                c = button >= 0 ? PV_BUTTON_READY : PV_BUTTON_NONE;
                send(line[0], &c, 1, MSG_NOSIGNAL);
            }
        }
        if ((p[1].revents & POLLIN) && power_pressed(button)) {
            klog("power button pressed: powering off");
            sync();
            reboot(RB_POWER_OFF);
        }
    }
}

int main(int argc, char **argv)
{
    if (getpid() == 1)
        return shim(argv);
    signal(SIGPIPE, SIG_IGN);
    /* a worker (worker.c): fd 0 is its socket to the agent that started it */
    bool worker = argc == 2 && !strcmp(argv[1], "--worker");
    if (worker)
        prctl(PR_SET_NAME, "provium-worker");
    struct agent_opts o = {.allow_power = false, .resync = false, .worker = worker};
    int s[1] = {0};
    /* serve a connected socket on fd 0 */
    int type;
    socklen_t tl = sizeof(type);
    if (getsockopt(0, SOL_SOCKET, SO_TYPE, &type, &tl) == 0)
        return agent_serve(s[0], &o) < 0 ? 1 : 0;
    fprintf(stderr, "provium-agent: run me as PID 1 inside a guest, or with a socket on stdin\n");
    return 2;
}
