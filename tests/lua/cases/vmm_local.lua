-- Not a *.test.lua file: tests/lua/vmm_local.test.lua runs it with --vmm local.
local vm = provium:vm("a", "default"):boot()

test("a VM goes through its states without booting", function(t)
    t:assert_eq(vm:state(), "booted")
    local b = provium:vm("b", "default")
    t:assert_eq(b:state(), "created")
    provium:boot()
    t:assert_eq(b:state(), "booted")
    b:pause()
    t:assert_eq(b:state(), "paused")
    t:assert_contains(t:assert_raises(function() b:pause() end), "pause() needs a booted VM, but it is paused")
    b:resume()
    b:shutdown()
    t:assert_eq(b:state(), "shutdown")
    t:assert_contains(t:assert_raises(function() vm:boot() end), "boot() on a VM that is already booted")
end)

test("guest operations fail, naming the VM and the operation", function(t)
    for _, op in ipairs({ "run", "read_file", "syscall", "snapshot", "spawn_worker", "exec" }) do
        local err = t:assert_raises(function() vm[op](vm, "x") end)
        t:assert_contains(err, ("vm `a`: %s: --vmm local boots no kernel, so guest operations fail"):format(op))
        t:assert_contains(err, "vmm_local.lua:", "named at the caller")
    end
    t:assert_contains(t:assert_raises(function() vm:console():read() end),
        "console:read: VMM does not expose a console socket")
end)
