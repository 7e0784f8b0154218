-- Plain disks (docs/disks.md#plain-disks): QEMU opens the image itself, a
-- raw one with `plain = true`, a qcow2 one always; at boot and hot-plugged.
-- A qcow2 image that does not exist is made (qemu-img). Faults and
-- mediation need a disk Provium serves, and say so; snapshots freeze a
-- plain disk's image, and a restore gives a qcow2 one an overlay of its own.
provium:claim { memory = "400M", cpus = 1 }
local meta = require("lib.meta")

local dir = meta.tmpdir()
local raw_img, qcow_img = dir .. "/p.img", dir .. "/q.qcow2"

-- qemu-img info --output=json of path: its format and virtual size
local function info(path)
    local p = io.popen("qemu-img info -U --output=json " .. meta.quote(path))
    local out = p:read("a")
    p:close()
    return out:match('"format": "([^"]+)"'), tonumber(out:match('"virtual%-size": (%d+)')),
        out:match('"backing%-filename"')
end

local function sha(path)
    local p = io.popen("sha256sum " .. meta.quote(path))
    local out = p:read("a")
    p:close()
    return out:match("^%x+")
end

local vm = provium:vm("a", "default", { memory = "256M" })
local raw = vm:attach_disk { id = "raw", image = raw_img, size = "8M", plain = true }
local q = vm:attach_disk { id = "q", image = qcow_img, format = "qcow2", size = "16M" } -- made here
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
    t:assert_eq(q:size(), 16 * 1024 * 1024) -- the disk's size, not the image file's
    sh("printf Q | dd of=/dev/vdb bs=512 seek=7 conv=fsync 2>/dev/null")
    vm:kill()
    vm:boot()
    t:assert_eq(sh("dd if=/dev/vdb bs=512 skip=7 count=1 iflag=direct 2>/dev/null | head -c 1"), "Q")
    t:assert_contains(err(function() q:read_sectors(0, 1) end), "a qcow2 image: the host's sector access needs a raw one")
end)

test("a qcow2 image that does not exist is made at its size, and is a qcow2", function(t)
    local fmt, size = info(qcow_img)
    t:assert_eq(fmt, "qcow2")
    t:assert_eq(size, 16 * 1024 * 1024)
    local img = dir .. "/hot.qcow2"
    local h = vm:attach_disk { id = "hot", image = img, format = "qcow2", size = "24M" }
    local dev = h:device():sub(6)
    t:assert_eq(sh("cat /sys/block/" .. dev .. "/serial"), "hot")
    t:assert_eq(sh("cat /sys/block/" .. dev .. "/size"), tostring(24 * 2048) .. "\n")
    sh("printf hotdata | dd of=/dev/" .. dev .. " bs=512 seek=100 conv=fsync 2>/dev/null")
    sh("echo 3 > /proc/sys/vm/drop_caches")
    t:assert_eq(sh("dd if=/dev/" .. dev .. " bs=512 skip=100 count=1 iflag=direct 2>/dev/null | head -c 7"), "hotdata")
    h:detach()
    t:assert(h:is_detached())
    fmt, size = info(img)
    t:assert_eq(fmt, "qcow2")
    t:assert_eq(size, 24 * 1024 * 1024)
end)

test("a qcow2 image that cannot be made: the error names it, and nothing is left", function(t)
    local function err(fn) return t:assert_raises(fn) end
    t:assert_contains(err(function() vm:attach_disk { id = "m", image = dir .. "/no/such/dir.qcow2", format = "qcow2" } end),
        "vm:attach_disk: disk image " .. dir .. "/no/such/dir.qcow2: creating it: No such file or directory")
    t:assert_contains(err(function() vm:attach_disk { id = "m", image = dir .. "/x.qcow2", format = "qcow2", size = "12x" } end),
        "vm:attach_disk: size must be bytes or a size like \"64M\", got 12x")
    -- qemu-img refuses a size past qcow2's limit: its words, and no file
    t:assert_contains(err(function() vm:attach_disk { id = "m", image = dir .. "/big.qcow2", format = "qcow2", size = "10000T" } end),
        "vm:attach_disk: disk image " .. dir .. "/big.qcow2: creating it: qemu-img create exited with status 1 saying: The image size is too large for file format 'qcow2'")
    local p = io.popen("ls -A " .. meta.quote(dir))
    local left = p:read("a")
    p:close()
    t:assert(not left:find("big") and not left:find("x.qcow2") and not left:find("%.provium"), "left behind: " .. left)
    t:assert_eq(#vm:disks(), 2)
end)

test("faults and mediation need a disk Provium serves", function(t)
    local function err(fn) return t:assert_raises(fn) end
    t:assert_contains(err(function() raw:fault_inject("eio_read") end),
        "disk:fault_inject: the disk is plain (QEMU opens it itself)")
    t:assert_contains(err(function() vm:attach_disk { id = "m", plain = true, mediated = true } end),
        "a plain disk cannot be mediated")
    t:assert_eq(vm:state(), "booted", "the VM goes on")
end)

test("a snapshot holds plain disks; a restore sees them as they were", function(t)
    sh("printf before | dd of=/dev/vda bs=512 seek=9 conv=fsync 2>/dev/null")
    sh("printf before | dd of=/dev/vdb bs=512 seek=9 conv=fsync 2>/dev/null")
    local snap = vm:snapshot()
    local frozen_q = snap:path() .. "/disk-q"
    t:assert_eq((info(frozen_q)), "qcow2")
    local sum = sha(frozen_q)
    sh("printf after! | dd of=/dev/vda bs=512 seek=9 conv=fsync 2>/dev/null")
    sh("printf after! | dd of=/dev/vdb bs=512 seek=9 conv=fsync 2>/dev/null")
    for round = 1, 2 do
        vm:kill()
        vm:restore(snap)
        t:assert_eq(sh("dd if=/dev/vda bs=512 skip=9 count=1 iflag=direct 2>/dev/null | head -c 6"), "before")
        t:assert_eq(sh("dd if=/dev/vdb bs=512 skip=9 count=1 iflag=direct 2>/dev/null | head -c 6"), "before")
        sh("printf round" .. round .. " | dd of=/dev/vdb bs=512 seek=9 conv=fsync 2>/dev/null")
        t:assert_eq(vm:disk("q"), q, "the Disk goes on")
    end
    t:assert_eq(sha(frozen_q), sum, "the frozen qcow2 image is unchanged")
    -- the raw one comes back served by Provium: the host reads it, faults act
    t:assert_eq(raw:read_sectors(9, 1):sub(1, 6), "before")
    raw:fault_inject("eio_read")
    t:assert(vm:run("dd if=/dev/vda of=/dev/null bs=4k count=1 iflag=direct").exit_code ~= 0)
    raw:clear_faults()
    t:assert_contains(t:assert_raises(function() q:read_sectors(0, 1) end), "a qcow2 image: the host's sector access needs a raw one")
    -- the user's images are as the guest left them before the restores
    t:assert_eq(io.open(raw_img, "rb"):read(9 * 512 + 6):sub(-6), "after!")
    -- a snapshot of the restored VM: the overlay and its base, one image
    local again = vm:snapshot()
    local fmt, size, backing = info(again:path() .. "/disk-q")
    t:assert_eq(fmt, "qcow2")
    t:assert_eq(size, 16 * 1024 * 1024)
    t:assert(not backing, "the frozen image stands alone")
    sh("printf later | dd of=/dev/vdb bs=512 seek=9 conv=fsync 2>/dev/null")
    vm:kill()
    vm:restore(again)
    t:assert_eq(sh("dd if=/dev/vdb bs=512 skip=9 count=1 iflag=direct 2>/dev/null | head -c 6"), "round2")
end)

test("a qcow2 image over a backing file cannot be frozen: the error says why", function(t)
    local base, top = dir .. "/base.qcow2", dir .. "/top.qcow2"
    os.execute(("qemu-img create -q -f qcow2 %s 4M && qemu-img create -q -f qcow2 -b %s -F qcow2 %s"):format(
        meta.quote(base), meta.quote(base), meta.quote(top)))
    local d = vm:attach_disk { id = "top", image = top, format = "qcow2" }
    t:assert_contains(t:assert_raises(function() vm:snapshot() end),
        "disk `top`: freezing the disk into")
    t:assert_contains(t:assert_raises(function() vm:snapshot() end),
        "its qcow2 image has a backing file or an external data file")
    t:assert_eq(vm:state(), "booted", "the VM goes on")
    d:detach()
end)

test("reset_between_tests and a fixture carry plain disks", function(t)
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/fixtures")
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\n')
    local setup = [[
local vm = provium:vm("p", "default", { memory = "256M" })
vm:attach_disk { id = "q", image = "q.qcow2", format = "qcow2", size = "8M" }
vm:attach_disk { id = "r", image = "r.img", size = "8M", plain = true }
vm:boot()
vm:run({ "sh", "-c", "printf base | dd of=/dev/vda conv=fsync 2>/dev/null && printf base | dd of=/dev/vdb conv=fsync 2>/dev/null" }):assert_ok()
]]
    meta.write(d .. "/fixtures/plain.fixture.lua", setup .. "return vm:snapshot()\n")
    local check = [[
local function head(dev) return vm:run({ "sh", "-c", "dd if=" .. dev .. " bs=512 count=1 iflag=direct 2>/dev/null | head -c 4" }).stdout end
test("writes", function(t)
    t:assert_eq(head("/dev/vda"), "base")
    vm:run({ "sh", "-c", "printf mine | dd of=/dev/vda conv=fsync 2>/dev/null && printf mine | dd of=/dev/vdb conv=fsync 2>/dev/null" }):assert_ok()
end)
test("starts from the baseline's disks", function(t)
    t:assert_eq(head("/dev/vda"), "base")
    t:assert_eq(head("/dev/vdb"), "base")
end)
]]
    meta.write(d .. "/reset.test.lua", "provium.reset_between_tests = true\n" .. setup .. check)
    meta.write(d .. "/fix.test.lua", 'provium.reset_between_tests = true\nlocal vm = provium:vm_fixture("fixtures/plain")\n' .. check)
    local out, code = meta.provium({ "-q", "-j1", "reset.test.lua", "fix.test.lua" }, { cwd = d })
    t:log(out)
    t:assert_eq(code, 0)
    t:assert_contains(out, "4 passed, 0 failed")
    local p = io.popen("ls -A " .. meta.quote(d))
    local left = p:read("a")
    p:close()
    t:assert(not left:find("%.provium"), "left behind: " .. left)
end)
