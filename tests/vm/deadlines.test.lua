-- Waits that have no limit of their own end at the test's deadline
-- (docs/vms.md#deadlines, docs/writing-tests.md#timeouts): each case is a
-- small file run by a nested provium, one test with a LIMIT-second limit
-- around one wait that would never end by itself. A wait that ignores the
-- deadline shows as that file stopped by the nested run's --timeout, not as
-- a hang of this suite.
local meta = require("lib.meta")

local LIMIT = 3 -- each nested test's own limit, seconds
-- How late after the deadline a wait may end (a loaded machine; a stalled
-- frame is given 3 s past its deadline, docs/vms.md#deadlines).
local SLACK = 8
-- The nested run's --timeout per file: a wait that ignores the deadline
-- is stopped here, and its file reads `timed_out`.
local HANG = 30

-- One nested test: t0 after the VM is up, the wait, then its outcome.
-- The log line says how long the wait took; the error is the wait's own.
local function case(body, setup)
    return ([[
%s
test("waits", { timeout = "%ds" }, function(t)
    local t0 = _provium_c.now()
    local ok, err = pcall(function()
%s
    end)
    t:log(("ended after %%.1f s"):format(_provium_c.now() - t0))
    error(ok and "the wait returned" or err, 0)
end)
]]):format(setup or 'local vm = provium:vm("a", "default"):boot()', LIMIT, body)
end

local VM_CASES = {
    run = case([[vm:run("sleep 600")]]),
    syscall = case([[vm:syscall(provium.sys.pause)]]),
    wait = case([[vm:run_async("sleep 600"):wait()]]),
    -- the stream's own limit (60 s) is far beyond the test's
    read_until = case([[vm:console():read():read_until("never-printed", 60)]]),
    -- a negative timeout reaches the C read as "no limit of its own"
    recv = case([[
        local s = vm:console():read()
        repeat local c = s:_recv(-1) until not c
        error("the console read returned")]]),
    -- a kernel message every second: the stream is never quiet for 5 s
    -- (without a test's limit drain ends after 60 s, too long to test here)
    drain = case([[
        local s = vm:console():read()
        local tick = "while :; do echo provium-tick > /dev/kmsg; sleep 1; done"
        vm:run("sh -c '" .. tick .. "' >/dev/null 2>&1 &"):assert_ok()
        s:drain(5)
        error("drain returned")]]),
}

-- Run the files of cases (name -> source) in a directory of their own,
-- with toml as its provium.toml; returns their --json lines by name.
local function nested(cases, toml, prepare)
    local d = meta.tmpdir()
    local args = { "-j", "2", "--timeout", tostring(HANG) }
    local names = {}
    for name in pairs(cases) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
        meta.write(("%s/%s.test.lua"):format(d, name), cases[name])
        args[#args + 1] = name .. ".test.lua"
    end
    if toml then meta.write(d .. "/provium.toml", toml) end
    local cleanup = prepare and prepare(d)
    local files, _, out = meta.json_run(args, { cwd = d })
    if cleanup then cleanup() end
    local by = {}
    for name in pairs(cases) do by[name] = files[name .. ".test.lua"] end
    return by, out
end

local memo = {}
local function results(which, run)
    if not memo[which] then memo[which] = { run() } end
    return table.unpack(memo[which])
end

local function vm_results()
    return results("vm", function() return nested(VM_CASES) end)
end

-- The case's one test failed at the deadline, within SLACK, saying what.
local function check(t, f, out, name, ...)
    t:assert(f, name .. ": no result from the nested run:\n" .. out)
    t:assert_eq(f.timeout, "in_time",
        name .. ": the wait ignored the test's deadline; the file ran into --timeout")
    local r = f.tests[1]
    t:assert_eq(r.status, "failed", name)
    t:assert_contains(r.message, ("test timed out after %ds"):format(LIMIT))
    for _, text in ipairs({ ... }) do t:assert_contains(r.message, text) end
    if r.log[1] then
        local s = tonumber(r.log[1]:match("ended after ([%d.]+) s"))
        t:log(("%s: %s; %s"):format(name, r.log[1], r.message))
        t:assert(s and s <= LIMIT + SLACK, name .. ": " .. r.log[1])
    end
end

test("vm:run without a timeout ends at the test's deadline, naming the VM", function(t)
    local by, out = vm_results()
    check(t, by.run, out, "run", "vm `a`: run: ")
end)

test("vm:syscall, blocked in the guest, ends at the test's deadline", function(t)
    local by, out = vm_results()
    check(t, by.syscall, out, "syscall", "vm `a`: syscall: Syscall timed out")
end)

test("proc:wait() without a timeout ends at the test's deadline, naming the VM", function(t)
    local by, out = vm_results()
    check(t, by.wait, out, "wait", "vm `a`: proc:wait: ")
end)

test("a console stream's read_until(text, 60) ends at the test's deadline", function(t)
    local by, out = vm_results()
    check(t, by.read_until, out, "read_until")
end)

test("a console read with a negative timeout ends at the test's deadline", function(t)
    local by, out = vm_results()
    check(t, by.recv, out, "recv")
end)

test("drain on a guest that never goes quiet ends at the test's deadline", function(t)
    local by, out = vm_results()
    check(t, by.drain, out, "drain")
end)

-- Builds: a profile's build command and a fixture's build, neither of
-- which ends by itself. No VM boots.
local function build_results()
    return results("build", function()
        local p = io.popen(meta.quote(meta.bin) .. " kernel path")
        local kernel = p:read("l")
        p:close()
        local toml = ('[provium]\nroots = ["."]\ncache_dir = "cache"\n[profiles.slow]\n' ..
            'build = "sleep 40"\nbuild_out = "out"\nkernel = "%s"\n'):format(kernel)
        local cases = {
            profile = case([[provium:vm("b", "slow"):boot()]], ""),
            fixture = case([[provium:vm_fixture("slow")]], ""),
        }
        return nested(cases, toml, function(d)
            -- the fixture's build waits in open(2) for a writer of a FIFO
            local fifo = d .. "/fifo"
            os.execute("mkfifo " .. meta.quote(fifo))
            meta.write(d .. "/slow.fixture.lua", ("io.open(%q, 'r')\nreturn nil\n"):format(fifo))
            -- a build nobody killed gets its writer, and ends
            return function() os.execute("sh -c ': <> " .. fifo .. "'") end
        end)
    end)
end

test("a profile build that never ends is killed at the test's deadline", function(t)
    local by, out = build_results()
    check(t, by.profile, out, "profile", "profile `slow`: build `sleep 40` did not end in time (killed)")
end)

test("a fixture build that never ends is killed at the asking test's deadline", function(t)
    local by, out = build_results()
    check(t, by.fixture, out, "fixture", "fixture `slow`: its build did not end in time")
end)
