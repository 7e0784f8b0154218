/* Primitives for provium's own tests, never for test authors
 * (docs/architecture.md): a misbehaving agent on command, raw QMP. They sit
 * in _provium_c beside the others. */
#include "l_provium.h"
#include "guest.h"
#include "vm.h"

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

void l_open_test_prims(lua_State *L)
{
    static const luaL_Reg prims[] = {
        {"test_misbehave", l_test_misbehave},
        {"qmp", l_qmp},
        {NULL, NULL},
    };
    luaL_setfuncs(L, prims, 0);
}
