-- vm:snapshot and vm:restore (docs/snapshots.md): the
-- agent's state survives, live streams refuse, mismatches are named.
provium:claim { memory = "1500M", cpus = 1 }
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
    t:assert(snap:size() > 1024 * 1024, "the RAM file and the device state were written")
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
    -- a copy of a snapshot, damaged one way at a time (cp: the RAM file is
    -- not shared with the original, which must stay intact)
    local snap = vm:snapshot()
    vm:write_file("/tmp/after-snap", "x") -- pages the restore must put back
    local forged = snap:path() .. ".forged"
    local function forge(how)
        meta.sh("rm -rf " .. meta.quote(forged))
        meta.sh("cp -a --sparse=always " .. meta.quote(snap:path()) .. " " .. meta.quote(forged))
        how()
    end
    local function edit(name, fn)
        local f = io.open(forged .. "/" .. name, "rb")
        local text = f:read("a")
        f:close()
        f = io.open(forged .. "/" .. name, "wb")
        f:write(fn(text))
        f:close()
    end
    local cases = {
        { function() edit("machine", function(s) return (s:gsub('"qemu":"[^"]*"', '"qemu":"1.0.0"')) end) end,
            "was taken with QEMU 1.0.0, this is QEMU" },
        { function() meta.sh("truncate -s 1M " .. meta.quote(forged .. "/ram")) end,
            "its guest RAM (ram) was changed or cut after the snapshot" },
        { function() meta.sh("truncate -s 1K " .. meta.quote(forged .. "/devices")) end,
            "devices does not match its hash in the snapshot" },
        { function() meta.sh("rm " .. meta.quote(forged .. "/machine")) end, "holds no snapshot" },
        -- a page changed in place: found as the pages load, before the guest runs
        { function() edit("pages", function(s) return s:sub(1, 100) .. string.char(s:byte(101) ~ 0xff) .. s:sub(102) end) end,
            "pages does not match its hash in the snapshot" },
    }
    for _, c in ipairs(cases) do
        forge(c[1])
        local e = t:assert_raises(function() other:restore(forged) end)
        t:assert_contains(e, "vm `other`: restore")
        t:assert_contains(e, c[2])
        t:assert(other:state() ~= "booted", "not booted: " .. other:state())
    end
    meta.sh("rm -rf " .. meta.quote(forged))
    -- the original is intact
    other:restore(snap)
    t:assert_eq(other:run("echo ok").stdout, "ok\n")
    other:kill()
    t:assert_contains(t:assert_raises(function() vm:restore(snap) end),
        "restore() needs a created or shut-down VM, it is booted")
    t:assert_contains(t:assert_raises(function() other:restore(42) end),
        "expected a Snapshot or a path, got number")
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

test("lab:snapshot and lab:restore: every VM of a lab at once", function(t)
    local lab = provium:lab("pair")
    local a = lab:vm("la", "default", { memory = "256M" }):boot()
    local b = lab:vm("lb", "default", { memory = "256M" }):boot()
    a:write_file("/tmp/who", "a\n")
    b:write_file("/tmp/who", "b\n")
    local snap = lab:snapshot()
    t:assert(snap:size() > 2 * 1024 * 1024, "two machines saved")
    a:write_file("/tmp/who", "changed\n")
    lab:shutdown()
    lab:restore(snap)
    t:assert_eq(a:read_file("/tmp/who"), "a\n")
    t:assert_eq(b:read_file("/tmp/who"), "b\n")
    snap:delete()
    t:assert_eq(snap:size(), 0)
    -- with a directory: its path back, and restorable by path
    local dir = os.tmpname()
    os.remove(dir)
    t:assert_eq(lab:snapshot(dir), dir)
    lab:shutdown()
    lab:restore(dir)
    t:assert_eq(b:state(), "booted")
    setmetatable({ _path = dir }, _provium.LabSnapshot):delete()
    t:assert_contains(t:assert_raises(function() lab:restore(dir) end), "holds no lab.json")
    lab:shutdown()
end)

test("a standby QEMU serves the next restore of its snapshot, never a replaced one", function(t)
    local C = _provium_c
    local path = C.tempdir() .. "/s.snap"
    vm:write_file("/tmp/which", "first\n")
    vm:snapshot(path)
    local w = provium:vm("sb", "default")
    w:restore(path)
    local pid, why = C.standby(w, path)
    t:assert(pid, why)
    w:run("true")
    w:kill()
    w:restore(path)
    t:assert_eq(C.qemu_pid(w), pid, "the restore took the standby")
    t:assert_eq(w:read_file("/tmp/which"), "first\n")
    -- the snapshot replaced after the standby started: a new QEMU restores it
    pid, why = C.standby(w, path)
    t:assert(pid, why)
    vm:write_file("/tmp/which", "second\n")
    vm:snapshot(path)
    w:kill()
    w:restore(path)
    t:assert(C.qemu_pid(w) ~= pid, "not the standby of the old snapshot")
    t:assert_eq(w:read_file("/tmp/which"), "second\n")
    -- one that died is not taken either
    pid, why = C.standby(w, path)
    t:assert(pid, why)
    os.execute("kill -9 " .. pid)
    w:kill()
    w:restore(path)
    t:assert(C.qemu_pid(w) ~= pid)
    t:assert_eq(w:run("echo up").stdout, "up\n")
    w:kill()
end)
