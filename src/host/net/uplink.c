#include "uplink.h"

#include <stdio.h>
#include <sys/stat.h>

#include "nic.h"
#include "qemu.h"
#include "switch.h"
#include "vm.h"

int uplink_start(struct uplink *u, int bridge, const char *name, unsigned num, struct pv_err *err)
{
    static unsigned seq;
    if (u->pid > 0)
        return 0;
    u->dir = xasprintf("%s/uplink%u-%d", vm_globals.rundir, seq++, (int)getpid());
    if (mkdir(u->dir, 0700) < 0 && errno != EEXIST) {
        int e = errno;
        pv_err_set(err, e, "bridge `%s`: uplink: %s: %s", name, u->dir, strerror(e));
        uplink_stop(u);
        return -e;
    }
    int fd = -1;
    int r = u->port = switch_port_add(bridge, "uplink", &fd, err);
    if (r < 0) {
        uplink_stop(u);
        return pv_err_wrap(err, "bridge `%s`: uplink", name);
    }
    if ((fd = nic_inheritable_fd(fd)) < 0) {
        r = pv_err_set(err, errno, "bridge `%s`: uplink: %s", name, strerror(errno));
        uplink_stop(u);
        return r;
    }
    char user[160], dgram[64];
    snprintf(
        user, sizeof(user),
        "user,id=u,net=10.66.%u.0/24,host=10.66.%u.254,dns=10.66.%u.253,dhcpstart=10.66.%u.251",
        num, num, num, num);
    snprintf(dgram, sizeof(dgram), "dgram,id=d,local.type=fd,local.str=%d", fd);
    /* the two netdevs joined by QEMU's hub; no machine, no guest */
    /* -name: its run directory, as every QEMU of the run names it in its argv
     * (what `pgrep -f` finds); QEMU reads ",," as a comma */
    struct buf qname = BUF_INIT;
    for (const char *c = u->dir; *c; c++) {
        buf_add(&qname, c, 1);
        if (*c == ',')
            buf_add(&qname, ",", 1);
    }
    buf_add(&qname, "", 1);
    const char *argv[] = {"qemu-system-x86_64",
                          "-name",
                          qname.data,
                          "-M",
                          "none",
                          "-nodefaults",
                          "-display",
                          "none",
                          "-netdev",
                          user,
                          "-netdev",
                          dgram,
                          "-netdev",
                          "hubport,id=h0,hubid=0,netdev=u",
                          "-netdev",
                          "hubport,id=h1,hubid=0,netdev=d",
                          NULL};
    r = qemu_start(argv, u->dir, &fd, 1, &u->pid, &u->pidfd, err);
    close(fd);
    buf_release(&qname);
    if (r < 0) {
        uplink_stop(u);
        return pv_err_wrap(err, "bridge `%s`: uplink", name);
    }
    vm_track(u->pid);
    return 0;
}

void uplink_stop(struct uplink *u)
{
    if (u->pid > 0)
        vm_reap(u->pid);
    u->pid = 0;
    if (u->pidfd >= 0)
        close(u->pidfd);
    u->pidfd = -1;
    if (u->port >= 0)
        switch_port_del(u->port);
    u->port = -1;
    if (u->dir)
        rm_rf(u->dir);
    free(u->dir);
    u->dir = NULL;
}
