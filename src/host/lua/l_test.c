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

/* Plug into vm a virtio-net in PCI slot 0xf whose frames go to fd. */
static int plug_cable(struct vm *vm, int fd, const char *mac, struct pv_err *err)
{
    int64_t d = now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale);
    int r = qmp_exec_fd(&vm->qmp, "getfd", json_pack("{s:s}", "fdname", "cable"), fd, d, NULL, err);
    if (r == 0)
        r = vm_qmp(vm, "netdev_add",
                   json_pack("{s:s, s:s, s:{s:s, s:s}}", "type", "dgram", "id", "cable", "local",
                             "type", "fd", "str", "cable"),
                   err);
    if (r == 0)
        r = vm_qmp(vm, "device_add",
                   json_pack("{s:s, s:s, s:s, s:s, s:s}", "driver", "virtio-net-pci", "netdev",
                             "cable", "id", "cable", "addr", "0xf", "mac", mac),
                   err);
    return r;
}

/* _provium_c.direct_link(vm_a, mac_a, vm_b, mac_b): a NIC in each running
 * VM, the two joined by one socketpair and nothing else: what bench/network
 * measures the switch against. Once per VM; not in its snapshots. */
static int l_direct_link(lua_State *L)
{
    struct vm *a = l_tovm(L, 1), *b = l_tovm(L, 3);
    const char *mac_a = luaL_checkstring(L, 2), *mac_b = luaL_checkstring(L, 4);
    if (a->state != VM_BOOTED || b->state != VM_BOOTED)
        return luaL_error(L, "direct_link: both VMs must be booted");
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sp) < 0)
        return luaL_error(L, "direct_link: socketpair: %s", strerror(errno));
    struct pv_err err = {0};
    int r = plug_cable(a, sp[0], mac_a, &err);
    if (r == 0)
        r = plug_cable(b, sp[1], mac_b, &err);
    close(sp[0]);
    close(sp[1]);
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
