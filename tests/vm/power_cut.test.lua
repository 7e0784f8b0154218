-- Mediated disks and power cuts (docs/disks.md#mediated-disks-and-power-cuts):
-- a write the guest flushed survives a power cut, one it did not flush is
-- lost, and a cut with reorder = seed keeps the same writes every time. One
-- VM, booted again after each cut.
provium:claim { memory = "700M", cpus = 1 }

local vm = provium:vm("pc", "default", { memory = "256M" })
vm:boot { disks = { { id = "m", size = "16M", mediated = true } } }
local m = vm:disk("m")

local function sh(cmd)
    local r = vm:run({ "sh", "-c", cmd })
    r:assert_ok()
    return r.stdout
end

-- One 4 KiB block of byte c at 4 KiB block blk, written with O_DIRECT (it
-- reaches the disk, no flush), and flushed too with sync = true (fsync:
-- a FLUSH to the disk).
local function put(c, blk, sync)
    sh(("head -c 4096 /dev/zero | tr '\\0' %s | dd of=%s bs=4k seek=%d count=1 oflag=direct iflag=fullblock%s 2>/dev/null")
        :format(c, m:device(), blk, sync and " conv=fsync" or ""))
end

-- The first byte of block blk, as the guest reads it (no cache).
local function guest_byte(blk)
    return sh(("dd if=%s bs=4k skip=%d count=1 iflag=direct 2>/dev/null | head -c 1 | od -An -c")
        :format(m:device(), blk)):match("%S+")
end

test("a flushed write survives a power cut, an unflushed one is lost", function(t)
    put("A", 10, true)
    t:assert_eq(m:pending_writes().count, 0)
    put("B", 20, false)
    local p = m:pending_writes()
    t:assert(p.count >= 1 and p.bytes >= 4096, ("pending: %d writes, %d bytes"):format(p.count, p.bytes))
    t:assert_eq(guest_byte(20), "B")                     -- the guest reads its own write
    t:assert_eq(m:read_sectors(160, 8), ("\0"):rep(4096)) -- not in the image yet
    local r = m:power_cut()
    t:assert_eq(r.applied, 0)
    t:assert_eq(r.dropped, p.count)
    t:assert_eq(vm:state(), "shutdown")
    t:assert_eq(m:pending_writes().count, 0)
    t:assert_eq(m:read_sectors(80, 8), ("A"):rep(4096))
    t:assert_eq(m:read_sectors(160, 8), ("\0"):rep(4096))
    vm:boot()
    t:assert_eq(m:device(), "/dev/vda")
    t:assert_eq(guest_byte(10), "A")
    t:assert_eq(guest_byte(20), "\\0")
end)

test("reorder: one seed keeps the same writes twice", function(t)
    local letters = { "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p" }
    -- 16 unflushed blocks, then a cut: which survived, as a string of
    -- letters and dots
    local function round(seed)
        m:write_sectors(64 * 8, ("\0"):rep(16 * 4096))
        for i, c in ipairs(letters) do put(c, 64 + i - 1, false) end
        local held = m:pending_writes().count
        local r = m:power_cut { reorder = seed }
        t:assert_eq(r.applied + r.dropped, held)
        local got = {}
        for i, c in ipairs(letters) do
            local b = m:read_sectors((64 + i - 1) * 8, 8)
            t:assert(b == c:rep(4096) or b == ("\0"):rep(4096), "block " .. i .. " is whole or absent")
            got[i] = b:sub(1, 1) == c and c or "."
        end
        vm:boot()
        return table.concat(got), r
    end
    local s1, r1 = round(7)
    local s2, r2 = round(7)
    t:log(("seed 7 kept %s (%d applied, %d dropped)"):format(s1, r1.applied, r1.dropped))
    t:assert_eq(s2, s1)
    t:assert_eq(r2.applied, r1.applied)
    t:assert(s1:find("%a") and s1:find("%."), "a seed keeps some and drops some: " .. s1)
    t:assert_eq(guest_byte(64 + (s1:find("%a") - 1)), s1:match("%a")) -- the guest sees a survivor
end)

test("a shutdown commits what the disk holds", function(t)
    put("C", 30, false)
    t:assert(m:pending_writes().count >= 1)
    vm:shutdown()
    t:assert_eq(m:pending_writes().count, 0)
    t:assert_eq(m:read_sectors(240, 8), ("C"):rep(4096))
    vm:boot()
end)

test("bad options give the documented messages", function(t)
    t:assert_contains(t:assert_raises(function() m:power_cut { reorder = 1.5 } end),
        "disk:power_cut: reorder must be an integer seed, got 1.5")
    t:assert_contains(t:assert_raises(function() m:power_cut { seed = 1 } end),
        "disk:power_cut: unknown option `seed` (known: reorder)")
    t:assert_contains(t:assert_raises(function() vm:attach_disk { id = "x", mediated = "yes" } end),
        "vm:attach_disk: disk `x`: mediated must be a boolean, got string")
    t:assert_eq(vm:state(), "booted")
end)
