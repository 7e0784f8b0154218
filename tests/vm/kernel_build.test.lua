-- A kernel developer's first run (docs/kernels.md, "From Debian's kernel
-- source to a passing test"): Debian's linux-source-6.1, `provium kernel
-- build --minimal`, and the quick-start test on the result. Slow: the build
-- takes minutes (on 2 loaded cores, most of an hour), so run it with
--   provium --include-slow --timeout 0 vm/kernel_build.test.lua
-- (--timeout 0: the file's wall clock would end the build first).
-- PROVIUM_TEST_LINUX_TREE=DIR uses that unpacked tree instead of a fresh one
-- (make is incremental: a second run takes a minute or two).
local meta = require("lib.meta")

local TARBALL = "/usr/src/linux-source-6.1.tar.xz"
local NEEDS = "apt-get install linux-source-6.1 flex bison bc libelf-dev"

local function have(cmd)
    local _, code = meta.sh("command -v " .. cmd)
    return code == 0
end

test("provium kernel build --minimal: Debian's linux-source-6.1 passes the quick-start test",
    { slow = true, timeout = "3h" }, function(t)
    if not io.open(TARBALL) then t:skip("no " .. TARBALL .. " (" .. NEEDS .. ")") end
    for _, tool in ipairs({ "make", "gcc", "flex", "bison", "bc" }) do
        if not have(tool) then t:skip("no " .. tool .. " to build a kernel (" .. NEEDS .. ")") end
    end
    if not io.open("/usr/include/gelf.h") then t:skip("no libelf-dev for objtool (" .. NEEDS .. ")") end
    local d = meta.tmpdir()
    local tree = os.getenv("PROVIUM_TEST_LINUX_TREE")
    if not tree or tree == "" then
        local out, code = meta.sh(("tar xf %s -C %s"):format(TARBALL, meta.quote(d)))
        t:assert_eq(code, 0, out)
        tree = d .. "/linux-source-6.1"
    end
    local out, code = meta.provium({ "kernel", "build", "--minimal", tree })
    t:assert_eq(code, 0, out)
    t:log(out:match("provium: built in [^\n]*") or out)
    local bz = out:match("\nPROVIUM_KERNEL=([^\n]+)")
    t:assert_eq(bz, tree .. "/arch/x86/boot/bzImage", out)
    -- the bzImage carries its config (IKCONFIG, gzip), and it has every required option
    out, code = meta.provium({ "kernel", "check", bz })
    t:assert_eq(code, 0, out)
    t:assert_contains(out, bz .. ":\n")
    t:assert(out:find("all %d+ required options set"), out)
    -- docs/quick-start.md's smoke.test.lua, on that kernel and nothing of the host's
    meta.write(d .. "/smoke.test.lua", [[
local vm = provium:vm("a", "default"):boot()

test("the guest runs our kernel", function(t)
    local r = vm:run("uname -r")
    r:assert_ok()
    t:assert_eq(r.stdout, vm:kernel_release() .. "\n")
end)

test("a file written in the guest reads back", function(t)
    vm:write_file("/tmp/hello", "hi\n")
    t:assert_eq(vm:read_file("/tmp/hello"), "hi\n")
    t:assert_eq(vm:stat("/tmp/hello").size, 3, "size of /tmp/hello")
end)
]])
    out, code = meta.provium({ "smoke.test.lua" }, { cwd = d, env = { PROVIUM_KERNEL = bz, PROVIUM_MODULES = "" } })
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "PASS smoke.test.lua (2 passed, 0 failed, 0 skipped)")
end)
