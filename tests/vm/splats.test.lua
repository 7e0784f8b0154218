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
    t:assert_contains(table.concat(titles, "\n"), "kernel panic: sysrq triggered crash")
end)

-- A VM whose boot panics at once: the agent cannot start and the requested
-- init does not exist (cold, so the boot itself sees the files).
local function panicking(name)
    return provium:vm(name, "default", {
        kernel_cmdline_append = "init=/nonexistent",
        files = { { path = "/provium-agent", content = "", mode = 0x1ed } },
        agent_timeout = 120,
        cold = true,
    })
end

test("an expected boot failure: the test catches the panic and passes", function(t)
    local vm = panicking("bootpanic")
    local ok, err = pcall(function() vm:boot() end)
    t:assert(not ok, "the boot raised")
    t:assert_contains(tostring(err), "vm `bootpanic`")
    t:assert_contains(tostring(err), "last console lines:")
    t:assert_contains(tostring(err), "Kernel panic - not syncing")
    -- the splat travelled with the error: still listed, marked as reported
    local s = vm:splats()
    t:assert_eq(#s, 1)
    t:assert(s[1].reported, "the splat is marked as reported with the error")
end)

test("an operation that killed the VM, caught: the test passes", function(t)
    local vm = provium:vm("opkill", "default"):boot()
    local ok, err = pcall(vm.run, vm, "echo c > /proc/sysrq-trigger", { timeout = 60 })
    t:assert(not ok, "the run raised")
    t:assert_contains(err, "the guest kernel panicked")
    t:assert(#vm:splats() >= 1)
end)

test("a panic no operation raised for fails the test; so does an uncaught boot panic", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/p.test.lua", [[
test("a crash in the background", function(t)
    local vm = provium:vm("bg", "default"):boot()
    vm:run("(sleep 1; echo c > /proc/sysrq-trigger) >/dev/null 2>&1 &"):assert_ok()
    wait_until(function() return vm:state() == "dead" end, { timeout = 60, desc = "the VM to die" })
end)
test("a boot panic the test did not catch", function(t)
    provium:vm("up", "default", {
        kernel_cmdline_append = "init=/nonexistent",
        files = { { path = "/provium-agent", content = "", mode = 0x1ed } },
        agent_timeout = 120,
        cold = true,
    }):boot()
end)
]])
    local files, code = meta.json_run({ "p.test.lua" }, { cwd = d })
    t:assert_eq(code, 1)
    local s = meta.by_name(files["p.test.lua"])
    local bg = s["a crash in the background"]
    t:assert_eq(bg.status, "failed")
    t:assert_contains(bg.message, "kernel splat on vm `bg`: kernel panic: sysrq triggered crash")
    local up = s["a boot panic the test did not catch"]
    t:assert_eq(up.status, "failed")
    -- the error first, with the console tail; the splat it carried after it
    t:assert_contains(up.message, "vm `up`: ")
    t:assert_contains(up.message, "last console lines:")
    t:assert_contains(up.message, "kernel splat on vm `up`: kernel panic: Requested init /nonexistent failed")
    -- --json lists each test's splats, and which an error carried
    t:assert_eq(bg.splats[1].title, "kernel panic: sysrq triggered crash")
    t:assert_eq(bg.splats[1].reported, false)
    t:assert_eq(up.splats[1].vm, "up")
    t:assert_eq(up.splats[1].reported, true)
end)
