-- Attached disks (docs/disks.md): served by provium's NBD server, faults
-- the guest sees at once and recovers from, the host's own sector access,
-- hot-plug and unplug, sparse images, and the API's messages. One VM,
-- booted with four disks, serves every test.
provium:claim { memory = "700M", cpus = 1 }
local meta = require("lib.meta")

local function tmpfile(suffix)
    local p = os.tmpname()
    os.remove(p)
    return p .. suffix
end
local big_img = tmpfile(".img") -- no size given: 4 GiB, sparse
local ro_img = tmpfile(".img")
local f = assert(io.open(ro_img, "wb"))
f:write(("read-only image\n"):rep(64 * 1024)) -- 1 MiB
f:close()

local vm = provium:vm("a", "default", { memory = "256M" })
vm:boot {
    disks = {
        { id = "data", size = "64M" },
        { id = "fs", size = "32M" },
        { id = "big", image = big_img },
        { path = ro_img, format = "raw", readonly = true }, -- the seeds' form; id attached-a
    },
}
local data, fs = vm:disk("data"), vm:disk("fs")

-- A guest command's output; it must succeed.
local function sh(cmd)
    local r = vm:run({ "sh", "-c", cmd })
    r:assert_ok()
    return r.stdout
end

-- One direct read of 4 KiB at 4 KiB block `blk` of dev: the run result.
local function dd_read(dev, blk, count)
    return vm:run({ "sh", "-c", ("dd if=%s of=/dev/null bs=4k skip=%d count=%d iflag=direct 2>&1")
        :format(dev, blk, count or 1) })
end

test("the disks come in attach order, named by their id", function(t)
    t:assert_eq(data:device(), "/dev/vda")
    t:assert_eq(fs:device(), "/dev/vdb")
    t:assert_eq(vm:disk("big"):device(), "/dev/vdc")
    t:assert_eq(vm:disk("attached-a"):device(), "/dev/vdd")
    t:assert_eq(sh("cat /sys/block/vdb/serial"), "fs")
    t:assert_eq(sh("readlink /dev/disk/by-id/virtio-data"), "../../vda\n")
    t:assert_eq(#vm:disks(), 4)
    t:assert_eq(data:id(), "data")
    t:assert_eq(data:size(), 64 * 1024 * 1024)
    t:assert_eq(sh("cat /sys/block/vda/size"), tostring(64 * 2048) .. "\n")
end)

test("eio_read: the guest's read fails with EIO, and works again after clear_faults", function(t)
    dd_read("/dev/vda", 10):assert_ok()
    data:fault_inject("eio_read")
    t:assert_eq(data:active_faults()[1], "eio_read")
    local r = dd_read("/dev/vda", 10)
    t:assert_neq(r.exit_code, 0)
    t:assert_contains(r.stdout, "Input/output error")
    data:clear_faults()
    t:assert_eq(#data:active_faults(), 0)
    dd_read("/dev/vda", 10):assert_ok()
end)

test("a sector range limits the fault to those sectors", function(t)
    data:fault_inject("eio_read", { sectors = { 800, 8 } }) -- 4 KiB block 100
    t:assert_neq(dd_read("/dev/vda", 100).exit_code, 0)
    dd_read("/dev/vda", 99):assert_ok()
    dd_read("/dev/vda", 101):assert_ok()
    t:assert_raises(function() data:read_sectors(803, 1) end)
    t:assert_eq(#data:read_sectors(808, 1), 512)
    data:clear_faults()
end)

test("eio_write and eio_flush fail the guest's writes and syncs; torn_write lands half", function(t)
    data:fault_inject("eio_write")
    local r = vm:run({ "sh", "-c", "dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=50 oflag=direct 2>&1" })
    t:assert_neq(r.exit_code, 0)
    data:clear_faults()
    data:fault_inject("eio_flush")
    r = vm:run({ "sh", "-c", "dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=51 conv=fsync 2>&1" })
    t:assert_neq(r.exit_code, 0)
    data:clear_faults()
    sh("dd if=/dev/zero of=/dev/vda bs=4k count=1 seek=51 conv=fsync 2>&1")

    -- 8 sectors of 'B' over 'A': the first 4 land, then EIO
    data:write_sectors(1000, ("A"):rep(4096))
    data:fault_inject("torn_write", { sectors = { 1000, 8 } })
    r = vm:run({ "sh", "-c", "tr '\\0' B < /dev/zero | dd of=/dev/vda bs=4k count=1 seek=125 oflag=direct iflag=fullblock 2>&1" })
    t:assert_neq(r.exit_code, 0)
    data:clear_faults()
    local back = data:read_sectors(1000, 8)
    t:assert_eq(back, ("B"):rep(2048) .. ("A"):rep(2048))
end)

test("slow adds its latency to each guest read", function(t)
    local function time_reads()
        local t0 = _provium_c.now()
        dd_read("/dev/vda", 200, 10):assert_ok()
        return _provium_c.now() - t0
    end
    local base = time_reads()
    data:fault_inject("slow", { ms = 100 })
    local slow = time_reads()
    data:clear_faults()
    t:log(("10 direct reads: %.0f ms, with slow 100 ms: %.0f ms"):format(base * 1000, slow * 1000))
    -- dd reads one block after the other: each reply 100 ms late makes 1 s at least
    t:assert(slow >= 1.0, ("10 slowed reads took %.2f s, expected at least 1 s"):format(slow))
    t:assert(slow > base, ("slowed %.2f s, not slowed %.2f s"):format(slow, base))
    local t0 = _provium_c.now()
    data:fault_inject("slow") -- 50 ms by default, the host's reads too
    data:read_sectors(0, 1)
    t:assert(_provium_c.now() - t0 >= 0.05, "read_sectors slept")
    data:clear_faults()
end)

test("a write fault surfaces in the guest's ext2 as an I/O error in its kernel log", function(t)
    local dev = fs:device()
    sh("mke2fs -q " .. dev .. " && mkdir -p /mnt/fs && mount -t ext2 " .. dev .. " /mnt/fs")
    sh("echo before > /mnt/fs/a && sync")
    local before = #vm:kernel_log()
    fs:fault_inject("eio_write")
    vm:run({ "sh", "-c", "dd if=/dev/urandom of=/mnt/fs/b bs=64k count=8 2>/dev/null; sync" })
    fs:clear_faults()
    local log = vm:kernel_log():sub(before + 1)
    t:assert_contains(log, "I/O error")
    t:assert_contains(log, dev:match("vd%a"))
    vm:run({ "umount", "/mnt/fs" })
end)

test("host writes reach the guest, guest writes reach read_sectors", function(t)
    data:write_sectors(2048, "from the host\n")
    t:assert_eq(sh("dd if=/dev/vda bs=512 skip=2048 count=1 iflag=direct 2>/dev/null | head -c 14"), "from the host\n")
    sh("printf 'from the guest' | dd of=/dev/vda bs=512 seek=4096 conv=notrunc,fsync 2>/dev/null")
    t:assert_eq(data:read_sectors(4096, 1):sub(1, 14), "from the guest")
    local ro = vm:disk("attached-a")
    t:assert_eq(sh("cat /sys/block/vdd/ro"), "1\n")
    t:assert_eq(ro:read_sectors(0, 1):sub(1, 16), "read-only image\n")
    t:assert_neq(vm:run({ "sh", "-c", "echo x | dd of=/dev/vdd 2>&1" }).exit_code, 0)
    t:assert_contains(t:assert_raises(function() ro:write_sectors(0, "x") end), "read-only")
    os.remove(ro_img) -- the disk holds it open
end)

test("a 4 GiB image stays sparse", function(t)
    local big = vm:disk("big")
    t:assert_eq(big:size(), 4 * 1024 * 1024 * 1024)
    big:write_sectors(8 * 1024 * 1024 - 1, "the last sector")
    sh("dd if=/dev/urandom of=/dev/vdc bs=64k count=16 seek=1000 oflag=direct 2>/dev/null")
    local du = tonumber(io.popen("du -k " .. big_img):read("a"):match("^(%d+)"))
    t:assert(du < 4096, ("the image uses %d KiB"):format(du))
    t:assert_eq(big:read_sectors(8 * 1024 * 1024 - 1, 1):sub(1, 15), "the last sector")
    os.remove(big_img)
end)

test("hot-plug and detach on a running VM", function(t)
    local hot = vm:attach_disk { id = "hot", size = "16M" }
    t:assert_eq(hot:device(), "/dev/vde")
    t:assert_eq(sh("cat /sys/block/vde/serial"), "hot")
    hot:write_sectors(0, "hot plugged")
    t:assert_eq(sh("head -c 11 /dev/disk/by-id/virtio-hot"), "hot plugged")
    hot:detach()
    t:assert(hot:is_detached())
    hot:detach() -- idempotent
    t:assert(not vm:exists("/sys/block/vde"))
    t:assert(not vm:exists("/dev/disk/by-id/virtio-hot"))
    t:assert_contains(t:assert_raises(function() hot:read_sectors(0, 1) end),
        "disk:read_sectors: disk is detached")
    t:assert_contains(t:assert_raises(function() vm:disk("hot") end), "has no disk `hot`")
    -- its slot and name are free again
    local again = vm:attach_disk { id = "hot2", size = "1M" }
    t:assert_eq(again:device(), "/dev/vde")
    again:detach()
end)

test("bad input gives the documented messages", function(t)
    local function err(fn) return t:assert_raises(fn) end
    t:assert_contains(err(function() data:fault_inject("bogus") end),
        "disk:fault_inject: unknown mode `bogus` (valid: eio_read, eio_write, eio_flush, slow, torn_write)")
    t:assert_contains(err(function() data:fault_inject(42) end), "disk:fault_inject: mode must be a string, got number")
    t:assert_contains(err(function() data:fault_inject("slow", { ms = "x" }) end), "ms must be a number")
    t:assert_contains(err(function() data:fault_inject("eio_read", { sectors = { -1, 1 } }) end), "sectors.first must be an integer >= 0")
    t:assert_contains(err(function() data:fault_inject("eio_read", { bogus = 1 }) end), "unknown option `bogus`")
    t:assert_contains(err(function() data:read_sectors("a", 1) end),
        "disk:read_sectors: offset must be a non-negative integer (sectors), got a")
    t:assert_contains(err(function() data:read_sectors(64 * 2048, 1) end), "past the end of the image")
    t:assert_contains(err(function() data:write_sectors(0, 5) end), "disk:write_sectors: data must be a string, got number")
    t:assert_contains(err(function() vm:attach_disk("x") end), "vm:attach_disk: expected a table")
    t:assert_contains(err(function() vm:attach_disk { id = "bad id" } end), "id must be 1-20 letters")
    t:assert_contains(err(function() vm:attach_disk { id = "data" } end), "vm `a` has a disk `data` already")
    t:assert_contains(err(function() vm:attach_disk { id = "q", format = "qcow2" } end), "format qcow2 needs an image")
    t:assert_contains(err(function() vm:attach_disk { id = "q", format = "qcow2", image = "/x.qcow2", mediated = true } end),
        "a qcow2 image is opened by QEMU itself (a plain disk): faults and mediated need a raw image")
    t:assert_contains(err(function() vm:attach_disk { id = "q", format = "vmdk" } end), "format must be \"raw\" or \"qcow2\", got vmdk")
    t:assert_contains(err(function() vm:attach_disk { id = "q", size = "12x" } end), "size must be bytes or a size")
    t:assert_contains(err(function() vm:attach_disk { id = "q", sizes = 1 } end), "unknown field `sizes`")
    t:assert_contains(err(function() vm:disk("nope") end), "vm:disk: vm `a` has no disk `nope` (disks: data, fs, big, attached-a)")
    vm:pause()
    t:assert_contains(err(function() vm:attach_disk { id = "p", size = "1M" } end), "vm `a` is paused: resume it to plug disk `p` in")
    t:assert_contains(err(function() fs:detach() end), "vm `a` is paused: resume it to unplug disk `fs`")
    vm:resume()
    t:assert(not fs:is_detached())
    t:assert_eq(#vm:disks(), 4) -- nothing half-attached
end)

test("creation options attach disks; a VM that does not run detaches at once", function(t)
    local b = provium:vm("b", "default", { disks = { { id = "x", size = "1M" } } })
    local x = b:disk("x")
    t:assert_eq(x:size(), 1024 * 1024)
    t:assert_eq(x:device(), nil)
    x:write_sectors(1, "kept in the image")
    t:assert_eq(x:read_sectors(1, 1):sub(1, 17), "kept in the image")
    x:detach()
    t:assert_eq(#b:disks(), 0)
    for i = 1, 8 do b:attach_disk { id = "d" .. i, size = "1M" } end
    t:assert_contains(t:assert_raises(function() b:attach_disk { id = "d9", size = "1M" } end),
        "vm `b`: disk `d9`: a VM has at most 8 attached disks")
end)

test("the disks stay across a reboot, with their contents and names", function(t)
    vm:shutdown()
    vm:boot { disks = { { id = "data", size = "64M" } } } -- attached already: not again
    t:assert_eq(#vm:disks(), 4)
    t:assert_eq(data:device(), "/dev/vda")
    t:assert_eq(sh("dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 14"), "from the host\n")
    t:assert_eq(sh("readlink /dev/disk/by-id/virtio-fs"), "../../vdb\n")
end)

-- A profile with a disk of its own and no shell in the guest (the agent
-- only): the attached disk comes after the profile's, and is found by its
-- serial through the agent.
test("a profile's disk comes first; a guest without a shell still finds the disk", function(t)
    local p = io.popen(meta.quote(meta.bin) .. " kernel path")
    local kernel, modules = p:read("l"), p:read("l")
    p:close()
    local d = meta.tmpdir()
    local img = assert(io.open(d .. "/profile.img", "wb"))
    img:write(("p"):rep(1024 * 1024))
    img:close()
    meta.write(d .. "/provium.toml", ([[
[profile.bare]
kernel = "%s"
modules = "%s"
initrd = "none"   # the agent alone: no shell (docs/configuration.md)
disks = [{ path = "profile.img", readonly = true }]
]]):format(kernel, modules))
    meta.write(d .. "/b.test.lua", [[
test("order", function(t)
    local vm = provium:vm("c", "bare", { memory = "256M" })
    local x = vm:attach_disk { id = "extra", size = "1M" }
    vm:boot()
    t:assert_eq(x:device(), "/dev/vdb")
    t:assert_eq(vm:read_file("/sys/block/vdb/serial"), "extra")
    t:assert_eq(vm:read_file("/sys/block/vda/size"), "2048\n")
    t:assert(not vm:exists("/dev/disk/by-id/virtio-extra"), "no shell, no link")
end)
]])
    local out, code = meta.provium({ "b.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
end)
