/* A VM's logs: the consoles QEMU writes from power-on (serial.log,
 * hvc.log, opened by QEMU with O_APPEND) and the kernel log the agent
 * forwards (kmsg.log). A guest decides how much it prints, so each log is
 * bounded (docs/vms.md#logs): past VM_LOG_CAP its last VM_LOG_KEEP bytes are
 * copied to <log>.1 and the log starts over; the bytes before are counted,
 * not kept. Readers address a log by its logical offset (every byte it ever
 * had), so a scan goes on from where it stopped across a rotation. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "vm.h"
#include "vm_priv.h"

static const char *const log_names[VM_NLOGS] = {"serial.log", "hvc.log", "kmsg.log"};

/* The logs a boot writes (the three above and QEMU's own), and their
 * rotated tails. */
static const char vm_logs[] =
    "serial.log\0hvc.log\0qemu.log\0kmsg.log\0serial.log.1\0hvc.log.1\0kmsg.log.1\0";

void vm_console_socket(const struct vm *vm, char *out, size_t n)
{
    snprintf(out, n, "%s/%s", vm->dir, vm->hvc_primary ? "hvc.sock" : "serial.sock");
}

/* The primary console, or the serial port when nothing reached hvc0 (its
 * driver never loaded). */
static enum vm_log console_of(struct vm *vm)
{
    if (!vm->hvc_primary)
        return VM_LOG_SERIAL;
    _cleanup_free_ char *p = xasprintf("%s/hvc.log", vm->dir);
    struct stat st;
    bool empty = stat(p, &st) < 0 || (st.st_size == 0 && vm->log_dropped[VM_LOG_HVC] == 0);
    return empty ? VM_LOG_SERIAL : VM_LOG_HVC;
}

static char *log_path(const struct vm *vm, enum vm_log which, bool rotated)
{
    return xasprintf("%s/%s%s", vm->dir, log_names[which], rotated ? ".1" : "");
}

/* Up to max bytes of the file at path from offset off, appended to out. */
static int read_range(const char *path, uint64_t off, size_t max, struct buf *out)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    buf_reserve(out, max);
    ssize_t n = pread(fd, out->data + out->len, max, (off_t)off);
    if (n < 0)
        return -errno;
    out->len += (size_t)n;
    out->data[out->len] = 0;
    return 0;
}

void vm_logs_bound(struct vm *vm)
{
    if (!vm->dir)
        return;
    for (int i = 0; i < VM_NLOGS; i++) {
        _cleanup_free_ char *p = log_path(vm, i, false);
        struct stat st;
        if (stat(p, &st) < 0 || (uint64_t)st.st_size <= VM_LOG_CAP)
            continue;
        struct buf tail = BUF_INIT;
        uint64_t keep = MIN(VM_LOG_KEEP, (uint64_t)st.st_size);
        _cleanup_free_ char *old = log_path(vm, i, true);
        if (read_range(p, (uint64_t)st.st_size - keep, keep, &tail) == 0)
            write_file_atomic(old, tail.data, tail.len, 0600);
        buf_release(&tail);
        /* QEMU and the kmsg writer append: the next byte goes to offset 0.
         * What is written between the copy and this is lost, and counted. */
        if (truncate(p, 0) == 0)
            vm->log_dropped[i] += (uint64_t)st.st_size;
    }
}

int vm_log_read(struct vm *vm, enum vm_log which, uint64_t off, size_t max, struct buf *out,
                uint64_t *ret_next)
{
    *ret_next = off;
    if (!vm->dir)
        return -ENOENT;
    vm_logs_bound(vm);
    if (which == VM_LOG_CONSOLE)
        which = console_of(vm);
    uint64_t base = vm->log_dropped[which];
    if (off < base) /* rotated away: go on from what is left */
        off = base;
    _cleanup_free_ char *p = log_path(vm, which, false);
    size_t before = out->len;
    int r = read_range(p, off - base, max, out);
    if (r == -ENOENT)
        r = 0;
    *ret_next = off + (out->len - before);
    return r;
}

/* A whole log: its rotated tail, a marker for what was dropped, the rest. */
static int read_whole(struct vm *vm, enum vm_log which, struct buf *out)
{
    if (!vm->dir)
        return -ENOENT;
    vm_logs_bound(vm);
    if (vm->log_dropped[which]) {
        _cleanup_free_ char *old = log_path(vm, which, true);
        read_file(old, VM_LOG_KEEP, out);
        buf_addf(
            out, "\n[provium: %llu earlier bytes of %s dropped: the log keeps %llu MiB]\n",
            (unsigned long long)(vm->log_dropped[which] - MIN(vm->log_dropped[which], VM_LOG_KEEP)),
            log_names[which], (unsigned long long)((VM_LOG_CAP + VM_LOG_KEEP) >> 20));
    }
    _cleanup_free_ char *p = log_path(vm, which, false);
    struct buf cur = BUF_INIT;
    int r = read_file(p, VM_LOG_CAP * 2, &cur);
    buf_add(out, cur.data ? cur.data : "", cur.len);
    buf_release(&cur);
    return r == -ENOENT && out->len ? 0 : r;
}

int vm_console_log(struct vm *vm, struct buf *out)
{
    return vm->dir ? read_whole(vm, console_of(vm), out) : -ENOENT;
}

int vm_kernel_log(struct vm *vm, struct buf *out)
{
    return read_whole(vm, VM_LOG_KMSG, out);
}

/* The last bytes of the console: enough for the last lines a failure shows. */
#define TAIL_BYTES (256u << 10)

void vm_console_tail(struct vm *vm, int lines, struct buf *out)
{
    struct buf log = BUF_INIT;
    if (vm->dir) {
        enum vm_log which = console_of(vm);
        _cleanup_free_ char *p = log_path(vm, which, false);
        struct stat st;
        uint64_t size = stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
        if (size < TAIL_BYTES && vm->log_dropped[which]) {
            _cleanup_free_ char *old = log_path(vm, which, true);
            struct stat ost;
            if (stat(old, &ost) == 0 && (uint64_t)ost.st_size > TAIL_BYTES - size)
                read_range(old, (uint64_t)ost.st_size - (TAIL_BYTES - size), TAIL_BYTES - size,
                           &log);
        }
        read_range(p, size > TAIL_BYTES ? size - TAIL_BYTES : 0, TAIL_BYTES, &log);
    }
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

/* The last TAIL_BYTES of vm's console log. */
static void console_tail(struct vm *vm, struct buf *log)
{
    if (!vm->dir)
        return;
    _cleanup_free_ char *p = log_path(vm, console_of(vm), false);
    struct stat st;
    uint64_t size = stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
    read_range(p, size > TAIL_BYTES ? size - TAIL_BYTES : 0, TAIL_BYTES, log);
}

bool vm_console_says(struct vm *vm, const char *what)
{
    struct buf log = BUF_INIT;
    console_tail(vm, &log);
    /* memmem: a NUL the guest printed must not hide what follows it */
    bool found = log.len && memmem(log.data, log.len, what, strlen(what));
    buf_release(&log);
    return found;
}

char *vm_console_line(struct vm *vm, const char *marker)
{
    struct buf log = BUF_INIT;
    console_tail(vm, &log);
    const char *at = log.len ? memmem(log.data, log.len, marker, strlen(marker)) : NULL;
    char *line = NULL;
    if (at) {
        at += strlen(marker);
        size_t n = 0;
        while (at + n < log.data + log.len && at[n] != '\n' && at[n] != '\r' && n < 400)
            n++;
        line = xstrndup(at, n);
        /* the guest's bytes, printable before they reach a terminal */
        for (char *c = line; *c; c++)
            if ((unsigned char)*c < 0x20 || (unsigned char)*c == 0x7f)
                *c = '?';
    }
    buf_release(&log);
    return line;
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

void vm_on_kmsg(void *ctx, uint16_t type, const void *p, size_t n)
{
    struct vm *vm = ctx;
    (void)type;
    struct buf out = BUF_INIT;
    vm_kmsg_format(p, n, &out);
    if (out.len && vm->kmsg_fd >= 0)
        write_all(vm->kmsg_fd, out.data, out.len);
    buf_release(&out);
    vm->kmsg_written += n;
    if (vm->kmsg_written > VM_LOG_CAP / 16) { /* a flood: bound it now, not at the next op */
        vm->kmsg_written = 0;
        vm_logs_bound(vm);
    }
}

int vm_copy_logs(const char *from, const char *to, struct pv_err *err)
{
    for (const char *f = vm_logs; *f; f += strlen(f) + 1) {
        _cleanup_free_ char *src = xasprintf("%s/%s", from, f);
        _cleanup_free_ char *dst = xasprintf("%s/%s", to, f);
        struct buf log = BUF_INIT;
        int r = read_file(src, VM_LOG_CAP * 2, &log);
        if (r == 0)
            r = write_file_atomic(dst, log.data ? log.data : "", log.len, 0600);
        buf_release(&log);
        if (r < 0 && r != -ENOENT)
            return pv_err_set(err, -r, "%s: %s", dst, strerror(-r));
    }
    return 0;
}

void vm_drop_logs(struct vm *vm)
{
    for (const char *f = vm_logs; *f; f += strlen(f) + 1) {
        _cleanup_free_ char *p = xasprintf("%s/%s", vm->dir, f);
        unlink(p);
    }
    memset(vm->log_dropped, 0, sizeof(vm->log_dropped));
    vm->log_gen++;
}
