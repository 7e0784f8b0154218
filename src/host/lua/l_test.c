/* Primitives for provium's own tests and benchmarks, never for test
 * authors (docs/architecture.md): a misbehaving agent on command, raw QMP, a
 * cable between two VMs. They sit in _provium_c beside the others. */
#include <stdio.h>
#include <sys/socket.h>

#include "l_provium.h"
#include "guest.h"
#include "vm.h"
#include "vm_priv.h"

/* _provium_c.test_misbehave(vm, mode, timeout_s, amount?, ms?): tests only
 * (tests/vm/hostile.test.lua); the VM must be booted with
 * provium.test_hostile=1. mode: a name of enum pv_misbehave. */
static int l_test_misbehave(lua_State *L)
{
    static const char *const modes[] = {
        "garbage",       "wrong_id",      "huge_len", "mid_frame", "flood_while_sending",
        "flood_console", "die_mid_reply", NULL};
    struct target t = l_checktarget(L, 1);
    uint32_t mode = (uint32_t)luaL_checkoption(L, 2, NULL, modes) + PV_MB_GARBAGE;
    double timeout = luaL_checknumber(L, 3);
    lua_Integer amount = luaL_optinteger(L, 4, 0), ms = luaL_optinteger(L, 5, 0);
    if (!(timeout > 0) || amount < 0 || ms < 0 || ms > UINT32_MAX)
        return luaL_error(L, "test_misbehave: timeout must be > 0, amount and ms >= 0");
    struct pv_err err = {0};
    if (guest_test_misbehave(&t, mode, (uint64_t)amount, (uint32_t)ms, timeout, &err) < 0)
        return l_raise_guest(L, &t, "test_misbehave", NULL, &err);
    return 0;
}

/* _provium_c.qmp(vm, json) -> the command's "return" as JSON text. Tests only
 * (docs/architecture.md): a raw QMP command, {"execute": ..., "arguments": ...}, to the
 * QEMU of a booted VM, behind provium's back. */
static int l_qmp(lua_State *L)
{
    struct vm *vm = l_tovm(L, 1);
    const char *text = luaL_checkstring(L, 2);
    if (vm->state != VM_BOOTED)
        return luaL_error(L, "vm `%s`: qmp: the VM is %s, not booted", vm->name,
                          vm_state_name(vm->state));
    json_error_t jerr;
    json_t *msg = json_loads(text, 0, &jerr);
    const char *cmd = msg ? json_string_value(json_object_get(msg, "execute")) : NULL;
    json_t *args = msg ? json_object_get(msg, "arguments") : NULL;
    if (!cmd || (args && !json_is_object(args))) {
        json_decref(msg);
        return luaL_argerror(L, 2,
                             "must be a JSON object with \"execute\" and optional "
                             "\"arguments\" (an object)");
    }
    json_t *ret = NULL;
    struct pv_err err = {0};
    int64_t deadline = now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale);
    int r = qmp_exec(&vm->qmp, cmd, json_incref(args), deadline, &ret, &err);
    json_decref(msg);
    char *out = r == 0 ? json_dumps(ret, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(ret);
    if (r < 0)
        return luaL_error(L, "vm `%s`: qmp: %s", vm->name, err.msg);
    lua_pushstring(L, out ? out : "null");
    free(out);
    return 1;
}

/* Plug into vm a virtio-net in PCI slot `addr` whose backend is `netdev`. */
static int plug_cable(struct vm *vm, json_t *netdev, const char *addr, const char *mac,
                      struct pv_err *err)
{
    char id[32]; /* vm_qmp takes netdev */
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(netdev, "id")));
    int r = vm_qmp(vm, "netdev_add", netdev, err);
    if (r == 0)
        r = vm_qmp(vm, "device_add",
                   json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "driver", "virtio-net-pci", "netdev",
                             id, "id", id, "bus", QEMU_HOTPLUG_BUS, "addr", addr, "mac", mac),
                   err);
    return r;
}

/* _provium_c.direct_link(vm_a, mac_a, vm_b, mac_b, "dgram"|"stream"): a NIC
 * in each running VM, the two joined with nothing between: what
 * bench/network measures the switch, and the two transports, against.
 * dgram: one socketpair, an end to each QEMU (getfd), as the switch's
 * ports; stream: QEMU's 4-byte length before each frame, a listens on a
 * Unix socket in the run directory and b connects. Once per kind and VM;
 * not in its snapshots. */
static int l_direct_link(lua_State *L)
{
    struct vm *a = l_tovm(L, 1), *b = l_tovm(L, 3);
    const char *mac_a = luaL_checkstring(L, 2), *mac_b = luaL_checkstring(L, 4);
    bool stream = luaL_checkoption(L, 5, "dgram", (const char *const[]){"dgram", "stream", NULL});
    if (a->state != VM_BOOTED || b->state != VM_BOOTED)
        return luaL_error(L, "direct_link: both VMs must be booted");
    struct pv_err err = {0};
    int r;
    if (stream) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/cable-%d.sock", vm_globals.rundir, (int)getpid());
        r = plug_cable(a,
                       json_pack("{s:s, s:s, s:b, s:{s:s, s:s}}", "type", "stream", "id",
                                 "cable-stream", "server", 1, "addr", "type", "unix", "path", path),
                       "0xe", mac_a, &err);
        if (r == 0)
            r = plug_cable(b,
                           json_pack("{s:s, s:s, s:b, s:{s:s, s:s}}", "type", "stream", "id",
                                     "cable-stream", "server", 0, "addr", "type", "unix", "path",
                                     path),
                           "0xe", mac_b, &err);
    } else {
        int sp[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp) < 0)
            return luaL_error(L, "direct_link: socketpair: %s", strerror(errno));
        struct vm *v[2] = {a, b};
        const char *mac[2] = {mac_a, mac_b};
        r = 0;
        for (int i = 0; i < 2 && r == 0; i++) {
            int64_t d = now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale);
            r = qmp_exec_fd(&v[i]->qmp, "getfd", json_pack("{s:s}", "fdname", "cable-dgram"), sp[i],
                            d, NULL, &err);
            if (r == 0)
                r = plug_cable(v[i],
                               json_pack("{s:s, s:s, s:{s:s, s:s}}", "type", "dgram", "id",
                                         "cable-dgram", "local", "type", "fd", "str",
                                         "cable-dgram"),
                               "0xf", mac[i], &err);
        }
        close(sp[0]);
        close(sp[1]);
    }
    if (r < 0)
        return l_raise(L, &err);
    return 0;
}

void l_open_test_prims(lua_State *L)
{
    static const luaL_Reg prims[] = {
        {"test_misbehave", l_test_misbehave},
        {"qmp", l_qmp},
        {"direct_link", l_direct_link},
        {NULL, NULL},
    };
    luaL_setfuncs(L, prims, 0);
}
