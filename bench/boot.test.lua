-- Run by bench/boot: cold boots (not from the boot cache) of the default profile to the first agent
-- reply, interleaved with bare baselines: the same QEMU and kernel booting a
-- one-file initrd whose /init powers off at once. The reference baseline is
-- QEMU's `pc` machine through its Linux loader (the bzImage); beside it the
-- `q35` machine that provium's VMs use, through the bzImage and through the
-- PVH entry (the ELF a cold boot unpacked, docs/boot-cache.md#the-cold-boot).
-- Then round trips.
local N = tonumber(os.getenv("BENCH_N") or "7")
local baseline_cmd = os.getenv("BENCH_BASELINE") -- a shell command timing one baseline boot

local stats = require("stats")
local median = stats.median

local function baseline(kernel, machine)
    local p = io.popen(("%s %s %s"):format(baseline_cmd, kernel or "''", machine or "pc"))
    local s = tonumber(p:read("a"))
    p:close()
    return s
end

-- the unpacked kernel of the cache, once a cold boot made it
local function pvh_elf()
    local root = (os.getenv("XDG_CACHE_HOME") or (os.getenv("HOME") .. "/.cache")) .. "/provium"
    local p = io.popen("ls " .. root .. "/pvh/*.elf 2>/dev/null")
    local path = p:read("l")
    p:close()
    return path
end

local function list(xs)
    local o = {}
    for _, x in ipairs(xs) do o[#o + 1] = ("%.2f"):format(x) end
    return table.concat(o, " ")
end

test("boot", function(t)
    local boots, bases, q35s, pvhs = {}, {}, {}, {}
    for i = 1, N do
        bases[#bases + 1] = baseline(nil, "pc")
        q35s[#q35s + 1] = baseline(nil, "q35")
        local elf = pvh_elf()
        if elf then pvhs[#pvhs + 1] = baseline(elf, "q35") end
        local t0 = _provium_c.now()
        local vm = provium:vm("b" .. i, "default"):boot { cold = true }
        vm:ping()
        boots[#boots + 1] = _provium_c.now() - t0
        vm:shutdown()
    end
    local b, base = median(boots), median(bases)
    print(("cold boot to first agent reply: median %.3f s  (%d runs: %s)"):format(b, N, list(boots)))
    print(("baseline boot to poweroff:      median %.3f s  (machine pc, the bzImage; same QEMU, kernel, cmdline; /init powers off; %s)"):format(base, list(bases)))
    print(("baseline on q35:                median %.3f s  (the same on provium's machine type; %s)"):format(median(q35s), list(q35s)))
    if #pvhs > 0 then
        print(("baseline on q35 through PVH:    median %.3f s  (-kernel the unpacked ELF; %s)"):format(median(pvhs), list(pvhs)))
        print(("ratio boot/q35 PVH baseline:    %.2f"):format(b / median(pvhs)))
    else
        print("baseline through PVH:           none (this kernel has no PVH entry: cold boots go through the bzImage)")
    end
    print(("ratio boot/q35 baseline:        %.2f"):format(b / median(q35s)))
    print(("ratio boot/baseline:            %.2f   (target <= 1.0)"):format(b / base))
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
