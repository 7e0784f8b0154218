-- Kernel splats fail the test that caused them. A real one: booting the
-- cloud kernel with pci=noacpi makes MSI setup WARN with a call trace.
local meta = require("lib.meta")

test("a WARNING while a test runs fails it with the excerpt", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/w.test.lua", [[
test("boots a kernel that warns", function(t)
    provium:vm("w", "default", { kernel_cmdline_append = "pci=noacpi" }):boot()
end)
test("next test is not blamed", function(t) end)
]])
    local files, code = meta.json_run({ "w.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 1)
    local s = meta.by_name(files["w.test.lua"])
    local msg = s["boots a kernel that warns"].message
    t:assert_contains(msg, "kernel splat on vm `w`: WARNING in pci_msi_setup_msi_irqs")
    t:assert_contains(msg, "Call Trace:")
    t:assert_eq(s["next test is not blamed"].status, "passed")
end)

test("allow_kernel_warnings: the test passes and vm:splats() lists them",
    { allow_kernel_warnings = true }, function(t)
    local vm = provium:vm("w", "default", { kernel_cmdline_append = "pci=noacpi" }):boot()
    local s = vm:splats()
    t:assert(#s >= 1, "at least one splat")
    t:assert_eq(s[1].title, "WARNING in pci_msi_setup_msi_irqs")
    t:assert_eq(s[1].vm, "w")
    t:assert_contains(s[1].excerpt, "Call Trace:")
    t:assert_contains(s[1].excerpt, "pci_msi_setup_msi_irqs+")
end)

test("a clean boot has no splats; the kernel log starts at the beginning", function(t)
    local vm = provium:vm("c", "default"):boot()
    t:assert_eq(#vm:splats(), 0)
    t:assert_contains(vm:kernel_log(), "Linux version")
    vm:run("echo provium-marker > /dev/kmsg"):assert_ok()
    wait_until(function() return vm:kernel_log():find("provium-marker", 1, true) end,
        { timeout = 10, desc = "the record reaches the host" })
end)

test("a panic is caught from the console", { allow_kernel_warnings = true }, function(t)
    local vm = provium:vm("p", "default"):boot()
    pcall(vm.run, vm, "echo c > /proc/sysrq-trigger")
    wait_until(function() return vm:state() == "dead" or vm:state() == "shutdown" end,
        { timeout = 60, desc = "the VM to stop" })
    local titles = {}
    for _, sp in ipairs(vm:splats()) do titles[#titles + 1] = sp.title end
    t:assert_contains(table.concat(titles, "\n"), "Kernel panic: sysrq triggered crash")
end)
