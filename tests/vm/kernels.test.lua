-- Where the default profile's kernel finds its modules (docs/kernels.md).
local meta = require("lib.meta")

local function kernel_path(env)
    local out, code = meta.provium({ "kernel", "path" }, { env = env })
    return out, code
end

test("PROVIUM_KERNEL finds its modules beside it; a kernel without them says so", function(t)
    local out = kernel_path()
    local kernel, modules = out:match("^([^\n]*)\n([^\n]*)\n")
    if not modules or modules == "" then t:skip("the default kernel has no modules directory") end
    local code
    -- PROVIUM_KERNEL is taken with its links resolved (a suite's cache links
    -- its kernel in: tests/lib/suite_cache.sh)
    local function real(path)
        local p = io.popen("realpath " .. meta.quote(path))
        local r = p:read("l")
        p:close()
        return r
    end
    -- PROVIUM_MODULES empty: the run's own (bench/suite sets it) must not answer
    out, code = kernel_path({ PROVIUM_KERNEL = kernel, PROVIUM_MODULES = "" })
    t:assert_eq(code, 0, out)
    t:assert_eq(out, real(kernel) .. "\n" .. real(modules) .. "\n", "found beside the bzImage")
    -- a copy elsewhere: nothing beside it, and the host has no such /lib/modules
    local version = modules:match("([^/]+)$")
    if io.open("/lib/modules/" .. version .. "/modules.dep") then
        t:skip("the host has /lib/modules/" .. version)
    end
    local d = meta.tmpdir()
    os.execute(("cp %s %s/vmlinuz"):format(meta.quote(kernel), meta.quote(d)))
    -- a cache of its own: the initrd without modules is no other test's
    local env = { PROVIUM_KERNEL = d .. "/vmlinuz", PROVIUM_MODULES = "", PROVIUM_CACHE = d .. "/cache" }
    out, code = kernel_path(env)
    t:assert_eq(out, d .. "/vmlinuz\n\n")
    -- the agent says what is missing at once: no waiting for the deadline
    meta.write(d .. "/k.test.lua",
        'provium:vm("a", "default", { agent_timeout = 600, cold = true }):boot()\n')
    out, code = meta.provium({ "k.test.lua" }, { cwd = d, env = env })
    t:assert_eq(code, 1, out)
    t:assert_contains(out, "vm `a`: the agent cannot start: no virtio port org.provium.agent: the kernel has no virtio_pci driver")
    t:assert_contains(out, "(booted without a modules directory, docs/kernels.md)")
    meta.rmdir(d)
end)
