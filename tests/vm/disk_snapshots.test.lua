-- Attached disks in snapshots (docs/snapshots.md#disks): a snapshot
-- freezes each disk once, every restore serves it under an overlay of its
-- own, so restores never see each other's writes and the frozen file never
-- changes; fixtures and reset_between_tests carry a formatted, populated
-- file system.
provium:claim { memory = "700M", cpus = 1 }
local meta = require("lib.meta")

local function sha(path)
    local p = io.popen("sha256sum " .. meta.quote(path))
    local out = p:read("a")
    p:close()
    return out:match("^%x+")
end

local function sh(vm, cmd)
    local r = vm:run({ "sh", "-c", cmd })
    r:assert_ok()
    return r.stdout
end

local vm = provium:vm("a", "default", { memory = "256M" })
local data = vm:attach_disk { id = "data", size = "32M" }
local journal = vm:attach_disk { id = "jnl", size = "8M", mediated = true }
vm:boot()
sh(vm, "mke2fs -q /dev/vda && mkdir -p /mnt/d && mount -t ext2 /dev/vda /mnt/d" ..
    " && echo saved > /mnt/d/f && sync && printf J | dd of=/dev/vdb bs=512 conv=fsync 2>/dev/null")
local snap = vm:snapshot()
local base = snap:path() .. "/disk-data"
local base_sum = sha(base)

test("a restore sees each disk as it was at the snapshot, in the same order", function(t)
    sh(vm, "echo changed > /mnt/d/f && echo new > /mnt/d/g && sync")
    vm:kill()
    vm:restore(snap)
    t:assert_eq(sh(vm, "cat /mnt/d/f"), "saved\n")
    t:assert(not vm:exists("/mnt/d/g"), "a write after the snapshot is gone")
    t:assert_eq(vm:disk("data"), data, "the Disk goes on")
    t:assert_eq(data:device(), "/dev/vda")
    t:assert_eq(journal:device(), "/dev/vdb")
    t:assert_eq(sh(vm, "cat /sys/block/vdb/serial"), "jnl")
    t:assert_eq(data:size(), 32 * 1024 * 1024)
    t:assert_eq(sha(base), base_sum, "the frozen disk is unchanged")
end)

test("read_sectors, write_sectors and faults act on the restored disk", function(t)
    vm:kill()
    vm:restore(snap)
    t:assert_eq(journal:read_sectors(0, 1):sub(1, 1), "J")
    sh(vm, "printf K | dd of=/dev/vdb bs=512 seek=1 conv=fsync 2>/dev/null")
    t:assert_eq(journal:read_sectors(1, 1):sub(1, 1), "K", "the guest's write, read back by the host")
    journal:write_sectors(2, "host")
    t:assert_eq(sh(vm, "dd if=/dev/vdb bs=512 skip=2 count=1 iflag=direct 2>/dev/null | head -c 4"), "host")
    data:fault_inject("eio_read")
    t:assert(vm:run("dd if=/dev/vda of=/dev/null bs=4k count=1 iflag=direct").exit_code ~= 0)
    data:clear_faults()
    vm:run("dd if=/dev/vda of=/dev/null bs=4k count=1 iflag=direct"):assert_ok()
    t:assert_eq(sha(base), base_sum)
end)

test("a mediated disk stays mediated: a power cut after a restore loses the unflushed write", function(t)
    vm:kill()
    vm:restore(snap)
    sh(vm, "printf L | dd of=/dev/vdb bs=512 seek=3 oflag=direct 2>/dev/null")
    t:assert_eq(journal:pending_writes().count, 1)
    journal:power_cut()
    t:assert_eq(journal:read_sectors(3, 1):sub(1, 1), "\0")
    t:assert_eq(journal:read_sectors(0, 1):sub(1, 1), "J", "the frozen write is there")
end)

test("two VMs restored from one snapshot do not see each other's writes", function(t)
    vm:restore(snap)
    local twin = provium:vm("b", "default")
    twin:restore(snap)
    t:assert_eq(twin:disk("data"):device(), "/dev/vda")
    t:assert(twin:disk("data") ~= data)
    sh(vm, "echo from-a > /mnt/d/a && sync")
    sh(twin, "echo from-b > /mnt/d/b && sync")
    sh(vm, "echo 3 > /proc/sys/vm/drop_caches")
    sh(twin, "echo 3 > /proc/sys/vm/drop_caches")
    t:assert_eq(sh(twin, "cat /mnt/d/f"), "saved\n")
    t:assert(not twin:exists("/mnt/d/a"))
    t:assert(not vm:exists("/mnt/d/b"))
    twin:kill()
    t:assert_eq(sha(base), base_sum)
end)

test("a snapshot of a restored VM holds the restore's writes", function(t)
    vm:kill()
    vm:restore(snap)
    sh(vm, "echo second > /mnt/d/s && sync")
    local snap2 = vm:snapshot()
    sh(vm, "rm /mnt/d/s && sync")
    vm:kill()
    vm:restore(snap2)
    t:assert_eq(sh(vm, "cat /mnt/d/s /mnt/d/f"), "second\nsaved\n")
    snap2:delete()
end)

test("a damaged or missing frozen disk fails the restore, naming it", function(t)
    local copy = meta.tmpdir() .. "/s"
    os.execute(("cp -a %s %s"):format(meta.quote(snap:path()), meta.quote(copy)))
    os.execute("touch " .. meta.quote(copy .. "/disk-data"))
    vm:kill()
    local ok, err = pcall(vm.restore, vm, copy)
    t:assert(not ok)
    t:assert_contains(tostring(err), "its frozen disk disk-data was changed or cut after the snapshot")
    os.remove(copy .. "/disk-data")
    ok, err = pcall(vm.restore, vm, copy)
    t:assert(not ok)
    t:assert_contains(tostring(err), "its frozen disk disk-data is gone")
    t:assert_eq(vm:disk("data"), data, "a failed restore leaves the disks")
    vm:restore(snap)
    t:assert_eq(sh(vm, "cat /mnt/d/f"), "saved\n")
end)

test("lab:snapshot and lab:restore carry the disks of the lab's VMs", function(t)
    local lab = provium:lab("l")
    local c = lab:vm("c", "default", { memory = "256M" })
    c:attach_disk { id = "labdisk", size = "8M" }
    c:boot()
    sh(c, "printf lab | dd of=/dev/vda bs=512 conv=fsync 2>/dev/null")
    local ls = lab:snapshot()
    sh(c, "printf new | dd of=/dev/vda bs=512 conv=fsync 2>/dev/null")
    c:kill()
    lab:restore(ls)
    t:assert_eq(sh(c, "dd if=/dev/vda bs=512 count=1 iflag=direct 2>/dev/null | head -c 3"), "lab")
    t:assert_eq(c:disk("labdisk"):read_sectors(0, 1):sub(1, 3), "lab")
    c:kill()
end)

-- A project of its own: a fixture whose build formats a disk, two files
-- that restore it, and a file with reset_between_tests.
local function project()
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/fixtures")
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\n')
    meta.write(d .. "/fixtures/fs.fixture.lua", [[
local vm = provium:vm("fs", "default", { memory = "256M" })
vm:attach_disk { id = "data", size = "16M" }
vm:boot()
vm:run({ "sh", "-c", "mke2fs -q /dev/vda && mkdir -p /mnt/d && mount -t ext2 /dev/vda /mnt/d && echo from-fixture > /mnt/d/f && sync" }):assert_ok()
return vm:snapshot()
]])
    for _, f in ipairs { "a", "b" } do
        meta.write(("%s/%s.test.lua"):format(d, f), ([[
local vm = provium:vm_fixture("fixtures/fs")
test("sees the fixture's files, and only its own writes", function(t)
    t:assert_eq(vm:read_file("/mnt/d/f"), "from-fixture\n")
    vm:run({ "sh", "-c", "echo %s > /mnt/d/mine && echo x > /mnt/d/%s && sync" }):assert_ok()
    vm:kill()
    vm:boot() -- a cold boot on the same disks: what reached them
    vm:run({ "sh", "-c", "mkdir -p /mnt/d && mount -t ext2 /dev/vda /mnt/d" }):assert_ok()
    t:assert_eq(vm:read_file("/mnt/d/mine"), "%s\n")
    t:assert(not vm:exists("/mnt/d/%s"), "the other file's write")
end)
]]):format(f, f, f, f == "a" and "b" or "a"))
    end
    meta.write(d .. "/reset.test.lua", [[
provium.reset_between_tests = true
local vm = provium:vm("r", "default", { memory = "256M" })
local disk = vm:attach_disk { id = "data", size = "16M" }
vm:boot()
vm:run({ "sh", "-c", "mke2fs -q /dev/vda && mkdir -p /mnt/d && mount -t ext2 /dev/vda /mnt/d && echo base > /mnt/d/f && sync" }):assert_ok()
test("writes", function(t)
    vm:run({ "sh", "-c", "echo test1 > /mnt/d/f && sync" }):assert_ok()
    disk:write_sectors(20000, "host")
end)
test("starts from the baseline's disk", function(t)
    t:assert_eq(vm:read_file("/mnt/d/f"), "base\n")
    t:assert_eq(disk:read_sectors(20000, 1):sub(1, 4), "\0\0\0\0")
    t:assert_eq(vm:disk("data"), disk)
end)
]])
    return d
end

test("a fixture holds a formatted disk; each file restores it apart; reset_between_tests too", function(t)
    local d = project()
    local out, code = meta.provium({ "-q", "-j1", "a.test.lua", "b.test.lua", "reset.test.lua" }, { cwd = d })
    t:log(out)
    t:assert_eq(code, 0)
    t:assert_contains(out, "4 passed, 0 failed")
    local p = io.popen("ls " .. meta.quote(d .. "/cache") .. "/*/disk-data")
    local frozen = p:read("l")
    p:close()
    t:assert(frozen, "the cached fixture holds its frozen disk")
    local sum = sha(frozen)
    -- the cache is warm: both files restore the same entry, which stays as it was
    out, code = meta.provium({ "-q", "-j2", "a.test.lua", "b.test.lua" }, { cwd = d })
    t:log(out)
    t:assert_eq(code, 0)
    t:assert_contains(out, "2 passed, 0 failed")
    t:assert_eq(sha(frozen), sum, "the cached fixture's disk is unchanged")
    -- a frozen disk written after the fact: the entry is dropped and built again
    local function inode()
        local p = io.popen("stat -c %i " .. meta.quote(frozen))
        local i = p:read("l")
        p:close()
        return i
    end
    local before = inode()
    os.execute("touch " .. meta.quote(frozen))
    out, code = meta.provium({ "-q", "-j1", "a.test.lua" }, { cwd = d })
    t:log(out)
    t:assert_eq(code, 0)
    t:assert_contains(out, "1 passed, 0 failed")
    t:assert_neq(inode(), before, "the damaged entry was built again")
    meta.rmdir(d)
end)
