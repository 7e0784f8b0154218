-- A guest that misbehaves costs the test, not the run.

test("100 MiB on stdout is capped at 64 MiB, with a marker, without a hang", function(t)
    local vm = provium:vm("big", "default"):boot()
    local r = vm:run("head -c 104857600 /dev/zero")
    r:assert_ok()
    t:assert_eq(#r.stdout > 64 * 1024 * 1024, true, "the cap's worth arrived")
    t:assert(#r.stdout < 65 * 1024 * 1024, "and not more: " .. #r.stdout)
    t:assert_contains(r.stdout:sub(-80), "[provium: output truncated at 64 MiB of 104857600 bytes]")
end)

test("the agent killed inside the guest: the next op names the VM, no hang", function(t)
    local vm = provium:vm("victim", "default", { kernel_cmdline_append = "console=ttyS0" }):boot()
    -- the agent is the process that runs our commands' parent; kill it
    pcall(vm.run, vm, "kill -9 $PPID", { timeout = 10 })
    local t0 = os.time()
    local err = t:assert_raises(function() vm:run("true", { timeout = 20 }) end)
    t:assert_contains(err, "vm `victim`")
    t:assert(os.time() - t0 < 60, "failed promptly")
end)
