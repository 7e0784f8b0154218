-- The runner with real VMs: timeouts inside guest operations, files that
-- misbehave next to well-behaved ones, profiles built before first boot.
local meta = require("lib.meta")

test("a per-test timeout inside a guest op kills the file's VMs", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/t.test.lua", [[
local vm = provium:vm("a", "default"):boot()
test("hangs in the guest", { timeout = "2s" }, function(t)
    vm:run("sleep 60")
end)
test("after the timeout", function(t)
    t:assert_eq(vm:state(), "dead")
end)
]])
    local files, code = meta.json_run({ "t.test.lua" }, { cwd = d })
    meta.rmdir(d)
    local f = files["t.test.lua"]
    t:assert_eq(code, 1)
    local s = meta.by_name(f)
    t:assert_contains(s["hangs in the guest"].message, "test timed out after 2s")
    t:assert_eq(s["after the timeout"].status, "passed")
end)

test("os.exit in one file does not disturb another running beside it", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/a.test.lua", 'test("quits", function() os.exit(0) end)\n')
    meta.write(d .. "/b.test.lua", [[
test("boots after a's exit", function(t)
    _provium_c.sleep(1)
    provium:vm("b", "default"):boot():run("true"):assert_ok()
end)
]])
    local out, code = meta.provium({ "-j", "2", "a.test.lua", "b.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_contains(out, "PASS b.test.lua (1 passed, 0 failed, 0 skipped)")
    t:assert_contains(out, "FAIL a.test.lua")
    t:assert_eq(code, 1)
end)

test("from_dir profiles: build once per run, {out} paths, a built cmdline_file", function(t)
    local p = io.popen(meta.quote(meta.bin) .. " kernel path")
    local kernel, modules = p:read("l"), p:read("l")
    p:close()
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/profiles/built")
    meta.write(d .. "/provium.toml", '[profiles]\nfrom_dir = "profiles"\n')
    meta.write(d .. "/profiles/built/profile.provium.toml", ([[
build = "./build.sh {out}"
build_out = "out"
kernel = "%s"
initrd = "{out}/initrd.img"
cmdline_file = "{out}/cmdline"
cmdline = "after_file=1"
modules = "%s"
]]):format(kernel, modules))
    local initrd = io.popen("ls -t " .. meta.quote(kernel:match("^(.*)/kernels/")) .. "/initrd/default-*.cpio"):read("l")
    meta.write(d .. "/profiles/built/build.sh", ([[#!/bin/sh
set -e
echo run >> ../../builds.log
cp %s "$1/initrd.img"
echo "console=ttyS0 from_file=1" > "$1/cmdline"
]]):format(meta.quote(initrd)))
    os.execute("chmod +x " .. d .. "/profiles/built/build.sh")
    for _, n in ipairs({ "x", "y" }) do
        meta.write(d .. "/" .. n .. ".test.lua", [[
test("boot", function(t)
    local c = provium:vm("v", "built"):boot():read_file("/proc/cmdline")
    t:assert(c:find("from_file=1 after_file=1", 1, true), c)
end)
]])
    end
    local out, code = meta.provium({ "-j", "2", "x.test.lua", "y.test.lua" }, { cwd = d })
    local f = io.open(d .. "/builds.log")
    local builds = f and f:read("a") or ""
    if f then f:close() end
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
    t:assert_eq(builds, "run\n", "the build ran once")
end)

test("a file's VMs stay within its claim", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/c.test.lua", [[
provium:claim { memory = "700M", cpus = 1 }
test("a second VM does not fit", function(t)
    local a = provium:vm("a", "default"):boot()
    local err = t:assert_raises(function() provium:vm("b", "default"):boot() end)
    t:assert_contains(err, "vm `b`: booting it would bring this file's VMs to 1152 MiB")
    t:assert_contains(err, "over the 700 MiB of its provium:claim")
    -- once a is shut down there is room again
    a:shutdown()
    provium:vm("c", "default", { memory = "256M" }):boot():run("true"):assert_ok()
end)
]])
    local files, code, out = meta.json_run({ "c.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
    t:assert_eq(files["c.test.lua"].passed, true)
end)
