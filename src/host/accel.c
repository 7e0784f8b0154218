#include "accel.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "kernel.h"

/* A working KVM prints the banner well within a second. */
#define PROBE_MS 8000

const char *accel_name(enum accel a)
{
    return a == ACCEL_KVM ? "kvm" : a == ACCEL_TCG ? "tcg" : "auto";
}

const char *transport_name(enum transport t)
{
    return t == TRANSPORT_VSOCK ? "vsock" : t == TRANSPORT_VIRTIO_SERIAL ? "virtio-serial" : "auto";
}

static bool kvm_opens(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return false;
    close(fd);
    return true;
}

/* Boot the kernel under KVM with the serial console on: a working KVM prints
 * "Linux version" at once; a broken one (guest hangs after the firmware)
 * never prints a line. */
static bool probe_kvm(const char *kernel)
{
    const char *tmp = getenv("TMPDIR");
    _cleanup_free_ char *dir = xasprintf("%s/provium-kvmprobe-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return false;
    _cleanup_free_ char *log = xasprintf("%s/serial.log", dir);
    _cleanup_free_ char *serial = xasprintf("file:%s", log);
    const char *argv[] = {"qemu-system-x86_64",
                          "-nodefaults",
                          "-no-user-config",
                          "-display",
                          "none",
                          "-machine",
                          "pc,accel=kvm",
                          "-cpu",
                          "host",
                          "-m",
                          "128",
                          "-no-reboot",
                          "-serial",
                          serial,
                          "-kernel",
                          kernel,
                          "-append",
                          "console=ttyS0 panic=-1 rdinit=/provium-probe-no-init",
                          NULL};
    pid_t pid;
    int pidfd;
    bool ok = false;
    if (qemu_start(argv, dir, NULL, 0, &pid, &pidfd, NULL) == 0) {
        /* Done as soon as the kernel's banner shows, or QEMU exits. */
        int64_t deadline = now_ms() + PROBE_MS;
        for (bool exited = false; !ok && !exited && now_ms() < deadline;) {
            struct pollfd p = {pidfd, POLLIN, 0};
            exited = poll(&p, 1, 50) == 1;
            struct buf out = BUF_INIT;
            read_file(log, 1 << 20, &out);
            ok = out.data && strstr(out.data, "Linux version");
            buf_release(&out);
        }
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(pidfd);
    }
    rm_rf(dir);
    return ok;
}

int accel_cache_verdict(char *text, const char *key)
{
    int verdict = -1;
    for (char *line = text, *next; *line; line = next) {
        next = strchr(line, '\n');
        next = next ? (*next = 0, next + 1) : line + strlen(line);
        char *sp = strrchr(line, ' ');
        if (sp && (size_t)(sp - line) == strlen(key) && !strncmp(line, key, strlen(key)))
            verdict = !strcmp(sp + 1, "ok");
    }
    return verdict;
}

enum accel accel_resolve(enum accel want, const char *kernel, const char **ret_note,
                         struct pv_err *err)
{
    static char note[256];
    *ret_note = NULL;
    if (want == ACCEL_TCG)
        return ACCEL_TCG;
    if (!kvm_opens()) {
        if (want == ACCEL_KVM) {
            pv_err_set(err, ENODEV,
                       "--accel kvm: /dev/kvm cannot be opened (%s); load kvm-intel or kvm-amd "
                       "and join the kvm group, or use --accel tcg",
                       strerror(errno));
            return ACCEL_AUTO;
        }
        snprintf(note, sizeof(note), "/dev/kvm is not usable (%s): using TCG software emulation",
                 strerror(errno));
        *ret_note = note;
        return ACCEL_TCG;
    }
    if (want == ACCEL_KVM || !kernel)
        return want == ACCEL_KVM ? ACCEL_KVM : ACCEL_TCG;

    struct utsname u;
    uname(&u);
    const char *qv = qemu_version();
    _cleanup_free_ char *root = kernel_cache_root();
    _cleanup_free_ char *path = xasprintf("%s/kvm-probe", root);
    _cleanup_free_ char *key = xasprintf("%s qemu-%s", u.release, qv ? qv : "?");
    struct buf cache = BUF_INIT;
    int verdict = -1;
    if (read_file(path, 1 << 16, &cache) == 0 && cache.data)
        verdict = accel_cache_verdict(cache.data, key);
    buf_release(&cache);
    if (verdict < 0) {
        verdict = probe_kvm(kernel);
        mkdir_p(root, 0755);
        FILE *f = fopen(path, "ae");
        if (f) {
            fprintf(f, "%s %s\n", key, verdict ? "ok" : "hangs");
            fclose(f);
        }
    }
    if (verdict)
        return ACCEL_KVM;
    snprintf(note, sizeof(note),
             "/dev/kvm opens, but a probe boot under KVM printed nothing (QEMU failed or the "
             "guest hung; verdict cached in %s): using TCG",
             path);
    *ret_note = note;
    return ACCEL_TCG;
}

enum transport transport_resolve(enum transport want, enum accel accel, const char **ret_note)
{
    *ret_note = NULL;
    if (want != TRANSPORT_AUTO)
        return want;
    /* vhost-vsock needs KVM; virtio-serial works everywhere. */
    if (accel == ACCEL_KVM && access("/dev/vhost-vsock", R_OK | W_OK) == 0)
        return TRANSPORT_VSOCK;
    return TRANSPORT_VIRTIO_SERIAL;
}
