/* Network interfaces: PV_NET_CONFIG configures the NIC with a given MAC;
 * PV_NET_ROUTE adds, replaces or deletes an IPv4 route (at the end).
 *
 * request: bytes mac (6), u32 ipv4 (network order; 0: none), u32 prefix
 *          (0..32), u32 flags (PV_NET_UP: link up, else down), u32 wait_ms
 * reply:   str ifname
 *
 * The NIC is found by its hardware address, whatever the kernel named it.
 * A NIC hot-plugged a moment ago is probed asynchronously, and its driver
 * may not be loaded yet: when no interface has the MAC and virtio_net is
 * not in the kernel, the modules the host listed in /.provium/modules.net
 * load first (they are not loaded at boot, so that a VM without NICs boots
 * as fast as before); then the request waits in the agent's loop, which
 * goes on serving the others, checked every NET_POLL_MS until wait_ms,
 * then fails with ETIMEDOUT ("no network interface with MAC ... appeared
 * in N ms", with any module that failed to load).
 *
 * Found, the interface gets the IPv4 address and netmask (replacing the
 * address an earlier request set; ipv4 0 removes it), IPv6 enabled (its
 * link-local address comes from the kernel's autoconfiguration when the
 * link goes up), then IFF_UP set or cleared. `lo` goes up too. See
 * docs/architecture.md, "Network interfaces". */
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "agent.h"

#define NET_POLL_MS 5
#define NET_MODULES "/.provium/modules.net"

struct net_wait {
    struct net_wait *next;
    uint32_t id;
    struct net_config_req req;
    int64_t deadline_ms;
    int64_t next_ms; /* the next check */
    struct buf why;  /* modules that failed to load, one a line */
};

int net_config_decode(struct pv_rd *r, struct net_config_req *req, char *why, size_t whylen)
{
    size_t maclen;
    const void *mac = pv_get_bytes(r, &maclen);
    req->ipv4 = pv_get_u32(r);
    req->prefix = pv_get_u32(r);
    req->flags = pv_get_u32(r);
    req->wait_ms = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (maclen != sizeof(req->mac)) {
        snprintf(why, whylen, "the MAC is %zu bytes, not 6", maclen);
        return -EINVAL;
    }
    memcpy(req->mac, mac, maclen);
    if (req->prefix > 32) {
        snprintf(why, whylen, "prefix %u is over 32", req->prefix);
        return -EINVAL;
    }
    if (req->flags & ~(uint32_t)PV_NET_UP) {
        snprintf(why, whylen, "unknown flags %#x", req->flags & ~(uint32_t)PV_NET_UP);
        return -EINVAL;
    }
    return 0;
}

/* The netmask of a prefix (0..32), in network order. */
static uint32_t prefix_mask(uint32_t prefix)
{
    return prefix ? htonl(~0u << (32 - prefix)) : 0;
}

static void mac_str(const uint8_t mac[6], char out[18])
{
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
             mac[5]);
}

/* The Ethernet interface whose hardware address is mac, the one of lowest
 * index (a VLAN on it shares its MAC): 0, or -ENODEV. */
static int find_nic(int s, const uint8_t mac[6], char name[IF_NAMESIZE])
{
    struct if_nameindex *all = if_nameindex();
    if (!all)
        return -errno;
    int r = -ENODEV;
    unsigned best = 0;
    for (struct if_nameindex *i = all; i->if_index; i++) {
        struct ifreq ifr = {0};
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", i->if_name);
        if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0 || ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER ||
            memcmp(ifr.ifr_hwaddr.sa_data, mac, 6) || (best && i->if_index > best))
            continue;
        best = i->if_index;
        snprintf(name, IF_NAMESIZE, "%s", i->if_name);
        r = 0;
    }
    if_freenameindex(all);
    return r;
}

static int set_up(int s, const char *ifname, bool up)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return -errno;
    short want = (short)(up ? ifr.ifr_flags | IFF_UP : ifr.ifr_flags & ~IFF_UP);
    if (want == ifr.ifr_flags)
        return 0;
    ifr.ifr_flags = want;
    return ioctl(s, SIOCSIFFLAGS, &ifr) < 0 ? -errno : 0;
}

static int set_in_addr(int s, unsigned long req, const char *ifname, uint32_t addr)
{
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = addr};
    memcpy(&ifr.ifr_addr, &sin, sizeof(sin));
    return ioctl(s, req, &ifr) < 0 ? -errno : 0;
}

/* The interface's address: SIOCSIFADDR replaces the one it set before (the
 * address labelled with the interface's name; `ip addr add` ones stay), and
 * sets a classful netmask that SIOCSIFNETMASK then corrects (the broadcast
 * address follows it). Address 0 deletes it. */
static int set_ipv4(int s, const char *ifname, uint32_t addr, uint32_t prefix, char *why,
                    size_t whylen)
{
    char text[INET_ADDRSTRLEN] = "0.0.0.0";
    inet_ntop(AF_INET, &addr, text, sizeof(text));
    if (!addr) {
        struct ifreq ifr = {0};
        snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
        if (ioctl(s, SIOCGIFADDR, &ifr) < 0)
            return 0; /* none to remove */
    }
    int r = set_in_addr(s, SIOCSIFADDR, ifname, addr);
    if (r < 0) {
        snprintf(why, whylen, "%s: set address %s: %s", ifname, text, strerror(-r));
        return r;
    }
    if (addr && (r = set_in_addr(s, SIOCSIFNETMASK, ifname, prefix_mask(prefix))) < 0)
        snprintf(why, whylen, "%s: set netmask /%u on %s: %s", ifname, prefix, text, strerror(-r));
    return r;
}

/* IPv6 may have been disabled on it (sysctl); without IPv6 in the kernel
 * the file is absent, which is no error. */
static int enable_ipv6(const char *ifname, char *why, size_t whylen)
{
    char path[96];
    snprintf(path, sizeof(path), "/proc/sys/net/ipv6/conf/%s/disable_ipv6", ifname);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int r = write(fd, "0\n", 2) == 2 ? 0 : -errno;
    close(fd);
    if (r < 0)
        snprintf(why, whylen, "%s: %s", path, strerror(-r));
    return r;
}

/* Configure the found interface: 0, or -errno with why filled. */
static int configure(const char *ifname, const struct net_config_req *req, char *why, size_t whylen)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) {
        snprintf(why, whylen, "socket(AF_INET): %s", strerror(errno));
        return -errno;
    }
    int r = set_up(s, "lo", true);
    if (r < 0)
        snprintf(why, whylen, "lo: set up: %s", strerror(-r));
    if (r == 0)
        r = enable_ipv6(ifname, why, whylen);
    if (r == 0)
        r = set_ipv4(s, ifname, req->ipv4, req->prefix, why, whylen);
    if (r == 0 && (r = set_up(s, ifname, req->flags & PV_NET_UP)) < 0)
        snprintf(why, whylen, "%s: set link %s: %s", ifname, req->flags & PV_NET_UP ? "up" : "down",
                 strerror(-r));
    close(s);
    return r;
}

/* Configure and answer, when the NIC is there: true once answered. */
static bool try_answer(struct agent *a, uint32_t id, const struct net_config_req *req)
{
    char ifname[IF_NAMESIZE], why[256];
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int r = s < 0 ? -errno : find_nic(s, req->mac, ifname);
    if (s >= 0)
        close(s);
    if (r == -ENODEV)
        return false;
    if (r < 0) {
        agent_send_err(a, id, -r, "list the network interfaces: %s", strerror(-r));
        return true;
    }
    r = configure(ifname, req, why, sizeof(why));
    if (r < 0) {
        agent_send_err(a, id, -r, "%s", why);
        return true;
    }
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_str(&w, ifname);
    agent_send_ok(a, id, &b);
    buf_release(&b);
    return true;
}

static void wait_free(struct net_wait *n)
{
    buf_release(&n->why);
    free(n);
}

int agent_op_net_config(struct agent *a, uint32_t id, struct pv_rd *r)
{
    struct net_config_req req;
    char why[128];
    int e = net_config_decode(r, &req, why, sizeof(why));
    if (e == -EINVAL)
        agent_send_err(a, id, EINVAL, "%s", why);
    if (e < 0)
        return e == -EINVAL ? 0 : e;
    if (try_answer(a, id, &req))
        return 0;
    struct net_wait *n = xcalloc(1, sizeof(*n));
    n->id = id;
    n->req = req;
    n->deadline_ms = now_ms() + req.wait_ms;
    n->next_ms = now_ms() + NET_POLL_MS;
    struct stat st;
    if (stat("/sys/module/virtio_net", &st) < 0)
        modules_load(NET_MODULES, &n->why);
    n->next = a->net_waits;
    a->net_waits = n;
    return 0;
}

void net_deadline(struct agent *a, int64_t *deadline_ms)
{
    for (struct net_wait *n = a->net_waits; n; n = n->next) {
        int64_t next = MIN(n->next_ms, n->deadline_ms);
        if (!*deadline_ms || next < *deadline_ms)
            *deadline_ms = next;
    }
}

void net_checks(struct agent *a)
{
    int64_t now = now_ms();
    for (struct net_wait **p = &a->net_waits, *n; (n = *p);) {
        bool done = false;
        if (now >= n->next_ms || now >= n->deadline_ms) {
            done = try_answer(a, n->id, &n->req);
            n->next_ms = now + NET_POLL_MS;
        }
        if (!done && now >= n->deadline_ms) {
            char mac[18];
            mac_str(n->req.mac, mac);
            struct buf failed = BUF_INIT; /* the lines of why, after "; " each */
            for (char *line = n->why.data, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                    *next++ = 0;
                buf_addf(&failed, "; %s", line);
            }
            agent_send_err(a, n->id, ETIMEDOUT,
                           "no network interface with MAC %s appeared in %u ms%s", mac,
                           n->req.wait_ms, failed.len ? failed.data : "");
            buf_release(&failed);
            done = true;
        }
        if (done) {
            *p = n->next;
            wait_free(n);
        } else {
            p = &n->next;
        }
    }
}

void net_cancel(struct agent *a, uint32_t id)
{
    for (struct net_wait **p = &a->net_waits, *n; (n = *p);) {
        if (n->id == id) {
            *p = n->next;
            wait_free(n);
        } else {
            p = &n->next;
        }
    }
}

void net_forget_all(struct agent *a)
{
    while (a->net_waits) {
        struct net_wait *n = a->net_waits;
        a->net_waits = n->next;
        wait_free(n);
    }
}

/* ---- NetRoute ----
 *
 * request: u32 dst (network order), u32 prefix (0..32; 0.0.0.0/0 is the
 *          default route), u32 gateway (network order), u32 flags
 *          (PV_ROUTE_DELETE: delete, else add or replace)
 * reply:   nothing
 *
 * One rtnetlink request on the main table. Added, RTM_NEWROUTE with
 * NLM_F_CREATE | NLM_F_REPLACE: the route of that destination (and metric
 * 0, the only one these requests make) takes the new gateway in one step,
 * so calling it twice leaves one route, there is no moment without it, and
 * a refused gateway leaves the old route in place (deleting first, as the
 * SIOCADDRT ioctl would need, loses it). The kernel picks the interface
 * whose subnet holds the gateway: ENETUNREACH when none that is up has it.
 * Deleted, RTM_DELROUTE matches destination and gateway: ESRCH when no
 * such route exists. See docs/architecture.md, "Network interfaces". */

#define ROUTE_ACK_MS 2000 /* the kernel acks within the send; a bound all the same */

int net_route_decode(struct pv_rd *r, struct net_route_req *req, char *why, size_t whylen)
{
    req->dst = pv_get_u32(r);
    req->prefix = pv_get_u32(r);
    req->gateway = pv_get_u32(r);
    req->flags = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (req->prefix > 32) {
        snprintf(why, whylen, "prefix %u is over 32", req->prefix);
        return -EINVAL;
    }
    uint32_t net = req->dst & prefix_mask(req->prefix);
    if (req->dst != net) {
        char dst[INET_ADDRSTRLEN], netstr[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &req->dst, dst, sizeof(dst));
        inet_ntop(AF_INET, &net, netstr, sizeof(netstr));
        snprintf(why, whylen,
                 "destination %s/%u has bits set past the prefix (the network is %s/%u)", dst,
                 req->prefix, netstr, req->prefix);
        return -EINVAL;
    }
    if (!req->gateway) {
        snprintf(why, whylen, "the gateway is 0.0.0.0");
        return -EINVAL;
    }
    if (req->flags & ~(uint32_t)PV_ROUTE_DELETE) {
        snprintf(why, whylen, "unknown flags %#x", req->flags & ~(uint32_t)PV_ROUTE_DELETE);
        return -EINVAL;
    }
    return 0;
}

struct route_msg {
    struct nlmsghdr nh;
    struct rtmsg rt;
    char attrs[2 * RTA_SPACE(sizeof(uint32_t))];
};

static void route_attr(struct route_msg *m, unsigned short type, uint32_t value)
{
    struct rtattr *a = (struct rtattr *)((char *)m + NLMSG_ALIGN(m->nh.nlmsg_len));
    a->rta_type = type;
    a->rta_len = RTA_LENGTH(sizeof(value));
    memcpy(RTA_DATA(a), &value, sizeof(value));
    m->nh.nlmsg_len = NLMSG_ALIGN(m->nh.nlmsg_len) + RTA_SPACE(sizeof(value));
}

/* The kernel's answer to the request of sequence seq: 0 or -errno. */
static int route_ack(int s, uint32_t seq)
{
    union {
        struct nlmsghdr nh;
        char bytes[1024]; /* an error echoes the request (52 bytes) */
    } in;
    for (;;) {
        ssize_t n = recv(s, &in, sizeof(in), 0);
        if (n < 0)
            return errno == EAGAIN ? -ETIMEDOUT : -errno;
        for (struct nlmsghdr *h = &in.nh; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != seq || h->nlmsg_type != NLMSG_ERROR)
                continue;
            if (h->nlmsg_len < NLMSG_LENGTH(sizeof(struct nlmsgerr)))
                return -EPROTO;
            return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
        }
    }
}

/* Send the request and wait for its ack: 0 or -errno. */
static int route_change(const struct net_route_req *req)
{
    bool del = req->flags & PV_ROUTE_DELETE;
    struct route_msg m = {
        .nh.nlmsg_len = NLMSG_LENGTH(sizeof(struct rtmsg)),
        .nh.nlmsg_type = del ? RTM_DELROUTE : RTM_NEWROUTE,
        .nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | (del ? 0 : NLM_F_CREATE | NLM_F_REPLACE),
        .nh.nlmsg_seq = 1,
        .rt.rtm_family = AF_INET,
        .rt.rtm_dst_len = (unsigned char)req->prefix,
        .rt.rtm_table = RT_TABLE_MAIN,
        /* deleting, protocol and type 0 and scope "nowhere" match any */
        .rt.rtm_protocol = del ? 0 : RTPROT_BOOT,
        .rt.rtm_scope = del ? RT_SCOPE_NOWHERE : RT_SCOPE_UNIVERSE,
        .rt.rtm_type = del ? 0 : RTN_UNICAST,
    };
    if (req->prefix)
        route_attr(&m, RTA_DST, req->dst);
    route_attr(&m, RTA_GATEWAY, req->gateway);
    _cleanup_close_ int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (s < 0)
        return -errno;
    struct timeval tv = {.tv_sec = ROUTE_ACK_MS / 1000, .tv_usec = ROUTE_ACK_MS % 1000 * 1000};
    struct sockaddr_nl kernel = {.nl_family = AF_NETLINK};
    if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        sendto(s, &m, m.nh.nlmsg_len, 0, (struct sockaddr *)&kernel, sizeof(kernel)) < 0)
        return -errno;
    return route_ack(s, m.nh.nlmsg_seq);
}

int agent_op_net_route(struct agent *a, uint32_t id, struct pv_rd *r)
{
    struct net_route_req req;
    char why[128];
    int e = net_route_decode(r, &req, why, sizeof(why));
    if (e == -EINVAL)
        agent_send_err(a, id, EINVAL, "%s", why);
    if (e < 0)
        return e == -EINVAL ? 0 : e;
    /* "route 10.99.0.0/16" or "default route", as the messages name it */
    char what[32] = "default route", gw[INET_ADDRSTRLEN];
    if (req.prefix) {
        char dst[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &req.dst, dst, sizeof(dst));
        snprintf(what, sizeof(what), "route %s/%u", dst, req.prefix);
    }
    inet_ntop(AF_INET, &req.gateway, gw, sizeof(gw));
    bool del = req.flags & PV_ROUTE_DELETE;
    const char *op = del ? "delete" : "add";
    e = route_change(&req);
    if (e == -ESRCH && del)
        agent_send_err(a, id, ESRCH, "%s %s via %s: no such route", op, what, gw);
    else if (e == -ENETUNREACH)
        agent_send_err(a, id, ENETUNREACH,
                       "%s %s via %s: %s (no interface that is up has %s in its subnet)", op, what,
                       gw, strerror(-e), gw);
    else if (e < 0)
        agent_send_err(a, id, -e, "%s %s via %s: %s", op, what, gw, strerror(-e));
    else
        agent_send_ok(a, id, NULL);
    return 0;
}
