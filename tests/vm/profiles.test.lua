-- Profiles from a real provium.toml: provium runs in a scratch project.
local meta = require("lib.meta")

local kernel, modules = (function()
    local p = io.popen(meta.quote(meta.bin) .. " kernel path")
    local k, m = p:read("l"), p:read("l")
    p:close()
    return k, m
end)()

-- A user initrd with busybox, the agent and the kernel's modules: the
-- default profile's for this kernel, as `provium kernel initrd` names it
-- (in the suite's own cache: no guess among the files of other kernels).
local function some_initrd()
    local p = io.popen(meta.quote(meta.bin) .. " kernel initrd")
    local path = p:read("l")
    p:close()
    assert(path and path:match("%.cpio$"), "provium kernel initrd printed no initrd")
    return path
end

test("profiles: [profiles.x], legacy [profile.x] + append, relative paths, modules", function(t)
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/images && ln -s " .. meta.quote(some_initrd()) .. " " .. d .. "/images/initrd.img")
    meta.write(d .. "/provium.toml", ([[
# a project of its own
[provium]
roots = ["suite"]

[profiles.plain]
kernel  = "%s"
initrd  = "images/initrd.img"      # relative to this file
cmdline = "console=ttyS0 panic=-1 profile_marker=plain"
modules = "%s"

[profile.legacy]
kernel = "%s"
initrd = "images/initrd.img"
append = "legacy_marker=1"
modules = "%s"
]]):format(kernel, modules, kernel, modules))
    os.execute("mkdir -p " .. d .. "/suite")
    meta.write(d .. "/suite/p.test.lua", [[
test("plain", function(t)
    local vm = provium:vm("a", "plain"):boot()
    t:assert_contains(vm:read_file("/proc/cmdline"), "profile_marker=plain")
    vm:run("uname -r"):assert_ok()
end)
test("legacy", function(t)
    local vm = provium.create("legacy"):boot()
    t:assert_contains(vm:read_file("/proc/cmdline"), "legacy_marker=1")
    t:assert_eq(vm:exec("echo ok").stdout, "ok\n")
end)
test("unknown", function(t)
    t:assert_contains(t:assert_raises(function() provium:vm("u", "nope"):boot() end),
        "unknown profile `nope` (" )
end)
]])
    local out, code = meta.provium({}, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "PASS suite/p.test.lua (3 passed, 0 failed, 0 skipped)")
end)

test("inject_agent = false boots the initrd as it is", function(t)
    local d = meta.tmpdir()
    -- this image already holds /provium-agent (provium generated it)
    meta.write(d .. "/provium.toml", ([[
[profiles.own]
kernel = "%s"
initrd = "%s"
cmdline = "console=ttyS0 rdinit=/provium-agent own_agent=1"
inject_agent = false
]]):format(kernel, some_initrd()))
    meta.write(d .. "/o.test.lua", [[
test("boot", function(t)
    local vm = provium:vm("o", "own"):boot()
    local c = vm:read_file("/proc/cmdline")
    t:assert_contains(c, "own_agent=1")
    t:assert(not c:find("rdinit=/provium-agent.*rdinit="), "no second rdinit: " .. c)
end)
]])
    local out, code = meta.provium({ "o.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
end)

test("profiles: --config names another file; a missing kernel is a boot error", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/alt.toml", '[profiles.x]\nkernel = "missing/bzImage"\ninitrd = "none.img"\n')
    meta.write(d .. "/x.test.lua", [[
test("boot", function(t)
    local err = t:assert_raises(function() provium:vm("v", "x"):boot() end)
    t:assert_contains(err, "missing/bzImage")
end)
]])
    local out, code = meta.provium({ "--config", "alt.toml", "x.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
end)

test("config errors exit 2 and name the file and line", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/provium.toml", '[profiles.x]\nkernel = "/k"\ncolour = "blue"\n')
    meta.write(d .. "/x.test.lua", 'test("x", function() end)\n')
    local out, code = meta.provium({ "x.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 2)
    t:assert_contains(out, "provium.toml")
    t:assert_contains(out, "colour")
end)

test("a profile with only `kernel` has a shell; initrd = \"none\" has the agent alone", function(t)
    local d = meta.tmpdir()
    -- the modules beside the bzImage are found as the default profile finds them
    meta.write(d .. "/provium.toml", ([[
[profiles.default]
kernel = "%s"

[profiles.bare]
kernel = "%s"
initrd = "none"
]]):format(kernel, kernel))
    meta.write(d .. "/k.test.lua", [[
test("shell", function(t)
    local vm = provium:vm("a", "default"):boot()
    t:assert_eq(vm:run("echo hi").stdout, "hi\n")
end)
test("none", function(t)
    local vm = provium:vm("b", "bare"):boot()
    t:assert(not vm:exists("/bin/sh"), "no busybox with initrd = none")
end)
]])
    local out, code = meta.provium({ "k.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "2 passed")
end)
