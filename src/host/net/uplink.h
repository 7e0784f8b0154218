/* A bridge's way out (docs/networks.md#the-uplink): QEMU's user networking
 * (slirp: NAT and a DNS relay inside an unprivileged process) in a QEMU of
 * its own that runs no guest, plugged into the bridge as one more port. No
 * host interface, no NAT rule, no root. */
#pragma once

#include <sys/types.h>

#include "util.h"

struct uplink {
    pid_t pid; /* 0: not running */
    int pidfd;
    int port; /* its port on the bridge */
    char *dir;
};
#define UPLINK_INIT                                                                                \
    {                                                                                              \
        .pidfd = -1, .port = -1                                                                    \
    }

/* The uplink of the bridge (its handle and name) whose addresses are
 * 10.66.<num>.0/24: the gateway is .254, the DNS relay .253. */
int uplink_start(struct uplink *u, int bridge, const char *name, unsigned num, struct pv_err *err);
/* Idempotent. */
void uplink_stop(struct uplink *u);
