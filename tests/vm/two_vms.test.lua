-- Two VMs in one file are two machines.
provium:claim { memory = "1200M", cpus = 1 }
local a = provium:vm("a", "default")
local b = provium:vm("b", "default")
provium:boot()

test("both boot and are separate", function(t)
    t:assert_eq(a:state(), "booted")
    t:assert_eq(b:state(), "booted")
    a:write_file("/tmp/who", "a")
    b:write_file("/tmp/who", "b")
    t:assert_eq(a:read_file("/tmp/who"), "a")
    t:assert_eq(b:read_file("/tmp/who"), "b")
    t:assert_neq(a:read_file("/proc/sys/kernel/random/boot_id"),
        b:read_file("/proc/sys/kernel/random/boot_id"))
end)

test("file-scope VMs live across tests, in order", function(t)
    t:assert_eq(a:read_file("/tmp/who"), "a")
    t:assert_eq(provium:vm("b"), b)
end)
