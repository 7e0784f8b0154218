/* Kernel modules the host put in the overlay (src/host/boot.c): a list file
 * names their paths, one a line, dependencies first. The shim loads
 * /.provium/modules and /.provium/modules.late at boot (main.c); PV_NET_CONFIG
 * loads /.provium/modules.net on its first use (net.c). */
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>

#include "agent.h"

#define MODULE_INIT_COMPRESSED_FILE 4 /* linux/module.h, 5.17 and later */

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
        if (!*line)
            continue;
        int fd = open(line, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            buf_addf(why, "module %s: %s\n", line, strerror(errno));
            continue;
        }
        int flags = 0;
        size_t l = strlen(line);
        if (l > 3 && strcmp(line + l - 3, ".ko"))
            flags |= MODULE_INIT_COMPRESSED_FILE;
        if (syscall(SYS_finit_module, fd, "", flags) < 0 && errno != EEXIST)
            buf_addf(why, "load %s: %s\n", line, strerror(errno));
        close(fd);
    }
    buf_release(&list);
    return 0;
}
