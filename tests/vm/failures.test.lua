-- Boots that fail say why, name the VM and end with the console tail.

test("an agent that never answers: error names the VM and shows the console", function(t)
    -- replace the agent with something the kernel cannot execute; cold, so
    -- the boot itself sees the file (docs/boot-cache.md)
    local vm = provium:vm("broken", "default", {
        agent_timeout = 25,
        cold = true,
        files = { { path = "/provium-agent", content = "not an executable", mode = 0x1ed } },
    })
    local err = t:assert_raises(function() vm:boot() end)
    t:assert_contains(err, "vm `broken`")
    t:assert_contains(err, "no agent within 25s of power-on")
    t:assert_contains(err, "last console lines:")
    t:assert_contains(err, "Failed to execute /provium-agent")
    t:assert_eq(vm:state(), "dead")
end)

test("a kernel panic ends the VM at once", { allow_kernel_warnings = true }, function(t)
    local vm = provium:vm("panic", "default", {
        -- the agent cannot start, and the requested init does not exist: panic
        kernel_cmdline_append = "init=/nonexistent",
        files = { { path = "/provium-agent", content = "", mode = 0x1ed } },
        agent_timeout = 120,
        cold = true,
    })
    local t0 = os.time()
    local err = t:assert_raises(function() vm:boot() end)
    t:assert_contains(err, "vm `panic`")
    t:assert_contains(err, "Kernel panic")
    t:assert_eq(vm:splats()[1].title, "kernel panic: Requested init /nonexistent failed (error -2).")
    t:assert(os.time() - t0 < 100, "did not wait for the agent timeout")
end)

test("a conflicting rdinit= is refused", function(t)
    local vm = provium:vm("rd", "default", { kernel_cmdline = "console=ttyS0 rdinit=/bin/sh" })
    local err = t:assert_raises(function() vm:boot() end)
    t:assert_contains(err, "rdinit=/bin/sh")
    t:assert_contains(err, "conflicts")
end)

test("an unknown profile is refused before booting", function(t)
    local err = t:assert_raises(function() provium:vm("x", "nope"):boot() end)
    t:assert_contains(err, "unknown profile `nope`")
end)

test("a panic after a NUL on the console is still told", { allow_kernel_warnings = true }, function(t)
    local vm = provium:vm("nulpanic", "default"):boot()
    local err = t:assert_raises(function()
        vm:run("printf 'before\\000after\\n' > /dev/console; echo c > /proc/sysrq-trigger",
            { timeout = 60 })
    end)
    t:assert_contains(err, "vm `nulpanic`")
    t:assert_contains(err, "the guest kernel panicked")
    t:assert_eq(vm:state(), "dead")
end)
