-- Run by bench/boot: cold boots (not from the boot cache) of the default profile to the first agent
-- reply, interleaved with the baseline (the same QEMU and kernel booting a
-- one-file initrd whose /init powers off at once), then round trips.
local N = tonumber(os.getenv("BENCH_N") or "7")
local baseline_cmd = os.getenv("BENCH_BASELINE") -- a shell command timing one baseline boot

local stats = require("stats")
local median = stats.median

local function baseline()
    local p = io.popen(baseline_cmd)
    local s = tonumber(p:read("a"))
    p:close()
    return s
end

test("boot", function(t)
    local boots, bases = {}, {}
    for i = 1, N do
        bases[#bases + 1] = baseline()
        local t0 = _provium_c.now()
        local vm = provium:vm("b" .. i, "default"):boot { cold = true }
        vm:ping()
        boots[#boots + 1] = _provium_c.now() - t0
        vm:shutdown()
    end
    local b, base = median(boots), median(bases)
    print(("cold boot to first agent reply: median %.3f s  (%d runs: %s)"):format(b, N,
        table.concat((function() local o = {} for _, x in ipairs(boots) do o[#o + 1] = ("%.2f"):format(x) end return o end)(), " ")))
    print(("baseline boot to poweroff:      median %.3f s  (same QEMU, kernel, cmdline; /init powers off)"):format(base))
    print(("ratio boot/baseline:            %.2f   (target <= 1.10; boot target <= 2.0 s under TCG)"):format(b / base))
end)

test("round trips", function(t)
    local vm = provium:vm("rt", "default"):boot()
    local pings, runs = {}, {}
    for i = 1, 200 do
        local t0 = _provium_c.now()
        vm:ping()
        pings[#pings + 1] = _provium_c.now() - t0
    end
    for i = 1, 30 do
        local t0 = _provium_c.now()
        vm:run("true")
        runs[#runs + 1] = _provium_c.now() - t0
    end
    local sys = {}
    for i = 1, 200 do
        local t0 = _provium_c.now()
        vm:syscall(provium.sys.getpid)
        sys[#sys + 1] = _provium_c.now() - t0
    end
    print(("protocol ping round trip:       median %.3f ms (200 runs)"):format(median(pings) * 1000))
    print(("vm:syscall(getpid) round trip:  median %.3f ms (200 runs)"):format(median(sys) * 1000))
    print(("vm:run(\"true\") round trip:      median %.3f ms (30 runs)"):format(median(runs) * 1000))
end)
