-- A cold boot enters a bzImage's kernel through its PVH entry, from the
-- ELF unpacked once into the cache (docs/boot-cache.md#the-cold-boot).
provium:claim { memory = "320M", cpus = 1 }
local meta = require("lib.meta")

local function cache_root()
    local c = os.getenv("PROVIUM_CACHE")
    if c and c ~= "" then return c end
    return (os.getenv("XDG_CACHE_HOME") or (os.getenv("HOME") .. "/.cache")) .. "/provium"
end

test("a cold boot goes through the PVH entry, from the cache's unpacked kernel", function(t)
    local vm = provium:vm("a", "default", { memory = "256M" }):boot { cold = true }
    -- The kernel's PVH entry fills boot_params itself (protocol 2.12);
    -- QEMU's Linux loader would pass the bzImage's header (2.15 for 6.1).
    t:assert_eq(vm:read_file("/sys/kernel/boot_params/version"), "0x020c\n")
    -- QEMU was given the unpacked kernel from the cache, not the bzImage
    local h = io.open(("/proc/%d/cmdline"):format(_provium_c.qemu_pid(vm)), "rb")
    local argv = h:read("a")
    h:close()
    local kernel = argv:match("%z%-kernel%z([^%z]+)")
    t:assert(kernel and kernel:match("^" .. cache_root():gsub("%p", "%%%0") .. "/pvh/%x+%.elf$"),
        "QEMU's -kernel is the cache's ELF, got: " .. tostring(kernel))
    local elf = io.open(kernel, "rb")
    t:assert_eq(elf:read(4), "\127ELF")
    elf:close()
end)

-- The kernel's text offset, from /proc/kallsyms (the agent runs as root).
local function text_of(vm)
    return vm:read_file("/proc/kallsyms"):match("(%x+) [Tt] _text\n")
end

test("the PVH entry leaves the text where it was linked; pvh = false lets the kernel pick",
    function(t)
    local a = provium:vm("linked", "default", { memory = "256M" }):boot { cold = true }
    t:assert_eq(text_of(a), "ffffffff81000000")
    local modules = a:modules_dir()
    a:shutdown()
    -- through the bzImage: QEMU's loader, the kernel's decompressor, KASLR.
    -- Two boots: an offset of 0 (1 in about 500) twice is not to be expected.
    local texts = {}
    for i = 1, 2 do
        local vm = provium:vm("loaded" .. i, "default", { memory = "256M", pvh = false })
            :boot { cold = true }
        t:assert_eq(vm:read_file("/sys/kernel/boot_params/version"), "0x020f\n")
        texts[i] = text_of(vm)
        vm:shutdown()
    end
    t:assert(texts[1] ~= "ffffffff81000000" or texts[2] ~= "ffffffff81000000",
        "the kernel moved its text: " .. table.concat(texts, ", "))
    t:assert_contains(t:assert_raises(function()
        provium:vm("bad", "default", { pvh = "no" }):boot()
    end), "boot opts: pvh must be a boolean, got string")
    -- a profile's `pvh = false`, and the boot option over it
    local dir = meta.tmpdir()
    local kernel = meta.sh(meta.quote(meta.bin) .. " kernel path"):match("[^\n]+")
    meta.write(dir .. "/provium.toml", ("[profiles.loader]\nkernel = %q\nmodules = %q\npvh = false\n")
        :format(kernel, modules))
    meta.write(dir .. "/p.test.lua", [[
test("versions", function(t)
    local function version(opts)
        local vm = provium:vm("v", "loader", opts):boot { cold = true }
        local v = vm:read_file("/sys/kernel/boot_params/version")
        vm:shutdown()
        provium:remove(vm)
        return v
    end
    t:assert_eq(version({ memory = "256M" }), "0x020f\n")
    t:assert_eq(version({ memory = "256M", pvh = true }), "0x020c\n")
end)
]])
    local out, code = meta.provium({ "p.test.lua" }, { cwd = dir })
    t:assert_eq(code, 0, out)
end)
