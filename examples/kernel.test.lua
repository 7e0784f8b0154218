-- One VM for the whole file: tests run in order and share it.
local guest = require("helpers.guest")
local vm = provium:vm("k", "default", { memory = "256M", cpus = 2 }):boot()

test("the boot opts reach the guest", function(t)
    t:assert(guest.mem_total_kib(vm) <= 256 * 1024, "at most 256 MiB")
    t:assert_eq(vm:run("nproc").stdout, "2\n")
end)

test("the agent mounted the pseudo filesystems", function(t)
    local m = guest.mounts(vm)
    t:assert_eq(m["/proc"], "proc")
    t:assert_eq(m["/sys"], "sysfs")
    t:assert_eq(m["/dev"], "devtmpfs")
end)

test("sysctls are live kernel state", function(t)
    vm:write_file("/proc/sys/kernel/hostname", "provium-demo")
    t:assert_eq(vm:run("hostname").stdout, "provium-demo\n")
end)

test("an ordinary user may not change them", function(t)
    -- a worker: the guest operations as uid 1000 (docs/workers.md)
    local user <close> = vm:spawn_worker { uid = 1000 }
    t:assert_contains(t:assert_raises(function()
        user:write_file("/proc/sys/kernel/hostname", "nope")
    end), "EACCES")
    t:assert_eq(vm:run("hostname").stdout, "provium-demo\n")
end)

test("a failing command reports its exit code and output", function(t)
    local r = vm:run("ls /definitely-missing")
    t:assert_eq(r:ok(), false)
    t:assert_eq(r.exit_code, 1)
    t:assert_contains(r.stderr, "No such file or directory")
end)

test("the console holds the kernel's boot log", function(t)
    t:assert_contains(vm:console():read_log(), "Linux version " .. vm:kernel_release())
end)
