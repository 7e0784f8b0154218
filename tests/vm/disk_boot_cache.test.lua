-- A VM with attached disks boots from the boot cache (docs/boot-cache.md):
-- the entry holds no disk, and the resumed guest reads each disk as it is
-- now, not as the saving boot read it.
provium:claim { memory = "400M", cpus = 1 }

local vm = provium:vm("a", "default", { memory = "256M" })
local d = vm:attach_disk { id = "data", size = "8M" }

-- The tests need the run's boot cache (bench/suite runs every file with
-- --no-boot-cache too).
local function need_cache(t)
    if not _provium_c.boot_cache() then t:skip("this run has the boot cache off") end
end

-- sector 0 read through the guest's page cache (no direct I/O)
local function first()
    local r = vm:run({ "sh", "-c", "dd if=/dev/vda bs=512 count=1 2>/dev/null | head -c 4" })
    r:assert_ok()
    return r.stdout
end

test("the second boot is a resume and sees the disk as it is now", function(t)
    need_cache(t)
    d:write_sectors(0, "one!")
    vm:boot()
    t:assert(vm:boot_cached(), "a VM with a disk comes from the boot cache")
    t:assert_eq(first(), "one!")
    vm:kill()
    -- an MBR with one partition, sectors 2048..6143 (the saved boot saw none)
    local entry = string.pack("<I1I3I1I3I4I4", 0, 0, 0x83, 0, 2048, 4096)
    d:write_sectors(0, "two!" .. ("\0"):rep(442) .. entry .. ("\0"):rep(48) .. "\x55\xaa")
    vm:boot()
    t:assert(vm:boot_cached())
    t:assert_eq(first(), "two!", "not what the saving boot read")
    t:assert(vm:exists("/sys/block/vda/vda1"), "the partition table is read again")
    t:assert_eq(d:device(), "/dev/vda")
    vm:run({ "sh", "-c", "printf g | dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null" }):assert_ok()
    t:assert_eq(d:read_sectors(1, 1):sub(1, 1), "g")
end)

test("a disk of another size is another entry", function(t)
    need_cache(t)
    vm:kill()
    d:detach()
    local e = vm:attach_disk { id = "data", size = "16M" }
    vm:boot()
    t:assert(vm:boot_cached())
    t:assert_eq(vm:run("cat /sys/block/vda/size").stdout, tostring(16 * 2048) .. "\n")
    t:assert_eq(e:device(), "/dev/vda")
end)
