-- State machine, boot opts and what each lifecycle call does to a real VM.

test("boot opts: memory, cpus, cmdline append, files", function(t)
    local vm = provium:vm("o", "default", {
        memory = "384M", cpus = 2, kernel_cmdline_append = "provium_marker=42",
        files = { { path = "/etc/motd", content = "welcome\n" },
                  { path = "/opt/x/run.sh", content = "#!/bin/sh\necho ran\n", mode = 0x1ed } },
    }):boot()
    local kb = tonumber(vm:run("awk '/MemTotal/ {print $2}' /proc/meminfo").stdout)
    t:assert(kb > 300 * 1024 and kb <= 384 * 1024, "MemTotal " .. kb .. " kB for 384M")
    t:assert_eq(vm:run("nproc").stdout, "2\n")
    t:assert_contains(vm:read_file("/proc/cmdline"), "provium_marker=42")
    t:assert_eq(vm:read_file("/etc/motd"), "welcome\n")
    t:assert_eq(vm:run("/opt/x/run.sh").stdout, "ran\n")
end)

test("reset reboots the same VM; the agent comes back", function(t)
    local vm = provium:vm("r", "default"):boot()
    local id1 = vm:read_file("/proc/sys/kernel/random/boot_id")
    vm:write_file("/tmp/marker", "1")
    vm:reset()
    t:assert_eq(vm:state(), "booted")
    t:assert_neq(vm:read_file("/proc/sys/kernel/random/boot_id"), id1, "a new boot")
    t:assert(not vm:exists("/tmp/marker"), "tmpfs is fresh after reset")
    local c = vm:console()
    t:assert_eq(c:expect("Linux version"), "Linux version")
    t:assert_eq(c:expect("Linux version"), "Linux version", "the second boot's banner")
end)

test("pause, resume, shutdown and wrong states", function(t)
    local vm = provium:vm("p", "default"):boot()
    vm:pause()
    t:assert_eq(vm:state(), "paused")
    t:assert_contains(t:assert_raises(function() vm:pause() end), "needs a booted VM, but it is paused")
    vm:resume()
    t:assert_eq(vm:state(), "booted")
    vm:run("true"):assert_ok()
    t:assert_contains(t:assert_raises(function() vm:boot() end), "already booted")
    vm:shutdown()
    t:assert_eq(vm:state(), "shutdown")
    vm:shutdown() -- idempotent
    t:assert_contains(t:assert_raises(function() vm:run("true") end), "it is shutdown")
end)

test("power_button: the guest powers off and the VM reads shutdown", function(t)
    local vm = provium:vm("b", "default"):boot()
    -- the button's modules load only when a test presses it (docs/kernels.md#modules)
    local mods = vm:read_file("/proc/modules")
    t:assert(not mods:find("^button ") and not mods:find("\nbutton "), mods)
    t:assert(not mods:find("^evdev ") and not mods:find("\nevdev "), mods)
    vm:power_button()
    t:assert_eq(vm:state(), "shutdown")
end)

local kept
test("a VM created in a test is shut down when the test ends", function(t)
    kept = provium:vm("scoped", "default"):boot()
    t:assert_eq(kept:state(), "booted")
end)

test("... and is shut down now", function(t)
    t:assert_eq(kept:state(), "shutdown")
end)
