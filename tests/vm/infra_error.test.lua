-- Infrastructure errors (docs/debugging.md#infrastructure-errors): a boot
-- the machine failed rather than the guest (QEMU killed before the agent's
-- handshake, a guest that prints nothing) is tried once more, and a second
-- failure is an ERROR, apart from test failures, in every output. A kernel
-- panic stays a FAILURE.
--
-- The broken machine is a QEMU found first in PATH (the way provium finds
-- QEMU): a script that kills itself for its first `fails` runs, or starts
-- the real QEMU with its vCPUs stopped (-S), so the guest prints nothing.
local meta = require("lib.meta")

local real_qemu = meta.sh("command -v qemu-system-x86_64"):match("[^\n]+")

-- A directory with provium.toml, the case files, and bin/qemu-system-x86_64.
local function setup(mode, fails)
    local dir = meta.tmpdir()
    meta.write(dir .. "/provium.toml", "")
    os.execute("mkdir " .. meta.quote(dir .. "/bin"))
    local script = ({
        kill = ([[
n=$(cat %s/count 2>/dev/null || echo 0); echo $((n + 1)) > %s/count
[ "$n" -lt %d ] && kill -KILL $$
exec %s "$@"]]):format(dir, dir, fails or 0, real_qemu),
        stopped = ('exec %s "$@" -S'):format(real_qemu),
    })[mode]
    meta.write(dir .. "/bin/qemu-system-x86_64", ([[#!/bin/sh
case "$1" in --version) exec %s "$@";; esac
%s
]]):format(real_qemu, script))
    os.execute("chmod +x " .. meta.quote(dir .. "/bin/qemu-system-x86_64"))
    meta.write(dir .. "/boots.test.lua", [[
test("boots", function(t)
    provium:vm("a", "default"):boot():run("true"):assert_ok()
end)
]])
    meta.write(dir .. "/top.test.lua", [[
local vm = provium:vm("top", "default", { cold = true }):boot()
test("never runs", function() end)
]])
    meta.write(dir .. "/fails.test.lua", 'test("fails", function(t) t:fail("a real failure") end)\n')
    meta.write(dir .. "/silent.test.lua", [[
test("silent", function(t)
    provium:vm("s", "default", { cold = true, agent_timeout = 4 }):boot()
end)
]])
    meta.write(dir .. "/panics.test.lua", [[
test("panics", function(t)
    provium:vm("p", "default", {
        kernel_cmdline_append = "init=/nonexistent",
        files = { { path = "/provium-agent", content = "", mode = 0x1ed } },
        cold = true,
    }):boot()
end)
]])
    return dir
end

local function run(dir, args)
    local a = { "--accel", "tcg" }
    for _, x in ipairs(args) do a[#a + 1] = x end
    return meta.provium(a, { cwd = dir, env = { PATH = dir .. "/bin:" .. os.getenv("PATH") } })
end

local function read(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

test("a QEMU killed before the handshake is booted again", function(t)
    local dir = setup("kill", 1)
    local out, code = run(dir, { "-v", "boots.test.lua" })
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "provium: vm `a`: QEMU failed to start (QEMU killed by signal 9); " ..
        "booting it again (docs/debugging.md#infrastructure-errors)")
    t:assert_contains(out, "PASS boots.test.lua (1 passed, 0 failed, 0 skipped)")
end)

test("killed twice: an ERROR in the human output, --json, JUnit, the events and TAP", function(t)
    local dir = setup("kill", 1000)
    local junit, events = dir .. "/junit.xml", dir .. "/run.events"
    local out, code = run(dir, { "--json", "--junit", junit, "--save-events", events,
        "boots.test.lua", "top.test.lua" })
    t:assert_eq(code, 3, "the exit status of infrastructure errors alone\n" .. out)
    local why = "vm `a`: infrastructure error: QEMU failed to start (QEMU killed by signal 9) " ..
        "(QEMU ended before the agent's handshake; the boot failed twice: " ..
        "docs/debugging.md#infrastructure-errors)"
    -- human
    t:assert_contains(out, "ERROR boots.test.lua (0 passed, 0 failed, 0 skipped, 1 error)\n" ..
        "    ERROR boots\n        boots.test.lua:2: " .. why)
    t:assert_contains(out, "ERROR top.test.lua (0 passed, 0 failed, 0 skipped, 1 error)\n" ..
        "    ERROR (loading the file)\n        top.test.lua:1: vm `top`: infrastructure error")
    t:assert(out:match("\n2 file%(s%); 0 passed, 0 failed, 0 skipped, 2 errors; [%d.]+s\n"), out)
    -- --json
    local files = meta.json_lines(out)
    local boots, top = files["boots.test.lua"], files["top.test.lua"]
    t:assert_eq(boots.status, "error")
    t:assert_eq(boots.passed, false)
    t:assert_eq(boots.tests[1].status, "error")
    t:assert_contains(boots.tests[1].message, why)
    t:assert_eq(top.status, "error")
    t:assert_contains(top.chunk_error, "vm `top`: infrastructure error")
    -- JUnit: <error>, counted apart from failures
    local xml = read(junit)
    t:assert_contains(xml, '<testsuites name="provium" tests="2" failures="0" errors="2" skipped="0"')
    t:assert_contains(xml, '<testcase classname="boots.test.lua" name="boots"')
    t:assert(xml:match('<error message="boots.test.lua:2: vm `a`: infrastructure error[^"]*" ' ..
        'type="infrastructure">'), xml)
    t:assert_contains(xml, '<testcase classname="top.test.lua" name="(file)" time="0">\n' ..
        '      <error message="top.test.lua:1: vm `top`: infrastructure error')
    t:assert(not xml:find("<failure", 1, true), "no <failure>")
    local _, lint = meta.sh("xmllint --noout " .. meta.quote(junit))
    t:assert_eq(lint, 0, "well-formed XML")
    -- the events
    local ev = meta.sh(meta.quote(meta.tests .. "/lib/events_dump.py") .. " " .. meta.quote(events))
    local kinds, completed = {}, {}
    for line in ev:gmatch("[^\n]+") do
        local e = json.decode(line)
        kinds[e.kind] = (kinds[e.kind] or 0) + 1
        if e.kind == "file_completed" then completed[e.payload.path] = e.payload.status end
        if e.kind == "test_error" then
            t:assert_eq(e.payload.name, "boots")
            t:assert_contains(e.payload.reason, why)
        end
    end
    t:assert_eq(kinds.test_error, 1, ev)
    t:assert_eq(kinds.test_failed, nil, ev)
    t:assert_eq(completed["boots.test.lua"], "error")
    t:assert_eq(completed["top.test.lua"], "error")
    -- TAP: a point that is not ok, marked # ERROR
    out, code = run(dir, { "--tap", "boots.test.lua", "top.test.lua" })
    t:assert_eq(code, 3, out)
    t:assert_contains(out, "    not ok 1 - boots # ERROR infrastructure\n")
    -- the files are numbered in the order they end
    t:assert(out:match("\nnot ok [12] %- boots%.test%.lua # ERROR infrastructure\n"), out)
    t:assert_contains(out, "    not ok 1 - (loading the file) # ERROR infrastructure\n")
    t:assert(out:match("\nnot ok [12] %- top%.test%.lua # ERROR infrastructure\n"), out)
    -- a real failure in the same run decides the exit status
    out, code = run(dir, { "-q", "boots.test.lua", "fails.test.lua" })
    t:assert_eq(code, 1, out)
    t:assert_contains(out, "FAIL fails.test.lua (0 passed, 1 failed, 0 skipped)")
    t:assert_contains(out, "ERROR boots.test.lua (0 passed, 0 failed, 0 skipped, 1 error)")
    t:assert(out:match("\n2 file%(s%); 0 passed, 1 failed, 0 skipped, 1 error; [%d.]+s\n"), out)
end)

test("a guest that prints nothing is an infrastructure error", function(t)
    local dir = setup("stopped")
    local out, code = run(dir, { "-q", "silent.test.lua" })
    t:assert_eq(code, 3, out)
    t:assert_contains(out, "provium: vm `s`: no agent within 4s of power-on; booting it again")
    t:assert_contains(out, "    ERROR silent\n        silent.test.lua:2: vm `s`: infrastructure " ..
        "error: no agent within 4s of power-on (the guest printed nothing; the boot failed twice")
end)

test("a kernel panic at boot stays a test failure", function(t)
    local dir = setup("kill", 0) -- the real QEMU every time
    local files, code, out = meta.json_run({ "--accel", "tcg", "panics.test.lua" },
        { cwd = dir, env = { PATH = dir .. "/bin:" .. os.getenv("PATH") } })
    t:assert_eq(code, 1, out)
    local f = files["panics.test.lua"]
    t:assert_eq(f.status, "failed")
    t:assert_eq(f.tests[1].status, "failed")
    t:assert_contains(f.tests[1].message, "Kernel panic - not syncing")
    t:assert(not out:find("infrastructure", 1, true), out)
    t:assert(not out:find("booting it again", 1, true), out)
    t:assert_eq(read(dir .. "/count"), "1\n", "booted once")
end)
