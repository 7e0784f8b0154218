-- Symbolized stacks (docs/splats.md#symbolized-stacks): the frames of a
-- splat's excerpt get the file:line the module's debug info gives. Debian's
-- cloud kernel ships no vmlinux with debug info, so the kernel's own frames
-- stay as they are here (tests/lua/symbols.test.lua looks frames up in an
-- ELF file with DWARF built on the host); the example module, built
-- against the kernel's headers, carries its own (kbuild compiles with -g
-- under the kernel's CONFIG_DEBUG_INFO).
local meta = require("lib.meta")
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local src = here .. "/../../examples/module"

-- The line of provium_demo.c's WARN_ON, from the source.
local function warn_line(t)
    local n = 0
    for l in io.lines(src .. "/provium_demo.c") do
        n = n + 1
        if l:match("^%s*WARN_ON%(") then return n end
    end
    t:fail("no WARN_ON in provium_demo.c")
end

-- Trip the WARN_ON; the one splat it makes.
local function warn(t, vm)
    wait_until(function() return vm:exists("/dev/provium_demo") end, { desc = "/dev/provium_demo" })
    vm:write_file("/dev/provium_demo", "provium-warn")
    local s = vm:splats()
    t:assert_eq(#s, 1)
    t:assert_eq(s[1].title, "WARNING in demo_write")
    return s[1].excerpt
end

test("the module's WARN_ON names provium_demo.c and its line", { allow_kernel_warnings = true }, function(t)
    local vm = provium:vm("sym", "default"):boot()
    local ko = meta.build_module(t, src, "provium_demo", vm:kernel_release())
    vm:insmod(ko)
    local ex = warn(t, vm)
    local line = warn_line(t)
    -- the faulting instruction, exactly the WARN_ON's line
    local rip = ("RIP: %%x+:demo_write%%+0x%%x+/0x%%x+ %%[provium_demo%%] %%(provium_demo%%.c:%d%%)")
        :format(line)
    t:assert(ex:match(rip), "the RIP line names provium_demo.c:" .. line .. ":\n" .. ex)
    -- the kernel's frames: Debian ships its vmlinux's debug info apart
    t:assert(not ex:match("vfs_write%+0x%x+/0x%x+ %("), ex)
    vm:shutdown()
end)

test("without the module's .ko on the host, the excerpt stays as the kernel printed it",
    { allow_kernel_warnings = true }, function(t)
    local vm = provium:vm("nosym", "default"):boot()
    local ko = meta.build_module(t, src, "provium_demo", vm:kernel_release())
    vm:write_file("/tmp/provium_demo.ko", io.open(ko, "rb"):read("a"))
    vm:insmod("/tmp/provium_demo.ko") -- a guest path: nothing to look it up in
    local ex = warn(t, vm)
    t:assert(ex:match("RIP: %x+:demo_write%+0x%x+/0x%x+ %[provium_demo%]\n"), ex)
    t:assert(not ex:match("%(provium_demo%.c:%d+%)"), ex)
    vm:shutdown()
end)

test("a profile's vmlinux is the one looked in; a missing one is an error at boot", function(t)
    local kernel, modules = meta.sh(meta.quote(meta.bin) .. " kernel path"):match("([^\n]+)\n([^\n]*)")
    local dir = meta.tmpdir()
    meta.write(dir .. "/vmlinux-dbg", "stands for the kernel's ELF image\n")
    meta.write(dir .. "/provium.toml", ([[
[profiles.dbg]
kernel = %q
modules = %q
vmlinux = "vmlinux-dbg"

[profiles.nodbg]
kernel = %q
modules = %q
vmlinux = "no/such/vmlinux"
]]):format(kernel, modules, kernel, modules))
    meta.write(dir .. "/profile.test.lua", ([[
test("given", function(t)
    local vm = provium:vm("given", "dbg"):boot()
    t:assert_eq(_provium_c.sym.vmlinux(vm), %q)
end)
test("missing", function(t)
    local err = t:assert_raises(function() provium:vm("missing", "nodbg"):boot() end)
    t:assert_contains(err, "profile `nodbg`: vmlinux `%s/no/such/vmlinux`: No such file or directory")
    t:assert_contains(err, "docs/splats.md#symbolized-stacks")
end)
]]):format(dir .. "/vmlinux-dbg", dir))
    local out, code = meta.provium({ "profile.test.lua" }, { cwd = dir })
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "2 passed")
end)
