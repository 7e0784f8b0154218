-- vm:snapshot and vm:restore (reference §7.5, §13; docs/snapshots.md): the
-- agent's state survives, live streams refuse, mismatches are named.
provium:claim { memory = "1200M", cpus = 1 }
local meta = require("lib.meta")
local sys = provium.sys
local vm = provium:vm("s", "default"):boot()

test("a restored VM is the saved one: files, handles, fds and processes", function(t)
    vm:write_file("/tmp/marker", "before\n")
    local f = vm:open_file("/tmp/handle", { write = true, create = true })
    f:write("one ")
    local fd = vm:syscall(sys.dup, 0).ret
    t:assert(fd > 0, "a fd from a raw syscall")
    local p = vm:run_async("while :; do sleep 1; done")
    local pid = p:pid()
    local snap = vm:snapshot()
    t:assert(snap:size() > 1024 * 1024, "a migration stream was written")
    -- the VM goes on after a snapshot; change it, then go back
    vm:write_file("/tmp/marker", "after\n")
    vm:shutdown()
    local t0 = _provium_c.now()
    vm:restore(snap)
    local secs = _provium_c.now() - t0
    t:log(("restore to first agent reply: %.2fs (snapshot %d MiB)"):format(secs, snap:size() >> 20))
    t:assert_eq(vm:state(), "booted")
    t:assert_eq(vm:read_file("/tmp/marker"), "before\n")
    t:assert_eq(f:write("two"), 3, "the file handle still works")
    f:close()
    t:assert_eq(vm:read_file("/tmp/handle"), "one two")
    t:assert_eq(vm:syscall(sys.fcntl, fd, 1).errno, 0, "the raw fd is still open")
    t:assert_eq(p:status().running, true)
    t:assert_eq(p:pid(), pid)
    p:kill("kill")
    t:assert_eq(p:wait().signal, 9)
    snap:delete()
    t:assert_eq(snap:size(), 0)
end)

test("a snapshot restores into another VM of the same profile, beside the first", function(t)
    vm:write_file("/tmp/shared", "from s\n")
    local snap = vm:snapshot()
    local twin = provium:vm("twin", "default")
    twin:restore(snap)
    t:assert_eq(twin:read_file("/tmp/shared"), "from s\n")
    twin:write_file("/tmp/shared", "changed in twin\n")
    t:assert_eq(vm:read_file("/tmp/shared"), "from s\n", "two machines now")
    twin:shutdown()
end)

test("live streams refuse a snapshot, naming where they were opened", function(t)
    vm:write_file("/tmp/log", "x\n")
    local s = vm:tail_file("/tmp/log")
    local err = t:assert_raises(function() vm:snapshot() end)
    t:assert_contains(err, "vm:snapshot() refused — file `vm/snapshots.test.lua` has live streams:")
    t:assert_contains(err, '  - tail_file("/tmp/log") at vm/snapshots.test.lua:')
    t:assert_contains(err, "Close the streams before snapshotting")
    s:close()
    vm:snapshot():delete()
end)

test("restore refuses what it cannot use", function(t)
    local d = os.tmpname()
    local f = io.open(d, "w")
    f:write("not a snapshot\n")
    f:close()
    local other = provium:vm("other", "default")
    t:assert_contains(t:assert_raises(function() other:restore(d) end), "is not a provium snapshot")
    os.remove(d)
    -- a snapshot of another QEMU
    local snap = vm:snapshot()
    local src = io.open(snap:path(), "rb")
    local head = src:read("l") .. "\n" .. src:read("l") .. "\n"
    local body = src:read("a")
    src:close()
    local forged = snap:path() .. ".forged"
    local out = io.open(forged, "wb")
    out:write((head:gsub('"qemu":"[^"]*"', '"qemu":"1.0.0"')), body)
    out:close()
    t:assert_contains(t:assert_raises(function() other:restore(forged) end),
        "was taken with QEMU 1.0.0, this is QEMU")
    os.remove(forged)
    t:assert_contains(t:assert_raises(function() vm:restore(snap) end),
        "restore() needs a created or shut-down VM, it is booted")
    t:assert_contains(t:assert_raises(function() other:restore(42) end),
        "expected a Snapshot or a path, got number")
    t:assert_eq(other:state(), "created")
    snap:delete()
end)

test("reset_between_tests refuses a stream left open at file scope", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/s.test.lua", [[
provium.reset_between_tests = true
local vm = provium:vm("a", "default"):boot()
local log = vm:tail_file("/proc/uptime")
test("never runs", function() end)
]])
    local files, code = meta.json_run({ "s.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 1)
    local e = files["s.test.lua"].chunk_error
    t:assert_contains(e, "provium.reset_between_tests would auto-snapshot a live stream opened at file scope:")
    t:assert_contains(e, '  - tail_file("/proc/uptime") at s.test.lua:3')
end)
