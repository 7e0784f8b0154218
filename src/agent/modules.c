/* Kernel modules the host put in the overlay (src/host/boot.c): a list file
 * names their paths, one a line, dependencies first. The shim loads
 * /.provium/modules and /.provium/modules.late at boot (main.c); PV_NET_CONFIG
 * loads /.provium/modules.net on its first use (net.c). */
#include <fcntl.h>
#include <stdio.h>
#include <sys/klog.h>
#include <sys/syscall.h>

#include "agent.h"

#define MODULE_INIT_COMPRESSED_FILE 4 /* linux/module.h, 5.17 and later */

/* The kernel's last words about module name (the file's name without
 * .ko...): "virtio_console: version magic '6.1.0-56 SMP' should be ...".
 * Empty when its log has none. */
static void kernel_words(const char *path, char *out, size_t outlen)
{
    char name[64];
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    snprintf(name, sizeof(name), "%.*s: ", (int)strcspn(base, "."), base);
    /* the kernel logs module names with underscores */
    for (char *c = name; *c; c++)
        if (*c == '-')
            *c = '_';
    out[0] = 0;
    static char log[1 << 16];
    int n = klogctl(3 /* SYSLOG_ACTION_READ_ALL */, log, (int)sizeof(log) - 1);
    if (n <= 0)
        return;
    log[n] = 0;
    const char *last = NULL;
    for (const char *p = log; (p = strstr(p, name)); p++)
        last = p;
    if (last)
        snprintf(out, outlen, "%.*s", (int)strcspn(last, "\n"), last);
}

int modules_load(const char *listfile, struct buf *why)
{
    struct buf list = BUF_INIT;
    int r = read_file(listfile, 1 << 20, &list);
    if (r < 0) {
        buf_release(&list);
        return r;
    }
    for (char *line = list.data, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        /* "?path": one the boot does without (src/host/boot.c) */
        bool optional = *line == '?';
        line += optional;
        if (!*line)
            continue;
        const char *fatal = optional ? "" : MODULES_FATAL;
        int fd = open(line, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            buf_addf(why, "%smodule %s: %s\n", fatal, line, strerror(errno));
            continue;
        }
        int flags = 0;
        size_t l = strlen(line);
        if (l > 3 && strcmp(line + l - 3, ".ko"))
            flags |= MODULE_INIT_COMPRESSED_FILE;
        if (syscall(SYS_finit_module, fd, "", flags) < 0 && errno != EEXIST) {
            int e = errno;
            char words[300];
            kernel_words(line, words, sizeof(words));
            buf_addf(why, "%scannot load module %s: %s%s%s\n", fatal, line, strerror(e),
                     *words ? "; the kernel says: " : "", words);
        }
        close(fd);
    }
    buf_release(&list);
    return 0;
}
