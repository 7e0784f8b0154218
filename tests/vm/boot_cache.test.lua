-- The boot cache (docs/boot-cache.md): every boot of an unchanged
-- configuration resumes one saved boot, and looks fresh to the test.
local meta = require("lib.meta")

provium:claim { memory = "1100M", cpus = 1 }

local DUMP = meta.tests .. "/lib/events_dump.py"

-- The in-process tests need the run's boot cache (off under --no-boot-cache).
local function need_cache(t)
    if not _provium_c.boot_cache() then t:skip("this run has the boot cache off") end
end

test("a resumed boot looks fresh: clock, RNG, boot_id, files, logs", function(t)
    need_cache(t)
    local files = { { path = "etc/provium-test/conf", content = "x=1\n", mode = 416 } }
    local a = provium:vm("a", "default", { memory = "256M" }):boot { files = files }
    local b = provium:vm("b", "default", { memory = "256M" }):boot()
    t:assert(a:boot_cached() and b:boot_cached(), "both resumed the same cached boot")
    local now = a:clock():get()
    t:assert(math.abs(now - os.time()) < 30, ("the guest clock says now: %s vs %s"):format(now, os.time()))
    local function id(vm) return vm:read_file("/proc/sys/kernel/random/boot_id") end
    t:assert_neq(id(a), id(b), "each boot has its own boot_id")
    local function rand(vm) return vm:run("head -c 16 /dev/urandom | od -An -tx1").stdout end
    t:assert_neq(rand(a), rand(b), "each boot draws its own randomness")
    t:assert_eq(a:read_file("/etc/provium-test/conf"), "x=1\n")
    t:assert_eq(a:stat("/etc/provium-test/conf").perm, 416)
    t:assert_eq(b:exists("/etc/provium-test/conf"), false, "files are per boot")
    t:assert_contains(a:console():read_log(), "Linux version", "the console shows the boot")
    t:assert_contains(a:kernel_log(), "Linux version", "so does the kernel log")
    -- a reset reboots for real, with the boot's files in its initrd
    a:reset()
    t:assert_eq(a:read_file("/etc/provium-test/conf"), "x=1\n")
end)

test("initial_time, cold and option errors", function(t)
    need_cache(t)
    local vm = provium:vm("c", "default", { memory = "256M" }):boot { initial_time = 1e9 }
    t:assert(vm:boot_cached())
    t:assert(math.abs(vm:clock():get() - 1e9) < 30, "initial_time wins over now")
    vm:shutdown()
    vm:boot { cold = true }
    t:assert_eq(vm:boot_cached(), false)
    t:assert_contains(vm:console():read_log(), "Linux version")
    t:assert_contains(t:assert_raises(function() provium:vm("d", "default"):boot { cold = "yes" } end),
        "boot opts: cold must be a boolean, got string")
end)

-- A project of its own, so that its cache starts empty: n files that each
-- boot a plain default VM.
local function project(n, toml)
    local d = meta.tmpdir()
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\n' .. (toml or ""))
    for i = 1, n do
        meta.write(("%s/f%d.test.lua"):format(d, i), [[
local vm = provium:vm("v", "default"):boot()
test("up", function(t) t:assert_eq(vm:run("echo up").stdout, "up\n") end)
]])
    end
    return d
end

-- Run it: the vm_spawned events' boot_cache fields, the output, the status.
local function run(d, ...)
    local out, code = meta.provium({ "--save-events", "ev.bin", ..., "." }, { cwd = d })
    local spawned = {}
    local p = io.popen("/usr/bin/python3 " .. meta.quote(DUMP) .. " " .. meta.quote(d .. "/ev.bin"))
    for line in p:lines() do
        local e = json.decode(line)
        if e.kind == "vm_spawned" then spawned[#spawned + 1] = e.payload.boot_cache end
    end
    p:close()
    return spawned, out, code
end

local function boots(d)
    return io.popen("ls " .. meta.quote(d .. "/cache") .. " 2>/dev/null | grep -c '\\.boot$'"):read("l")
end

test("a suite's boots: saved once, then resumed; opting out boots cold", function(t)
    local d = project(3)
    local t0 = _provium_c.now()
    local spawned, out, code = run(d)
    local first = _provium_c.now() - t0
    t:assert_eq(code, 0, out)
    t:assert_eq(#spawned, 3, out)
    for _, c in ipairs(spawned) do t:assert_eq(c, true, "every boot is a resume, the first too") end
    t:assert_eq(boots(d), "1", "one configuration, one entry")
    t0 = _provium_c.now()
    spawned, out, code = run(d)
    t:log(("first run %.1fs, second %.1fs"):format(first, _provium_c.now() - t0))
    t:assert_eq(code, 0, out)
    t:assert_eq(table.concat({ tostring(spawned[1]), tostring(spawned[2]), tostring(spawned[3]) }, " "),
        "true true true")
    spawned, out, code = run(d, "--no-boot-cache")
    t:assert_eq(code, 0, out)
    for _, c in ipairs(spawned) do t:assert_eq(c, false, "--no-boot-cache") end
    meta.rmdir(d)

    d = project(1, "boot_cache = false\n")
    spawned, out, code = run(d)
    t:assert_eq(code, 0, out)
    t:assert_eq(spawned[1], false, "boot_cache = false in provium.toml")
    t:assert_eq(boots(d), "0")
    meta.rmdir(d)
end)

test("a resume's writes are its own: the entry's RAM file never changes", function(t)
    local d = project(1)
    local _, out, code = run(d)
    t:assert_eq(code, 0, out)
    local ram = io.popen("ls " .. meta.quote(d) .. "/cache/*.boot/ram"):read("l")
    local function sum() return io.popen("sha256sum " .. meta.quote(ram)):read("l"):match("^%x+") end
    local before = sum()
    meta.write(d .. "/f1.test.lua", [[
local vm = provium:vm("v", "default"):boot()
test("write", function(t)
    t:assert(vm:boot_cached())
    t:assert_eq(vm:exists("/root/big"), false, "a fresh machine, whatever the last resume wrote")
    vm:run("dd if=/dev/urandom of=/root/big bs=1M count=64"):assert_ok()
end)
]])
    for _ = 1, 2 do
        local spawned
        spawned, out, code = run(d)
        t:assert_eq(code, 0, out)
        t:assert_eq(spawned[1], true, out)
    end
    t:assert_eq(sum(), before, "the RAM file is as it was saved")
    meta.rmdir(d)
end)

test("the cache is its owner's alone: directories 0700, files 0600", function(t)
    local d = project(1)
    local _, out, code = run(d)
    t:assert_eq(code, 0, out)
    local entry = io.popen("ls -d " .. meta.quote(d) .. "/cache/*.boot"):read("l")
    local function mode(p) return io.popen("stat -c %a " .. meta.quote(p)):read("l") end
    -- the RAM file is the guest's memory: whatever it held (keys, passwords)
    t:assert_eq(mode(entry .. "/ram"), "600")
    t:assert_eq(mode(entry .. "/devices"), "600")
    t:assert_eq(mode(entry .. "/machine"), "600")
    t:assert_eq(mode(entry .. "/serial.log"), "600")
    t:assert_eq(mode(entry), "700")
    t:assert_eq(mode(d .. "/cache"), "700")
    t:assert_eq(mode(d .. "/cache/tmp"), "700")
    meta.rmdir(d)
end)

test("eviction skips a boot in use: a VM resumed from it holds it while it runs", function(t)
    local d = project(1)
    -- f1's VM resumes the entry, then runs until told to stop
    meta.write(d .. "/f1.test.lua", ([[
local vm = provium:vm("v", "default"):boot()
test("holds its entry", function(t)
    t:assert(vm:boot_cached())
    io.open("%s/booted", "w"):close()
    wait_until(function() return io.open("%s/done") ~= nil end, { timeout = 300 })
    t:assert_eq(vm:run("echo up").stdout, "up\n")
end)
]]):format(d, d))
    os.execute(("(cd %s && %s f1.test.lua > out1 2>&1; echo $? > status1) > /dev/null 2>&1 &")
        :format(meta.quote(d), meta.quote(meta.bin)))
    local function exists(p)
        local f = io.open(p)
        if f then f:close() end
        return f ~= nil
    end
    wait_until(function() return exists(d .. "/booted") or exists(d .. "/status1") end,
        { timeout = 300, desc = "f1's VM up" })
    -- another provium, whose start-up evicts all it can from the same cache
    meta.write(d .. "/small.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\ncache_max_size = "1"\n')
    local out, code = meta.provium({ "fixture", "list", "--config", "small.toml" }, { cwd = d })
    meta.write(d .. "/done", "") -- first: f1 must end whatever is asserted below
    wait_until(function() return exists(d .. "/status1") end, { timeout = 300, desc = "f1 done" })
    t:assert_eq(io.open(d .. "/status1"):read("l"), "0", io.open(d .. "/out1"):read("a"))
    t:assert_eq(code, 0, out)
    t:assert(out:match("MiB  boot %x+\n1 entries"), "the entry in use stays:\n" .. out)
    -- its VM is gone: now it goes
    out, code = meta.provium({ "fixture", "list", "--config", "small.toml" }, { cwd = d })
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "0 entries")
    t:assert_eq(io.popen("ls -A " .. meta.quote(d .. "/cache/tmp")):read("a"), "", "no work left")
    meta.rmdir(d)
end)

test("a cache that cannot take a boot costs one line, and the boots are cold", function(t)
    local d = project(2)
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "file/cache"\n')
    meta.write(d .. "/file", "not a directory\n")
    local spawned, out, code = run(d, "-j1")
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "provium: boot cache: vm `v`: boot not saved (Not a directory); booting cold")
    t:assert_eq(#spawned, 2, out)
    for _, c in ipairs(spawned) do t:assert_eq(c, false, out) end
    meta.rmdir(d)
end)

test("a damaged entry is dropped with a warning, and saved again", function(t)
    local d = project(1)
    local _, out, code = run(d)
    t:assert_eq(code, 0, out)
    -- the device state, cut short
    local dev = io.popen("ls " .. meta.quote(d) .. "/cache/*.boot/devices"):read("l")
    os.execute("truncate -s 1K " .. meta.quote(dev))
    local spawned
    spawned, out, code = run(d)
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "failed to resume")
    t:assert_contains(out, "devices does not match its hash in the snapshot); dropped, booting cold")
    t:assert_eq(spawned[#spawned], true, "the test got a resume of the new entry")
    local size = io.popen("stat -c %s " .. meta.quote(dev)):read("l")
    t:assert(tonumber(size) ~= 1024, "saved again: " .. size)
    -- the guest's RAM file, cut short
    local ram = dev:gsub("devices$", "ram")
    os.execute("truncate -s 1M " .. meta.quote(ram))
    spawned, out, code = run(d)
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "its guest RAM (ram) was changed or cut after the snapshot); " ..
        "dropped, booting cold")
    t:assert_eq(spawned[#spawned], true, "the test got a resume of the new entry")
    size = io.popen("stat -c %s " .. meta.quote(ram)):read("l")
    t:assert_eq(tonumber(size), 512 << 20, "saved again")
    t:assert_eq(io.popen("ls -A " .. meta.quote(d .. "/cache/tmp")):read("a"), "", "no work left")
    meta.rmdir(d)
end)
