-- A kernel that cannot run the agent fails the boot at once, with the cause
-- (docs/kernels.md): before booting (a vmlinux, modules of another version,
-- the parent of the versioned folder), or from the agent's fatal line on
-- the console (a module that does not load, a driver that is not there).
-- Each boot is given 600 s for its agent: a failure that waited for it
-- would say "no agent within", not the cause.
local meta = require("lib.meta")

local kernel, modules = (function()
    local p = io.popen(meta.quote(meta.bin) .. " kernel path")
    local k, m = p:read("l"), p:read("l")
    p:close()
    return k, m
end)()
local version = modules and modules:match("([^/]+)$")

-- Run one file booting profile `k` of toml (or profile, when given) in a
-- scratch project; its output.
local function boot_fails(t, toml, env, profile)
    local d = meta.tmpdir()
    meta.write(d .. "/provium.toml", toml)
    meta.write(d .. "/k.test.lua", ([[
test("boot", function(t)
    provium:vm("a", %q, { agent_timeout = 600, cold = true }):boot()
end)
]]):format(profile or "k"))
    local out, code = meta.provium({ "k.test.lua" }, { cwd = d, env = env })
    t:assert_eq(code, 1, out)
    return out, d
end

-- A copy of the kernel's modules tree (links to its files) under
-- d/lib/modules/<name>.
local function modules_copy(d, name)
    local dst = d .. "/lib/modules/" .. name
    os.execute(("mkdir -p %s && cp -rs %s/. %s"):format(meta.quote(d .. "/lib/modules"),
        meta.quote(modules), meta.quote(dst)))
    return dst
end

test("a vmlinux (an ELF file) is refused before booting", function(t)
    local d = meta.tmpdir()
    os.execute(("cp %s %s/vmlinux"):format(meta.quote(meta.bin), meta.quote(d)))
    local out = boot_fails(t, ('[profiles.k]\nkernel = "%s/vmlinux"\n'):format(d))
    t:assert_contains(out, "vmlinux is an ELF file (a vmlinux?), not a bzImage: use arch/x86/boot/bzImage")
end)

test("modules of another version, and their parent folder, are refused before booting", function(t)
    if not version or version == "" then t:skip("the default kernel has no modules directory") end
    local d = meta.tmpdir()
    local other = modules_copy(d, "6.1.0-0-other-amd64")
    local out = boot_fails(t, ('[profiles.k]\nkernel = "%s"\nmodules = "%s"\n'):format(kernel, other))
    t:assert_contains(out, ("modules directory %s is of kernel 6.1.0-0-other-amd64, but %s is %s")
        :format(other, kernel, version))
    t:assert_contains(out, "make modules_install INSTALL_MOD_PATH=DIR")
    -- the parent: with the default profile and PROVIUM_MODULES, as a user sets it
    local right = modules_copy(d, version)
    out = boot_fails(t, '[provium]\n', { PROVIUM_KERNEL = kernel, PROVIUM_MODULES = d .. "/lib/modules" },
        "default")
    t:assert_contains(out, ("modules directory %s/lib/modules holds the modules of each version in a folder of its own: use %s")
        :format(d, right))
end)

test("a module the kernel refuses: the boot fails at once with the kernel's words", function(t)
    if not version or version == "" then t:skip("the default kernel has no modules directory") end
    local d = meta.tmpdir()
    local mods = modules_copy(d, version)
    -- virtio_console.ko replaced by bytes that are no module
    local ko = io.popen("find " .. meta.quote(mods) .. " -name 'virtio_console.ko*'"):read("l")
    t:assert(ko, "no virtio_console.ko in " .. modules)
    os.remove(ko)
    meta.write(ko, ("not a module\n"):rep(100))
    local out = boot_fails(t, ('[profiles.k]\nkernel = "%s"\nmodules = "%s"\n'):format(kernel, mods))
    t:assert_contains(out, "vm `a`: the agent cannot start: cannot load module /.provium/m/virtio_console.ko")
    t:assert(not out:find("no agent within"), out)
end)

test("a kernel whose virtio drivers are modules, booted without them: the agent says so at once", function(t)
    if not version or version == "" then t:skip("the default kernel has no modules directory") end
    local d = meta.tmpdir()
    -- a copy of the bzImage with nothing beside it; the host has no such /lib/modules
    if io.open("/lib/modules/" .. version .. "/modules.dep") then
        t:skip("the host has /lib/modules/" .. version)
    end
    os.execute(("cp %s %s/bzImage"):format(meta.quote(kernel), meta.quote(d)))
    local out = boot_fails(t, ('[profiles.k]\nkernel = "%s/bzImage"\n'):format(d))
    t:assert_contains(out, "vm `a`: the agent cannot start: no virtio port org.provium.agent: the kernel has no virtio_pci driver (is virtio_pci loaded?")
    t:assert_contains(out, "booted without a modules directory")
end)
