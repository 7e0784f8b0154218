-- A cold boot enters a bzImage's kernel through its PVH entry, from the
-- ELF unpacked once into the cache (docs/boot-cache.md#the-cold-boot).
provium:claim { memory = "320M", cpus = 1 }

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
    local ls = io.popen("ls " .. cache_root() .. "/pvh")
    local names = ls:read("a")
    ls:close()
    t:assert(names:match("^%x+%.elf\n$"), "one unpacked kernel in the cache, got: " .. names)
end)
