-- Opt-in kmemleak (docs/splats.md#kmemleak): with meta.kmemleak or
-- --kmemleak, a test's VMs are scanned after it, and each unreferenced
-- object the kernel's leak detector reports fails the test.
local C = _provium_c
local P = _provium
local K = {}
P.kmemleak = K

local FILE = "/sys/kernel/debug/kmemleak"

-- kmemleak reports an object only once it is older than this (the kernel's
-- MSECS_MIN_AGE) and unchanged since the scan before.
local MIN_AGE = 5

-- The leaks in what FILE reads: {title =, excerpt =} each, titled as the
-- splat scanner titles a kmemleak report ("memory leak in f", f the first
-- frame of the backtrace that is not the allocator's).
function K.parse(text)
    local out = {}
    for _, sp in ipairs(P.splat.scan(text)) do
        if sp.title:find("^memory leak") then
            out[#out + 1] = { title = sp.title, excerpt = sp.excerpt }
        end
    end
    return out
end

-- Whether a test runs with kmemleak: its meta.kmemleak, else --kmemleak.
function K.wanted(meta)
    if meta.kmemleak ~= nil then return meta.kmemleak == true end
    return os.getenv("PROVIUM_KMEMLEAK") == "1"
end

-- Make FILE reachable on vm (debugfs mounted), or raise naming the Kconfig
-- option a kernel without it lacks.
local function reach(vm)
    if vm:exists(FILE) then return end
    vm:run({ "mount", "-t", "debugfs", "debugfs", "/sys/kernel/debug" })
    if not vm:exists(FILE) then
        error(("vm `%s`: kmemleak: %s is absent: the kernel was built without " ..
            "CONFIG_DEBUG_KMEMLEAK (docs/kernels.md#kmemleak)"):format(vm:name(), FILE), 0)
    end
end

-- Before a test (or right after a boot during it): what kmemleak has found
-- so far is no longer reported, so only the test's own leaks count.
function K.start(vm)
    if vm:state() ~= "booted" then return end
    reach(vm)
    vm:write_file(FILE, "scan")
    vm:write_file(FILE, "clear")
end

-- After a test: vm's new leaks, as {kind = "leak", title =, excerpt =, vm =}.
-- Two scans MIN_AGE apart, as an object must be seen unchanged by two scans
-- and be old enough to be reported.
function K.finish(vm)
    if vm:state() ~= "booted" then return {} end
    reach(vm)
    vm:write_file(FILE, "scan")
    C.sleep(MIN_AGE)
    vm:write_file(FILE, "scan")
    local out = {}
    for _, l in ipairs(K.parse(vm:read_file(FILE))) do
        out[#out + 1] = { kind = "leak", title = l.title, excerpt = l.excerpt, vm = vm:name() }
    end
    return out
end

-- A VM booted while a kmemleak test runs starts clean too (its boot's own
-- leaks are not the test's).
K.active = false
local V = C.vm_mt.__index
local boot = V.boot
function V:boot(...)
    if not K.active then return boot(self, ...) end
    local ok, r = pcall(boot, self, ...)
    if not ok then P.rethrow(r, 2) end
    K.start(self)
    return r
end
