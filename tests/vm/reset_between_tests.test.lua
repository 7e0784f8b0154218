-- provium.reset_between_tests (docs/snapshots.md): each test
-- starts from the machine as the file's top level left it.
provium.reset_between_tests = true
local vm = provium:vm("r", "default"):boot()
vm:write_file("/tmp/base", "baseline\n")
local p = vm:run_async("sleep 600")

test("a test changes the machine", function(t)
    vm:write_file("/tmp/base", "changed\n")
    vm:write_file("/tmp/new", "x")
    vm:run("kill " .. p:pid()):assert_ok()
end)

test("the next one starts from the baseline", function(t)
    t:assert_eq(vm:read_file("/tmp/base"), "baseline\n")
    t:assert_eq(vm:exists("/tmp/new"), false)
    t:assert_eq(p:status().running, true, "the file-scope process runs again")
    vm:shutdown()
end)

test("even after a shutdown", function(t)
    t:assert_eq(vm:state(), "booted")
    t:assert_eq(vm:read_file("/tmp/base"), "baseline\n")
end)
