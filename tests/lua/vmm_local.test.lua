-- --vmm local (docs/cli.md): a run of the framework that boots nothing.
local meta = require("lib.meta")

test("--vmm local: states without QEMU, guest operations refused", function(t)
    local started = _provium_c.now()
    local files, code, out = meta.json_run({ "--vmm", "local", "lua/cases/vmm_local.lua" })
    t:assert_eq(code, 0, out)
    local f = files["lua/cases/vmm_local.lua"]
    t:assert(f and f.passed, out)
    t:assert_eq(#f.tests, 2)
    t:assert_contains(out, "--vmm local: no VM boots")
    t:assert(_provium_c.now() - started < 20, "no boot")
end)

test("--vmm takes qemu or local", function(t)
    meta.assert_refused(t, { { { "--vmm", "xen", "lua/cases/pass.lua" }, "provium: --vmm: unknown value `xen`" } })
    local _, code, out = meta.json_run({ "--vmm", "qemu", "lua/cases/pass.lua" })
    t:assert_eq(code, 0, out)
end)
