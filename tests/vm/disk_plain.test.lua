-- Plain disks (docs/disks.md#plain-disks): QEMU opens the image itself, a
-- raw one with `plain = true`, a qcow2 one always; at boot and hot-plugged.
-- Faults, mediation and snapshots need a disk Provium serves, and say so.
provium:claim { memory = "400M", cpus = 1 }
local meta = require("lib.meta")

local dir = meta.tmpdir()
local raw_img, qcow_img = dir .. "/p.img", dir .. "/q.qcow2"
os.execute(("qemu-img create -q -f qcow2 %s 16M"):format(meta.quote(qcow_img)))

local vm = provium:vm("a", "default", { memory = "256M" })
local raw = vm:attach_disk { id = "raw", image = raw_img, size = "8M", plain = true }
local q = vm:attach_disk { id = "q", image = qcow_img, format = "qcow2" }
vm:boot()

local function sh(cmd)
    local r = vm:run({ "sh", "-c", cmd })
    r:assert_ok()
    return r.stdout
end

test("a raw plain disk: the guest and the host share the image", function(t)
    t:assert_eq(raw:device(), "/dev/vda")
    raw:write_sectors(4, "host")
    t:assert_eq(sh("dd if=/dev/vda bs=512 skip=4 count=1 iflag=direct 2>/dev/null | head -c 4"), "host")
    sh("printf guest | dd of=/dev/vda bs=512 seek=5 conv=fsync 2>/dev/null")
    t:assert_eq(raw:read_sectors(5, 1):sub(1, 5), "guest")
end)

test("a qcow2 disk: the guest sees its virtual size, and its writes stay across a boot", function(t)
    local function err(fn) return t:assert_raises(fn) end
    t:assert_eq(q:device(), "/dev/vdb")
    t:assert_eq(sh("cat /sys/block/vdb/size"), tostring(16 * 2048) .. "\n")
    sh("printf Q | dd of=/dev/vdb bs=512 seek=7 conv=fsync 2>/dev/null")
    vm:kill()
    vm:boot()
    t:assert_eq(sh("dd if=/dev/vdb bs=512 skip=7 count=1 iflag=direct 2>/dev/null | head -c 1"), "Q")
    t:assert_contains(err(function() q:read_sectors(0, 1) end), "a qcow2 image: the host's sector access needs a raw one")
end)

test("hot-plug and detach of a qcow2 disk", function(t)
    local img = dir .. "/hot.qcow2"
    os.execute(("qemu-img create -q -f qcow2 %s 4M"):format(meta.quote(img)))
    local h = vm:attach_disk { id = "hot", image = img, format = "qcow2" }
    t:assert_eq(sh("cat /sys/block/" .. h:device():sub(6) .. "/serial"), "hot")
    h:detach()
    t:assert(h:is_detached())
end)

test("faults, mediation and snapshots need a disk Provium serves", function(t)
    local function err(fn) return t:assert_raises(fn) end
    t:assert_contains(err(function() raw:fault_inject("eio_read") end),
        "disk:fault_inject: the disk is plain (QEMU opens it itself)")
    t:assert_contains(err(function() vm:attach_disk { id = "m", plain = true, mediated = true } end),
        "a plain disk cannot be mediated")
    t:assert_contains(err(function() vm:attach_disk { id = "m", image = dir .. "/none.qcow2", format = "qcow2" } end),
        "a qcow2 image is not created: make it with `qemu-img create -f qcow2`")
    t:assert_contains(err(function() vm:snapshot() end), "only a disk Provium serves can be snapshotted")
    t:assert_eq(vm:state(), "booted", "the VM goes on")
end)
