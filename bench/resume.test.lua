-- Run by bench/boot: every kind of restore against a cold boot, to the
-- first agent reply, interleaved: a boot from the boot cache, a fixture
-- (provium:vm_fixture), vm:restore of a snapshot taken in this run, one
-- reset_between_tests step (kill, restore into the standby QEMU started
-- while the test ran; without one, as vm:restore). For each, the page faults
-- QEMU took by then (from /proc/<pid>/stat): a restore maps the saved RAM,
-- so it faults in only what the guest touches. Then what a snapshot costs
-- to take and on disk. docs/boot-cache.md holds the figures.
local N = tonumber(os.getenv("BENCH_N") or "7")

local C = _provium_c
local stats = require("stats")
local median = stats.median

-- seconds from start to the first reply, and QEMU's minor faults by then
local function first_reply(vm, start)
    local t0 = C.now()
    start()
    vm:ping()
    local s = C.now() - t0
    return s, (C.qemu_faults(vm))
end

test("every restore against a cold boot", function(t)
    local src = provium:vm("src", "default"):boot()
    src:run("mkdir -p /opt/app && dd if=/dev/urandom of=/opt/app/data bs=1M count=8 2>/dev/null")
        :assert_ok()
    local snap
    local saves = {}
    for i = 1, 3 do saves[i] = stats.timed(function() snap = src:snapshot() end) end
    src:shutdown()
    provium:vm_fixture("fixtures/prepared"):kill() -- built now if the cache lacks it
    local kinds = { "cold boot", "boot cache", "fixture", "vm:restore", "reset step" }
    local secs, faults = {}, {}
    for _, k in ipairs(kinds) do secs[k], faults[k] = {}, {} end
    local function record(kind, s, f)
        secs[kind][#secs[kind] + 1] = s
        faults[kind][#faults[kind] + 1] = f
    end
    for i = 1, N do
        local vm = provium:vm("c" .. i, "default")
        record("cold boot", first_reply(vm, function() vm:boot { cold = true } end))
        vm:kill()
        vm = provium:vm("bc" .. i, "default")
        record("boot cache", first_reply(vm, function() vm:boot() end))
        vm:kill()
        local fx
        local s = C.now()
        fx = provium:vm_fixture("fixtures/prepared")
        fx:ping()
        record("fixture", C.now() - s, (C.qemu_faults(fx)))
        fx:kill()
        vm = provium:vm("r" .. i, "default")
        record("vm:restore", first_reply(vm, function() vm:restore(snap) end))
        C.standby(vm, snap:path())
        vm:run("true") -- the test
        record("reset step", first_reply(vm, function()
            vm:kill()
            vm:restore(snap)
        end))
        vm:kill()
    end
    local cold = median(secs["cold boot"])
    for _, k in ipairs(kinds) do
        local m = median(secs[k])
        print(("%-11s to first reply: median %.3f s  %5.1fx faster than a cold boot; QEMU minor faults %d (%d runs, interleaved)")
            :format(k, m, cold / m, math.floor(median(faults[k])), N))
    end
    local pages = C.disk_usage(snap:path() .. "/pages")
    local devices = C.disk_usage(snap:path() .. "/devices")
    print(("vm:snapshot after 8 MiB written: median %.3f s (3 runs); on disk %.1f MiB of pages, %.0f KiB of devices, the RAM file shared"):format(
        median(saves), pages / 1048576, devices / 1024))
end)
