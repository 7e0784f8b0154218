/* Bridges and NICs: the primitives under _provium_c.net, over the switch
 * (net/switch.h) and a VM's NICs (net/nic.h). The Bridge and Nic types,
 * membership, addresses and the rules' bookkeeping are lua/net.lua's. */
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>

#include "l_provium.h"
#include "guest.h"
#include "net/nic.h"
#include "net/switch.h"
#include "net/uplink.h"

#define PV_BRIDGE_MT "provium.switch_bridge"
#define PV_CAPTURE_MT "provium.capture_conn"
#define PV_UPLINK_MT "provium.uplink"

struct l_bridge {
    int handle; /* -1 once closed */
};

static struct l_bridge *checkbridge(lua_State *L, int i)
{
    struct l_bridge *b = luaL_checkudata(L, i, PV_BRIDGE_MT);
    if (b->handle < 0)
        luaL_error(L, "bridge closed");
    return b;
}

static int bridge_close(lua_State *L)
{
    struct l_bridge *b = luaL_checkudata(L, 1, PV_BRIDGE_MT);
    if (b->handle >= 0)
        switch_bridge_del(b->handle);
    b->handle = -1;
    return 0;
}

/* net.bridge(name) -> the switch's bridge */
static int l_bridge_new(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    struct l_bridge *b = lua_newuserdatauv(L, sizeof(*b), 0);
    b->handle = -1;
    luaL_setmetatable(L, PV_BRIDGE_MT);
    struct pv_err err = {0};
    int h = switch_bridge_add(name, &err);
    if (h < 0)
        return l_raise(L, &err);
    b->handle = h;
    return 1;
}

/* The MAC at i, "52:54:00:aa:bb:cc" (either case): six bytes of a unicast address. */
static void check_mac(lua_State *L, int i, uint8_t mac[6])
{
    const char *s = luaL_checkstring(L, i);
    unsigned v[6];
    int end = 0;
    if (strlen(s) != 17 ||
        sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%n", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &end) !=
            6 ||
        end != 17 || strspn(s, "0123456789abcdefABCDEF:") != 17) {
        luaL_argerror(
            L, i,
            lua_pushfstring(L, "MAC must be six hex bytes like 52:54:00:12:34:56, got \"%s\"", s));
    }
    for (int k = 0; k < 6; k++)
        mac[k] = (uint8_t)v[k];
    if (mac[0] & 1)
        luaL_argerror(L, i, lua_pushfstring(L, "MAC %s is a multicast address, not a NIC's", s));
}

/* The dotted IPv4 address at i, in network order; what and example name it
 * in the error. */
static uint32_t check_ipv4(lua_State *L, int i, const char *what, const char *example)
{
    const char *ip = luaL_checkstring(L, i);
    struct in_addr in;
    if (inet_pton(AF_INET, ip, &in) != 1)
        luaL_argerror(L, i,
                      lua_pushfstring(L, "%s must be like %s, got \"%s\"", what, example, ip));
    return in.s_addr;
}

/* net.config(vm, mac, ipv4|nil, prefix|nil, up, wait_seconds) -> ifname: the
 * guest's NIC with that MAC gets the address ("10.99.1.2", prefix 0..32; nil: none) and its
 * link up or down, once it appears (docs/architecture.md, "Network interfaces") */
static int l_net_config(lua_State *L)
{
    struct target t = {l_tovm(L, 1), 0};
    struct guest_net_config c = {0};
    check_mac(L, 2, c.mac);
    if (!lua_isnoneornil(L, 3)) {
        c.ipv4 = check_ipv4(L, 3, "IPv4 address", "10.99.1.2");
        if (c.ipv4 == 0)
            luaL_argerror(L, 3, "0.0.0.0 is no address (pass nil for none)");
        lua_Integer prefix = luaL_checkinteger(L, 4);
        luaL_argcheck(L, prefix >= 0 && prefix <= 32, 4, "prefix must be 0..32");
        c.prefix = (uint32_t)prefix;
    } else if (!lua_isnoneornil(L, 4)) {
        luaL_argerror(L, 4, "a prefix without an address");
    }
    luaL_checktype(L, 5, LUA_TBOOLEAN);
    c.up = lua_toboolean(L, 5);
    double wait = luaL_checknumber(L, 6);
    luaL_argcheck(L, wait >= 0 && wait <= 3600, 6, "wait must be 0..3600 seconds");
    c.wait_ms = (uint32_t)(wait * 1000.0 + 0.5);
    char ifname[GUEST_IFNAME_MAX];
    struct pv_err err = {0};
    if (guest_net_config(&t, &c, ifname, &err) < 0)
        return l_raise_guest(L, &t, "net_config", NULL, &err);
    lua_pushstring(L, ifname);
    return 1;
}

/* net.route(vm, dst, prefix, gateway, delete?): the guest's IPv4 route to
 * dst/prefix ("10.99.2.0", 24; "0.0.0.0", 0: the default route) goes through
 * gateway, replacing the one it had; with delete true it is removed
 * (docs/architecture.md, "Network interfaces") */
static int l_net_route(lua_State *L)
{
    struct target t = {l_tovm(L, 1), 0};
    struct guest_net_route rt = {0};
    rt.dst = check_ipv4(L, 2, "destination", "10.99.2.0");
    lua_Integer prefix = luaL_checkinteger(L, 3);
    luaL_argcheck(L, prefix >= 0 && prefix <= 32, 3, "prefix must be 0..32");
    rt.prefix = (uint32_t)prefix;
    uint32_t net = rt.prefix ? rt.dst & htonl(~0u << (32 - rt.prefix)) : 0;
    if (net != rt.dst) {
        char text[INET_ADDRSTRLEN];
        inet_ntop(AF_INET, &net, text, sizeof(text));
        luaL_argerror(L, 2,
                      lua_pushfstring(L, "%s has bits set past the prefix /%d (the network is %s)",
                                      lua_tostring(L, 2), (int)prefix, text));
    }
    rt.gateway = check_ipv4(L, 4, "gateway", "10.99.1.254");
    if (rt.gateway == 0)
        luaL_argerror(L, 4, "0.0.0.0 is no gateway");
    if (!lua_isnoneornil(L, 5))
        luaL_checktype(L, 5, LUA_TBOOLEAN);
    rt.del = lua_toboolean(L, 5);
    struct pv_err err = {0};
    if (guest_net_route(&t, &rt, &err) < 0)
        return l_raise_guest(L, &t, "net_route", NULL, &err);
    return 0;
}

/* net.attach(vm, bridge, name, mac): a NIC for vm on the bridge (plugged in
 * at once if vm runs) */
static int l_attach(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    struct l_bridge *b = checkbridge(L, 2);
    const char *name = luaL_checkstring(L, 3);
    uint8_t mac[6];
    check_mac(L, 4, mac);
    struct pv_err err = {0};
    if (nic_add(vm, b->handle, name, mac, &err) < 0)
        return l_raise(L, &err);
    return 0;
}

/* net.snapshot_nics(dir) -> {{bridge=, mac=}, ...}: the NICs a snapshot's
 * machine has */
static int l_snapshot_nics(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    json_t *h = NULL;
    struct pv_err err = {0};
    if (vm_snapshot_check(dir, false, &h, &err) < 0)
        return luaL_error(L, "%s", err.msg);
    json_t *nics = json_object_get(h, "nics");
    lua_createtable(L, (int)json_array_size(nics), 0);
    for (size_t i = 0; i < json_array_size(nics); i++) {
        json_t *n = json_array_get(nics, i);
        lua_createtable(L, 0, 2);
        lua_pushstring(L, json_string_value(json_object_get(n, "bridge")) ?: "");
        lua_setfield(L, -2, "bridge");
        lua_pushstring(L, json_string_value(json_object_get(n, "mac")) ?: "");
        lua_setfield(L, -2, "mac");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    json_decref(h);
    return 1;
}

/* net.set_nics(vm, {{bridge, name, mac}, ...}): a stopped VM's NICs, all of them */
static int l_set_nics(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    size_t n = l_checkcount(L, 2, VM_MAX_NICS, "NICs");
    struct vm_nic nics[VM_MAX_NICS];
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_rawgeti(L, -1, 1);
        struct l_bridge *b = checkbridge(L, lua_gettop(L));
        lua_rawgeti(L, -2, 2);
        lua_rawgeti(L, -3, 3);
        nics[i] = (struct vm_nic){.bridge = b->handle};
        snprintf(nics[i].bridge_name, sizeof(nics[i].bridge_name), "%s", luaL_checkstring(L, -2));
        check_mac(L, lua_gettop(L), nics[i].mac);
        lua_pop(L, 4);
    }
    struct pv_err err = {0};
    if (nic_set(vm, nics, n, &err) < 0)
        return l_raise(L, &err);
    return 0;
}

/* The index of vm's NIC on the bridge at i+1, raising if it has none. */
static int checknic(lua_State *L, struct vm *vm, int i)
{
    int n = nic_find(vm, checkbridge(L, i)->handle);
    if (n < 0)
        luaL_error(L, "vm `%s` has no NIC on this bridge", vm->name);
    return n;
}

/* net.port(vm, bridge) -> the switch port of vm's NIC while QEMU runs, or nil */
static int l_port(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    int port = nic_port(vm, checknic(L, vm, 2));
    if (port < 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, port);
    return 1;
}

/* net.link(vm, bridge, up): what the guest sees of the NIC's link */
static int l_link(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    int n = checknic(L, vm, 2);
    struct pv_err err = {0};
    if (nic_link(vm, n, lua_toboolean(L, 3), &err) < 0)
        return l_raise(L, &err);
    return 0;
}

static int checkport(lua_State *L, int i)
{
    lua_Integer p = luaL_checkinteger(L, i);
    luaL_argcheck(L, p >= 0 && p <= INT32_MAX, i, "not a port");
    return (int)p;
}

/* A switch call's result: nothing, or a raise naming what. */
static int check_sw(lua_State *L, int r, const char *what)
{
    if (r < 0)
        return luaL_error(L, "%s: %s", what, strerror(-r));
    return 0;
}

/* net.flags(port, flags) */
static int l_flags(lua_State *L)
{
    int port = checkport(L, 1);
    return check_sw(L, switch_port_flags(port, (unsigned)luaL_checkinteger(L, 2)), "switch port");
}

/* net.block(from_port, to_port, blocked) */
static int l_block(lua_State *L)
{
    int from = checkport(L, 1), to = checkport(L, 2);
    return check_sw(L, switch_block(from, to, lua_toboolean(L, 3)), "switch block");
}

/* net.impair(bridge, from_port|nil, to_port|nil, latency_s, loss (0..1), bps) */
static int l_impair(lua_State *L)
{
    struct l_bridge *b = checkbridge(L, 1);
    int from = lua_isnil(L, 2) ? -1 : checkport(L, 2);
    int to = lua_isnil(L, 3) ? -1 : checkport(L, 3);
    double lat = luaL_checknumber(L, 4), loss = luaL_checknumber(L, 5);
    lua_Integer bps = luaL_checkinteger(L, 6);
    luaL_argcheck(L, lat >= 0 && lat < 3600, 4, "latency out of range");
    luaL_argcheck(L, loss >= 0 && loss <= 1, 5, "loss out of range");
    luaL_argcheck(L, bps >= 0, 6, "bandwidth out of range");
    struct switch_impair im = {(int64_t)(lat * 1e9), (uint32_t)(loss * 1e6 + 0.5), (uint64_t)bps};
    return check_sw(L, switch_impair(b->handle, from, to, &im), "switch impairment");
}

/* net.reset(bridge): every block and impairment lifted */
static int l_reset(lua_State *L)
{
    return check_sw(L, switch_reset(checkbridge(L, 1)->handle), "switch reset");
}

/* net.counters(port) -> {rx_bytes=, tx_bytes=, rx_packets=, tx_packets=, dropped=, errors=} */
static int l_counters(lua_State *L)
{
    struct switch_counters c = {0};
    check_sw(L, switch_counters(checkport(L, 1), &c), "switch counters");
    lua_createtable(L, 0, 6);
    const struct {
        const char *k;
        uint64_t v;
    } f[] = {{"rx_bytes", c.rx_bytes},     {"tx_bytes", c.tx_bytes}, {"rx_packets", c.rx_packets},
             {"tx_packets", c.tx_packets}, {"dropped", c.dropped},   {"errors", c.errors}};
    for (size_t i = 0; i < ARRAY_SIZE(f); i++) {
        lua_pushinteger(L, (lua_Integer)f[i].v);
        lua_setfield(L, -2, f[i].k);
    }
    return 1;
}

/* net.seed(n): the seed of every loss decision of this file */
static int l_seed(lua_State *L)
{
    switch_seed((uint64_t)luaL_checkinteger(L, 1));
    return 0;
}

struct capture {
    int fd;
};

static int capture_close(lua_State *L)
{
    struct capture *c = luaL_checkudata(L, 1, PV_CAPTURE_MT);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    return 0;
}

/* net.capture(bridge, port|nil) -> conn: the switch's pcap stream */
static int l_capture(lua_State *L)
{
    struct l_bridge *b = checkbridge(L, 1);
    int port = lua_isnoneornil(L, 2) ? -1 : checkport(L, 2);
    struct capture *c = lua_newuserdatauv(L, sizeof(*c), 0);
    c->fd = -1;
    luaL_setmetatable(L, PV_CAPTURE_MT);
    struct pv_err err = {0};
    int fd = switch_capture(b->handle, port, &err);
    if (fd < 0)
        return l_raise(L, &err);
    c->fd = fd;
    return 1;
}

/* net.capture_recv(conn, timeout_s) -> bytes | nil (nothing yet) | false (ended) */
static int l_capture_recv(lua_State *L)
{
    struct capture *c = luaL_checkudata(L, 1, PV_CAPTURE_MT);
    if (c->fd < 0)
        return luaL_error(L, "capture closed");
    struct pollfd p = {c->fd, POLLIN, 0};
    int n = poll(&p, 1, vm_wait_ms(luaL_checknumber(L, 2)));
    char buf[65536];
    ssize_t r = n > 0 ? read(c->fd, buf, sizeof(buf)) : -1;
    if (r > 0)
        lua_pushlstring(L, buf, (size_t)r);
    else if (r == 0)
        lua_pushboolean(L, 0);
    else
        lua_pushnil(L);
    return 1;
}

/* net.capture_lost(conn) -> records the switch dropped because nobody read */
static int l_capture_lost(lua_State *L)
{
    struct capture *c = luaL_checkudata(L, 1, PV_CAPTURE_MT);
    lua_pushinteger(L, c->fd < 0 ? 0 : (lua_Integer)switch_capture_lost(c->fd));
    return 1;
}

static int uplink_close(lua_State *L)
{
    uplink_stop(luaL_checkudata(L, 1, PV_UPLINK_MT));
    return 0;
}

/* net.uplink(bridge, name, num) -> the bridge's uplink, running */
static int l_uplink(lua_State *L)
{
    struct l_bridge *b = checkbridge(L, 1);
    const char *name = luaL_checkstring(L, 2);
    lua_Integer num = luaL_checkinteger(L, 3);
    luaL_argcheck(L, num >= 1 && num <= 250, 3, "bridge number out of range");
    struct uplink *u = lua_newuserdatauv(L, sizeof(*u), 0);
    *u = (struct uplink)UPLINK_INIT;
    luaL_setmetatable(L, PV_UPLINK_MT);
    struct pv_err err = {0};
    if (uplink_start(u, b->handle, name, (unsigned)num, &err) < 0)
        return l_raise(L, &err);
    return 1;
}

int luaopen_provium_net(lua_State *L)
{
    static const luaL_Reg closers[] = {{"__gc", bridge_close}, {"__close", bridge_close}, {0}};
    luaL_newmetatable(L, PV_BRIDGE_MT);
    luaL_setfuncs(L, closers, 0);
    lua_pop(L, 1);
    static const luaL_Reg cclosers[] = {{"__gc", capture_close}, {"__close", capture_close}, {0}};
    luaL_newmetatable(L, PV_CAPTURE_MT);
    luaL_setfuncs(L, cclosers, 0);
    lua_pop(L, 1);
    static const luaL_Reg uclosers[] = {{"__gc", uplink_close}, {"__close", uplink_close}, {0}};
    luaL_newmetatable(L, PV_UPLINK_MT);
    luaL_setfuncs(L, uclosers, 0);
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        {"bridge", l_bridge_new},
        {"uplink", l_uplink},
        {"uplink_close", uplink_close},
        {"close", bridge_close},
        {"attach", l_attach},
        {"port", l_port},
        {"link", l_link},
        {"flags", l_flags},
        {"block", l_block},
        {"impair", l_impair},
        {"reset", l_reset},
        {"counters", l_counters},
        {"seed", l_seed},
        {"capture", l_capture},
        {"capture_recv", l_capture_recv},
        {"capture_lost", l_capture_lost},
        {"capture_close", capture_close},
        {"snapshot_nics", l_snapshot_nics},
        {"config", l_net_config},
        {"route", l_net_route},
        {"set_nics", l_set_nics},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    static const struct l_const flags[] = {
        {"DOWN", SWITCH_DOWN},
        {"ISOLATED", SWITCH_ISOLATED},
        {"MAX_NICS", VM_MAX_NICS},
    };
    l_set_consts(L, "port_flags", flags, ARRAY_SIZE(flags));
    return 1;
}
