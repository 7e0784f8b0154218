-- Crash consistency (docs/disks.md#mediated-disks-and-power-cuts): on a
-- mediated disk, what the guest wrote stays in the disk's cache until it
-- flushes. A file written with fsync survives a power cut; one written
-- without it does not. The same shape proves a journal or a database
-- crash-safe: write, cut the power (optionally keeping a seeded random
-- subset of the unflushed writes: power_cut{reorder = seed}), boot, check.
provium:claim { memory = "400M" }
local vm = provium:vm("a", "default", { memory = "256M" })
local disk = vm:attach_disk { id = "data", size = "32M", mediated = true }
vm:boot()

local dev = "/dev/disk/by-id/virtio-data"

local function sh(cmd)
    local r = vm:run(cmd)
    r:assert_ok()
    return r.stdout
end

local function mount()
    sh("mkdir -p /mnt/data && mount -t ext2 " .. dev .. " /mnt/data")
end

-- A file system with an empty file `kept`, all of it on stable storage:
-- `sync` writes everything out, the fsync of the device flushes the disk.
sh("mke2fs -q " .. dev)
mount()
sh("touch /mnt/data/kept && sync && dd if=/dev/null of=" .. dev .. " conv=fsync,notrunc 2>/dev/null")
assert(disk:pending_writes().count == 0)

test("a file written with fsync survives a power cut; one without does not", function(t)
    -- fsync (dd conv=fsync) writes the file and flushes the disk
    sh("echo 'written with fsync' | dd of=/mnt/data/kept conv=fsync 2>/dev/null")
    -- no fsync: the data is in the guest's page cache, or held by the disk
    sh("echo 'written without fsync' > /mnt/data/lost")
    t:log(("unflushed at the cut: %d writes"):format(disk:pending_writes().count))

    disk:power_cut()
    t:assert_eq(vm:state(), "shutdown")

    vm:boot()
    mount()
    t:assert_eq(sh("cat /mnt/data/kept"), "written with fsync\n")
    local lost = vm:run("cat /mnt/data/lost 2>/dev/null")
    t:assert(not lost.stdout:find("written without fsync"), "the unflushed file did not survive")
end)
