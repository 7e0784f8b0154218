-- Run by bench/boot: issue 6's figures. Cold boots of the default profile
-- to the first agent reply, interleaved with restores of a snapshot of the
-- same VM (what a fixture resume does once the cache has the entry) and
-- with boots from the boot cache (a resume made fresh: clock, RNG); the
-- snapshot's size and the time it takes; the cost of one reset_between_tests
-- step (kill, restore).
local N = tonumber(os.getenv("BENCH_N") or "7")

local stats = require("stats")
local median = stats.median
local timed = stats.timed

test("resume against a cold boot", function(t)
    local base = provium:vm("base", "default"):boot { cold = true }
    local snap
    local saves = {}
    for i = 1, 3 do saves[i] = timed(function() snap = base:snapshot() end) end
    base:shutdown()
    provium:vm("warm", "default"):boot():shutdown() -- the boot cache has the entry
    local boots, restores, resets, cached = {}, {}, {}, {}
    for i = 1, N do
        boots[i] = timed(function()
            local vm = provium:vm("c" .. i, "default"):boot { cold = true }
            vm:ping()
            vm:shutdown()
        end)
        cached[i] = timed(function()
            local vm = provium:vm("bc" .. i, "default"):boot()
            vm:ping()
            vm:shutdown()
        end)
        local vm = provium:vm("r" .. i, "default")
        restores[i] = timed(function()
            vm:restore(snap)
            vm:ping()
        end)
        resets[i] = timed(function()
            vm:kill()
            vm:restore(snap)
            vm:ping()
        end)
        vm:shutdown()
    end
    -- the boots include the shutdown, the restores do not: take it out of the boots
    local down, cdown = {}, {}
    for i = 1, 3 do
        local vm = provium:vm("d" .. i, "default"):boot { cold = true }
        down[i] = timed(function() vm:shutdown() end)
        vm = provium:vm("cd" .. i, "default"):boot()
        cdown[i] = timed(function() vm:shutdown() end)
    end
    local b, r, k = median(boots) - median(down), median(restores), median(resets)
    local c = median(cached) - median(cdown)
    print(("cold boot to first agent reply: median %.3f s  (%d runs)"):format(b, N))
    print(("restore to first agent reply:   median %.3f s  (%d runs, interleaved)"):format(r, N))
    print(("boot-cache boot to first reply: median %.3f s  (%d runs, interleaved; resume + freshen)"):format(c, N))
    print(("ratio boot/restore:             %.1f   (target >= 10)"):format(b / r))
    print(("ratio boot/boot-cache boot:     %.1f"):format(b / c))
    print(("snapshot on disk:               %.1f MiB (zstd; a 512 MiB guest)"):format(snap:size() / 1048576))
    print(("vm:snapshot:                    median %.3f s  (3 runs)"):format(median(saves)))
    print(("reset_between_tests step:       median %.3f s  (kill + restore + first reply)"):format(k))
end)
