-- The first test to read: boot a VM, run a command, move a file in and out.
test("boots and answers", function(t)
    local vm = provium:vm("a", "default"):boot()
    local r = vm:run("uname -r")
    r:assert_ok()
    t:assert_eq(r.stdout, vm:kernel_release() .. "\n")
    vm:write_file("/tmp/greeting", "hello from the host\n")
    t:assert_eq(vm:read_file("/tmp/greeting"), "hello from the host\n")
end)
