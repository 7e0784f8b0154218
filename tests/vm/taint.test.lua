-- A new kernel taint fails the test that caused it; kmemleak, opt-in, needs a
-- kernel built with it (docs/splats.md#taint, docs/splats.md#kmemleak). Run
-- as nested provium runs whose tests share one booted VM: root in the guest
-- can set any taint bit by writing its value to /proc/sys/kernel/tainted.
local meta = require("lib.meta")

local case = [[
provium:claim{ memory = "1152M", cpus = 2 } -- `a`, and the VM one test boots
local vm = provium:vm("a", "default"):boot()
local function taint(v) vm:run("echo " .. v .. " > /proc/sys/kernel/tainted"):assert_ok() end

test("sets W and D", function(t) taint((1 << 9) | (1 << 7)) end)
test("next test is not blamed", function(t) end)
test("sets U, allowed", { allow_kernel_warnings = true }, function(t) taint(1 << 6) end)
test("O and E, a module built out of tree, are expected", function(t)
    taint((1 << 12) | (1 << 13))
end)
test("a VM the test boots counts from its boot", function(t)
    local b = provium:vm("b", "default"):boot()
    b:run("echo 1 > /proc/sys/kernel/tainted"):assert_ok()
end)
test("a WARNING's taint is told by its splat", function(t)
    provium:vm("w", "default", { kernel_cmdline_append = "pci=noacpi" }):boot()
end)
test("meta.kmemleak on a kernel without it", { kmemleak = true }, function(t) end)
]]

test("a new taint fails the test, decoded; allowed and expected ones do not", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/t.test.lua", case)
    local files, code, out = meta.json_run({ "t.test.lua" }, { cwd = d })
    t:assert_eq(code, 1, out)
    local s = meta.by_name(files["t.test.lua"])
    local r = s["sets W and D"]
    t:assert_eq(r.status, "failed")
    t:assert_contains(r.message, "vm `a`: kernel taint: D (died recently), W (warning)")
    t:assert_eq(r.splats[1].kind, "taint")
    t:assert_eq(r.splats[1].title, "kernel taint: D (died recently), W (warning)")
    t:assert_eq(s["next test is not blamed"].status, "passed")
    r = s["sets U, allowed"]
    t:assert_eq(r.status, "passed")
    t:assert_eq(r.splats[1].title, "kernel taint: U (requested by user space)")
    t:assert_eq(s["O and E, a module built out of tree, are expected"].status, "passed")
    r = s["a VM the test boots counts from its boot"]
    t:assert_eq(r.status, "failed")
    t:assert_contains(r.message, "vm `b`: kernel taint: P (proprietary module)")
    r = s["a WARNING's taint is told by its splat"]
    t:assert_eq(r.status, "failed")
    t:assert_contains(r.message, "kernel splat on vm `w`: WARNING in pci_msi_setup_msi_irqs")
    t:assert(not r.message:find("kernel taint", 1, true), "the taint is not reported again: " .. r.message)
    r = s["meta.kmemleak on a kernel without it"]
    t:assert_eq(r.status, "failed")
    t:assert_contains(r.message, "vm `a`: kmemleak: /sys/kernel/debug/kmemleak is absent")
    t:assert_contains(r.message, "CONFIG_DEBUG_KMEMLEAK")
end)

test("--kmemleak on a kernel without it names the Kconfig option", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/k.test.lua", [[
test("boots", function(t) provium:vm("a", "default"):boot() end)
]])
    local files, code, out = meta.json_run({ "--kmemleak", "k.test.lua" }, { cwd = d })
    t:assert_eq(code, 1, out)
    local r = meta.by_name(files["k.test.lua"])["boots"]
    t:assert_eq(r.status, "failed")
    t:assert_contains(r.message, "vm `a`: kmemleak: /sys/kernel/debug/kmemleak is absent: "
        .. "the kernel was built without CONFIG_DEBUG_KMEMLEAK")
end)

test("taint bits decode to the kernel's letters", function(t)
    local S = _provium.splat
    t:assert_eq(S.taint_decode((1 << 7) | (1 << 9)), "D (died recently), W (warning)")
    t:assert_eq(S.taint_decode(1), "P (proprietary module)")
    t:assert_eq(S.taint_decode((1 << 12) | (1 << 13)), "O (out-of-tree module), E (unsigned module)")
    t:assert_eq(S.taint_decode(1 << 40), "bit 40")
end)
