-- A disk that fails under a file system (docs/disks.md): the guest formats
-- and mounts it, the disk starts failing reads, the guest sees EIO, and once
-- the fault is cleared the same file reads back whole.
provium:claim { memory = "400M" }
local vm = provium:vm("a", "default", { memory = "256M" })
local data = vm:attach_disk { id = "data", size = "64M" } -- a scratch image, sparse
vm:boot()

local dev = "/dev/disk/by-id/virtio-data" -- Provium links it; the guest has no udev
vm:run("mke2fs -q " .. dev .. " && mkdir -p /mnt/data && mount -t ext2 " .. dev .. " /mnt/data"):assert_ok()
vm:run("echo 'written before the fault' > /mnt/data/note && sync"):assert_ok()

local function read_note()
    -- drop the page cache, so that the read goes to the disk
    vm:run("echo 3 > /proc/sys/vm/drop_caches")
    return vm:run("cat /mnt/data/note")
end

test("the guest sees EIO while the disk fails, and recovers after", function(t)
    data:fault_inject("eio_read")
    local r = read_note()
    t:assert_neq(r.exit_code, 0)
    t:assert_contains(r.stderr, "Input/output error")
    t:assert_contains(vm:kernel_log(), "I/O error")

    data:clear_faults()
    r = read_note()
    r:assert_ok()
    t:assert_eq(r.stdout, "written before the fault\n")
end)

test("a slow disk: each request answered 200 ms late", function(t)
    data:fault_inject("slow", { ms = 200 })
    t:assert_eq(data:active_faults()[1], "slow")
    read_note():assert_ok() -- slower, not failing
    data:clear_faults()
end)
