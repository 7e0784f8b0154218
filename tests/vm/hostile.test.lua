-- A guest that misbehaves costs the test, not the run.

-- a bystander VM for the whole file, and one VM per test at a time
provium:claim{memory = "1152M", cpus = 2}

test("100 MiB on stdout is capped at 64 MiB, with a marker, without a hang", function(t)
    local vm = provium:vm("big", "default"):boot()
    local r = vm:run("head -c 104857600 /dev/zero")
    r:assert_ok()
    t:assert_eq(#r.stdout > 64 * 1024 * 1024, true, "the cap's worth arrived")
    t:assert(#r.stdout < 65 * 1024 * 1024, "and not more: " .. #r.stdout)
    t:assert_contains(r.stdout:sub(-80), "[provium: output truncated at 64 MiB of 104857600 bytes]")
end)

test("the agent killed inside the guest: the next op names the VM, no hang", function(t)
    local vm = provium:vm("victim", "default", { kernel_cmdline_append = "console=ttyS0" }):boot()
    -- the agent is the process that runs our commands' parent; kill it
    pcall(vm.run, vm, "kill -9 $PPID", { timeout = 10 })
    local t0 = os.time()
    local err = t:assert_raises(function() vm:run("true", { timeout = 20 }) end)
    t:assert_contains(err, "vm `victim`")
    t:assert(os.time() - t0 < 60, "failed promptly")
end)

test("a 17 MiB stdin fails before anything is sent, naming the limit; the VM goes on", function(t)
    local vm = provium:vm("bigin", "default"):boot()
    local t0 = _provium_c.now()
    local err = t:assert_raises(function()
        vm:run("cat", { stdin = string.rep("x", 17 * 1024 * 1024) })
    end)
    t:assert_contains(err, "vm `bigin`: run: the request is")
    t:assert_contains(err, "over the 16 MiB limit")
    -- refused on the host, not after a deadline (generous bound: a loaded machine)
    t:assert(_provium_c.now() - t0 < 10, "failed promptly")
    t:assert_eq(vm:run("echo still here").stdout, "still here\n")
    -- the same for a syscall buffer, through a worker too
    local w = vm:spawn_worker({})
    err = t:assert_raises(function()
        w:syscall(provium.sys.write, { args = { 1, 0, 0 }, bufs = { string.rep("y", 17 * 1024 * 1024) }, ptrs = { 1 } })
    end)
    t:assert_contains(err, "over the 16 MiB limit")
    t:assert_eq(w:run("echo ok").stdout, "ok\n")
end)

-- ---- An agent that breaks the protocol on purpose ----
--
-- VMs booted with provium.test_hostile=1 serve _provium_c.test_misbehave
-- (src/agent/hostile.c). Each mode: that VM's operation fails quickly with
-- an error naming it, the bystander VM of the file goes on working, and
-- provium's own memory stays bounded.

local meta = require("lib.meta")

local HOSTILE = { kernel_cmdline_append = "provium.test_hostile=1" }
-- Under TCG a failing call waits its timeout x3 (6 s here), a stalled frame
-- a few seconds more: anything near the 30 s or 120 s defaults is a hang.
local QUICK_S = 25
-- provium's RSS after each mode. Measured: 9 to 27 MiB after the protocol
-- modes, 79 MiB after the kernel log flood (kernel_log() makes a 41 MB Lua
-- string).
local RSS_MAX_MIB = 400

local bystander = provium:vm("bystander", "default"):boot()

local function rss_mib()
    for line in io.lines("/proc/self/status") do
        local kb = line:match("^VmRSS:%s+(%d+) kB")
        if kb then return tonumber(kb) / 1024 end
    end
    error("no VmRSS in /proc/self/status")
end

-- After each mode: the other VM works, and provium did not balloon.
local function others_fine(t, mode)
    t:assert_eq(bystander:run("echo fine").stdout, "fine\n", mode .. ": the bystander VM")
    local rss = rss_mib()
    t:log(("%s: provium's RSS %.0f MiB"):format(mode, rss))
    t:assert(rss < RSS_MAX_MIB, ("%s: provium's RSS is %.0f MiB, over %d"):format(mode, rss, RSS_MAX_MIB))
end

-- f() raises quickly, naming the VM; returns the message.
local function fails_quickly(t, name, what, f)
    local t0 = _provium_c.now()
    local err = t:assert_raises(f, what)
    local took = _provium_c.now() - t0
    t:assert_contains(err, "vm `" .. name .. "`")
    t:assert(took < QUICK_S, ("%s: failed after %.1f s"):format(what, took))
    return err
end

local function hostile(name)
    return provium:vm(name, "default", HOSTILE):boot()
end

test("test_misbehave is refused (ENOSYS) without provium.test_hostile=1", function(t)
    local err = t:assert_raises(function() _provium_c.test_misbehave(bystander, "garbage", 5) end)
    t:assert_contains(err, "vm `bystander`: test_misbehave: ENOSYS")
    others_fine(t, "refused")
end)

test("garbage: the call fails naming the VM; the next op reports it dead", function(t)
    local vm = hostile("garbage")
    local err = fails_quickly(t, "garbage", "the call", function() _provium_c.test_misbehave(vm, "garbage", 2) end)
    t:assert_contains(err, "malformed frame")
    err = fails_quickly(t, "garbage", "the next op", function() vm:run("true") end)
    t:assert_contains(err, "malformed frame")
    t:assert_eq(vm:state(), "dead")
    others_fine(t, "garbage")
end)

test("huge_len: a header over the cap breaks the connection at once", function(t)
    local vm = hostile("huge")
    local err = fails_quickly(t, "huge", "the call", function() _provium_c.test_misbehave(vm, "huge_len", 2) end)
    t:assert_contains(err, "malformed frame")
    fails_quickly(t, "huge", "the next op", function() vm:run("true") end)
    others_fine(t, "huge_len")
end)

test("wrong_id: 64 MiB of replies to ids never asked are dropped; the call times out", function(t)
    local vm = hostile("wrongid")
    local err = fails_quickly(t, "wrongid", "the call", function()
        _provium_c.test_misbehave(vm, "wrong_id", 2, 64 * 1024 * 1024, 5000)
    end)
    t:assert_contains(err, "timed out")
    -- the stray replies hurt nothing: the connection is sound
    t:assert_eq(vm:run("echo still here").stdout, "still here\n")
    others_fine(t, "wrong_id")
end)

test("mid_frame: an agent that stops part way through a frame fails the call and the next", function(t)
    local vm = hostile("midframe")
    local err = fails_quickly(t, "midframe", "the call", function() _provium_c.test_misbehave(vm, "mid_frame", 2) end)
    t:assert_contains(err, "part way through a frame")
    -- not a ping that waits its whole deadline for a reply read as the rest
    -- of the frame
    err = fails_quickly(t, "midframe", "the next op", function() vm:ping() end)
    t:assert_contains(err, "part way through a frame")
    t:assert_eq(vm:state(), "dead")
    others_fine(t, "mid_frame")
end)

test("die_mid_reply: the agent exits part way through a reply", function(t)
    local vm = hostile("diemid")
    fails_quickly(t, "diemid", "the call", function() _provium_c.test_misbehave(vm, "die_mid_reply", 2) end)
    fails_quickly(t, "diemid", "the next op", function() vm:run("true") end)
    t:assert_eq(vm:state(), "dead")
    others_fine(t, "die_mid_reply")
end)

test("flood_while_sending: Chunks flood in while a 6 MiB write goes out; it lands whole", function(t)
    local vm = hostile("floodsend")
    _provium_c.test_misbehave(vm, "flood_while_sending", 30, 200 * 1024 * 1024, 10000)
    local data = string.rep("0123456789abcdef", 6 * 1024 * 1024 // 16)
    vm:write_file("/tmp/big", data)
    t:assert_eq(vm:run("wc -c < /tmp/big").stdout, tostring(#data) .. "\n")
    others_fine(t, "flood_while_sending")
end)

-- The run directory's log files: none over the cap (64 MiB) by more than a
-- read's worth.
local function logs_bounded(t, vm, what)
    local dir = vm:console_socket_path():match("^(.*)/")
    local p = io.popen("stat -c '%s %n' " .. meta.quote(dir) .. "/*.log*")
    for line in p:lines() do
        local size, name = line:match("^(%d+) (.*)$")
        t:assert(tonumber(size) <= 65 * 1024 * 1024, ("%s: %s is %s bytes"):format(what, name, size))
    end
    p:close()
end

test("flood_console: the console log holds what came, in files of bounded size", function(t)
    local vm = hostile("floodcon")
    local before = #vm:console_log()
    -- A console under TCG takes 140 to 220 KB/s (serial or hvc): 15 s of it,
    -- far from the 64 MiB at which the log rotates (the kernel log below is
    -- the flood that reaches it).
    local t0 = _provium_c.now()
    _provium_c.test_misbehave(vm, "flood_console", 60, 300 * 1024 * 1024, 15000)
    local took = _provium_c.now() - t0
    local log = vm:console_log()
    t:log(("console: %d bytes in %.1f s"):format(#log - before, took))
    t:assert(#log - before > 100 * 1024, "the flood reached the console log: " .. (#log - before))
    t:assert(#log <= (64 + 16 + 1) * 1024 * 1024, "console_log() is bounded: " .. #log)
    logs_bounded(t, vm, "console flood")
    t:assert_eq(vm:run("echo after").stdout, "after\n")
    others_fine(t, "flood_console")
end)

test("a kernel log flood of 300 MiB: kmsg.log rotates, kernel_log() stays bounded", function(t)
    local vm = hostile("floodkmsg")
    -- debug level: the records reach the agent (Kmsg events), not the slow
    -- console; printk_devkmsg=on, or /dev/kmsg drops a writer past a burst
    local r = vm:run([[echo on > /proc/sys/kernel/printk_devkmsg
        line=$(printf '<7>provium kmsg flood %0900d' 0)
        i=0; while [ $i -lt 330000 ]; do echo "$line"; i=$((i+1)); done > /dev/kmsg]],
        { timeout = 600 })
    r:assert_ok()
    local log = vm:kernel_log()
    t:log(("kernel_log(): %d bytes"):format(#log))
    t:assert_contains(log, "earlier bytes of kmsg.log dropped")
    t:assert(#log <= (64 + 16 + 1) * 1024 * 1024, "kernel_log() is bounded: " .. #log)
    logs_bounded(t, vm, "kmsg flood")
    others_fine(t, "kmsg flood")
end)

test("a file whose VMs misbehave leaves nothing in $TMPDIR", function(t)
    local d, tmp = meta.tmpdir(), meta.tmpdir()
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\n')
    meta.write(d .. "/h.test.lua", [[
provium:claim{memory = "576M", cpus = 1}
for _, mode in ipairs({ "garbage", "huge_len", "mid_frame", "die_mid_reply" }) do
    test(mode, function(t)
        local vm = provium:vm("h", "default", { kernel_cmdline_append = "provium.test_hostile=1" }):boot()
        t:assert_raises(function() _provium_c.test_misbehave(vm, mode, 2) end)
        t:assert_raises(function() vm:run("true") end)
    end)
end
]])
    local out, code = meta.provium({ "-q", "h.test.lua" }, { cwd = d, env = { TMPDIR = tmp } })
    t:assert_eq(code, 0, out)
    t:assert_eq(io.popen("ls -A " .. meta.quote(tmp)):read("a"), "", "left in $TMPDIR")
end)
