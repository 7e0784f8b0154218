-- What a VM can do besides run commands.
test("reset reboots the same machine", function(t)
    local vm = provium:vm("r", "default"):boot()
    local before = vm:read_file("/proc/sys/kernel/random/boot_id")
    vm:reset()
    t:assert_neq(vm:read_file("/proc/sys/kernel/random/boot_id"), before)
end)

test("pause freezes the guest, resume continues it", function(t)
    local vm = provium:vm("p", "default"):boot()
    vm:pause()
    t:assert_eq(vm:state(), "paused")
    vm:resume()
    vm:run("true"):assert_ok()
end)

test("files given at boot are there before init runs", function(t)
    local vm = provium:vm("f", "default", {
        files = { { path = "/etc/provium-demo.conf", content = "mode = fast\n" } },
    }):boot()
    t:assert_eq(vm:read_file("/etc/provium-demo.conf"), "mode = fast\n")
end)
