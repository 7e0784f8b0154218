-- The hang watchdog (docs/debugging.md#hangs): an operation on a guest that
-- shows no sign of life (no agent reply, no console output) for hang_timeout
-- fails with the vCPU's instruction pointer and the console tail, and the VM
-- is killed, instead of waiting for the test's or the file's timeout.
local meta = require("lib.meta")
local C = _provium_c
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local HANG = 10 -- seconds: given, so not scaled under TCG

-- What a hang must look like, and how soon it must come: within the hang
-- timeout plus a generous margin (a wake a second, QEMU's register dump and
-- the kill, on a loaded machine).
local function assert_hang(t, vm, err, took)
    t:assert_contains(err, ("vm `%s`: guest unresponsive for %ds (no console output, no agent reply)")
        :format(vm:name(), HANG))
    t:assert(err:match("instruction pointer: 0x%x+"), "the instruction pointer is reported")
    t:assert_contains(err, "last console lines:")
    t:assert(took >= HANG - 1, ("declared hung after %.1fs, before %ds of silence"):format(took, HANG))
    t:assert(took < HANG + 20, ("declared hung after %.1fs, hang_timeout is %ds"):format(took, HANG))
    t:assert_eq(vm:state(), "dead")
    t:assert_eq(C.qemu_pid(vm), nil, "QEMU is gone")
end

test("a module spinning with interrupts off on one vCPU", { hang_timeout = HANG }, function(t)
    local vm = provium:vm("spin", "default", { cpus = 1 }):boot()
    local ko = meta.build_module(t, here .. "/hang", "provium_hang", vm:kernel_release())
    vm:write_file("/tmp/provium_hang.ko", io.open(ko, "rb"):read("a"))
    local t0 = C.now()
    local err = t:assert_raises(function() vm:insmod("/tmp/provium_hang.ko") end)
    assert_hang(t, vm, err, C.now() - t0)
end)

test("a guest whose vCPUs QEMU stopped", { hang_timeout = HANG }, function(t)
    local vm = provium:vm("stopped", "default"):boot()
    C.qmp(vm, '{"execute": "stop"}') -- behind provium's back: the VM still looks booted
    local t0 = C.now()
    local err = t:assert_raises(function() vm:run("true") end)
    assert_hang(t, vm, err, C.now() - t0)
end)

test("an idle guest is not a hung one", { hang_timeout = 3 }, function(t)
    -- silent for longer than the timeout, but the agent answers the probes
    local vm = provium:vm("idle", "default"):boot()
    vm:run("sleep 8"):assert_ok()
    t:assert_eq(vm:state(), "booted")
end)

test("provium.hang_timeout at the top of a file, and --hang-timeout", function(t)
    local dir = meta.tmpdir()
    meta.write(dir .. "/provium.toml", "")
    meta.write(dir .. "/top.test.lua", [[
provium.hang_timeout = "4s"
local vm = provium:vm("top", "default"):boot()
_provium_c.qmp(vm, '{"execute": "stop"}')
vm:run("true")
]])
    meta.write(dir .. "/cli.test.lua", [[
test("stops", function()
    local vm = provium:vm("cli", "default"):boot()
    _provium_c.qmp(vm, '{"execute": "stop"}')
    vm:run("true")
end)
]])
    local out, code = meta.provium({ "top.test.lua" }, { cwd = dir })
    t:assert_eq(code, 1, out)
    t:assert_contains(out, "vm `top`: guest unresponsive for 4s (no console output, no agent reply)")
    out, code = meta.provium({ "--hang-timeout", "5s", "cli.test.lua" }, { cwd = dir })
    t:assert_eq(code, 1, out)
    t:assert_contains(out, "vm `cli`: guest unresponsive for 5s (no console output, no agent reply)")
end)

test("the instruction pointer is named from a System.map beside the kernel", function(t)
    -- the map: /proc/kallsyms of a guest of the same kernel; nokaslr, so that
    -- every boot puts the kernel where the map says
    local vm = provium:vm("map", "default", { kernel_cmdline_append = "nokaslr", cold = true }):boot()
    local ko = meta.build_module(t, here .. "/hang", "provium_hang", vm:kernel_release())
    local kallsyms = vm:read_file("/proc/kallsyms")
    local modules = vm:modules_dir()
    vm:shutdown()
    t:assert(kallsyms:match("\n%x+ [tT] delay_tsc\n"), "kallsyms has the kernel's text")
    local kernel = meta.sh(meta.quote(meta.bin) .. " kernel path"):match("[^\n]+")
    local dir = meta.tmpdir()
    os.execute(("ln -s %s %s/bzImage"):format(meta.quote(kernel), meta.quote(dir)))
    meta.write(dir .. "/System.map", kallsyms)
    meta.write(dir .. "/provium.toml", ("[profiles.mapped]\nkernel = %q\nmodules = %q\n")
        :format(dir .. "/bzImage", modules))
    -- the module spins in mdelay: the vCPU is in the kernel's delay loop
    -- (delay_tsc+0x33/0xa0 here)
    meta.write(dir .. "/named.test.lua", ([[
test("spins", { hang_timeout = 4 }, function()
    local vm = provium:vm("named", "mapped",
        { kernel_cmdline_append = "nokaslr", cold = true, cpus = 1 }):boot()
    vm:insmod(%q)
end)
]]):format(ko))
    local out = meta.provium({ "named.test.lua" }, { cwd = dir })
    t:assert_contains(out, "vm `named`: guest unresponsive for 4s (no console output, no agent reply)")
    t:assert(out:match("instruction pointer: 0x%x+ %([%w_.]+%+0x%x+/0x%x+%)\n"), out)
end)
