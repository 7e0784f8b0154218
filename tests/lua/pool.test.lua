-- The pool and claims (docs/running.md): files reserve their
-- claim before they start, so files that do not fit together wait.
local meta = require("lib.meta")

-- A file that claims `claim` and records when its test ran.
local function timed_file(d, name, claim)
    meta.write(("%s/%s.test.lua"):format(d, name), ([[
provium:claim { memory = "%s", cpus = 0 }
test("records its time", function()
    local f = io.open("%s/%s.log", "w")
    f:write(_provium_c.now(), "\n")
    _provium_c.sleep(1.5)
    f:write(_provium_c.now(), "\n")
    f:close()
end)
]]):format(claim, d, name))
end

local function span(d, name)
    local f = assert(io.open(("%s/%s.log"):format(d, name)))
    local a, b = f:read("n", "n")
    f:close()
    return a, b
end

test("files whose claims do not fit together run one after the other", function(t)
    local d = meta.tmpdir()
    timed_file(d, "a", "700M")
    timed_file(d, "b", "700M")
    -- 2 x (700 MiB + 50 MiB for the runner) > 1400 MiB: one at a time
    local out, code = meta.provium({ "--mem", "1400M", "a.test.lua", "b.test.lua" }, { cwd = d })
    t:assert_eq(code, 0, out)
    local a0, a1 = span(d, "a")
    local b0, b1 = span(d, "b")
    t:assert(b0 >= a1, ("b started (%.2f) after a ended (%.2f)"):format(b0, a1))
    -- with room for both, they overlap
    out, code = meta.provium({ "--mem", "4G", "a.test.lua", "b.test.lua" },
        { cwd = d, env = { PROVIUM_PSI_THRESHOLD = "off" } })
    t:assert_eq(code, 0, out)
    a0, a1 = span(d, "a")
    b0, b1 = span(d, "b")
    meta.rmdir(d)
    t:assert(b0 < a1 and a0 < b1, "the two runs overlap")
    t:assert_contains(out, "provium: pool 4.0 GiB")
end)

test("a claim bigger than the whole pool is refused, not waited for", function(t)
    local d = meta.tmpdir()
    timed_file(d, "big", "2G")
    meta.write(d .. "/small.test.lua", 'test("runs", function() end)\n')
    local out, code = meta.provium({ "--mem", "1G", "." }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 1)
    t:assert_contains(out, "FAIL big.test.lua (0 passed, 1 failed, 0 skipped)\n    NOT RUN (file)")
    t:assert_contains(out, "more than the whole pool of 1024 MiB")
    t:assert_contains(out, "PASS small.test.lua")
end)

test("claims are read from the source: literal values, known keys, one per file", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/var.test.lua", 'local m = "1G"\n\nprovium:claim { memory = m }\n')
    meta.write(d .. "/key.test.lua", 'provium:claim { mem = "1G" }\n')
    meta.write(d .. "/two.test.lua", 'provium:claim { memory = "1G" }\nprovium:claim { memory = "2G" }\n')
    meta.write(d .. "/size.test.lua", 'provium:claim { memory = "lots" }\n')
    meta.write(d .. "/hidden.test.lua", 'local p = provium\np:claim { memory = "1G" }\n')
    meta.write(d .. "/comment.test.lua", [[
-- provium:claim { memory = m } in a comment is not a claim
local s = "provium:claim(nothing)"
test("runs", function() end)
]])
    local files, code = meta.json_run({ "." }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 1)
    t:assert_contains(files["var.test.lua"].chunk_error,
        "var.test.lua:3: provium:claim needs a table of literal values")
    t:assert_contains(files["key.test.lua"].chunk_error, "unknown key `mem` (memory, cpus)")
    t:assert_contains(files["two.test.lua"].chunk_error, "two.test.lua:2: a second provium:claim")
    t:assert_contains(files["size.test.lua"].chunk_error, "memory must be a size")
    -- a claim the scan cannot see fails when it runs
    t:assert_contains(files["hidden.test.lua"].chunk_error, "the runner reserves what it reads")
    t:assert_eq(files["comment.test.lua"].passed, true)
end)

test("pool options are checked", function(t)
    meta.assert_refused(t, {
        { { "--mem", "lots" }, "--mem: expected a size" },
        { { "--cpus", "0" }, "--cpus: expected a positive integer" },
        { { "--cpu-overcommit", "x" }, "--cpu-overcommit: expected a number" },
    })
end)

test("a live progress line on a terminal, none when redirected", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/p.test.lua", 'test("waits", function() _provium_c.sleep(1.5) end)\n')
    local p = io.popen(("cd %s && script -qec %s /dev/null"):format(meta.quote(d),
        meta.quote(meta.quote(meta.bin) .. " p.test.lua")))
    local tty = p:read("a")
    p:close()
    local out = meta.provium({ "p.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_contains(tty, "[provium] 0 done, 1 running, 0 queued")
    t:assert_contains(tty, "PASS p.test.lua")
    t:assert_eq(out:find("[provium]", 1, true), nil)
end)

-- Busy loops, one more than this machine has CPUs, at the given nice value:
-- the CPU's pressure rises within seconds. Gone with the test's scope.
local function busy_loops(nice)
    local n = tonumber((meta.sh("nproc"))) + 1
    local tag = ("provium-pool-test-%d"):format(_provium_c.now() * 1e6 // 1)
    os.execute(("for i in $(seq %d); do (nice -n %d timeout 60 sh -c 'while :; do :; done # %s' " ..
        ">/dev/null 2>&1 &); done"):format(n, nice, tag))
    provium:_register({ close = function() os.execute("pkill -f " .. tag) end }, 9)
    wait_until(function()
        local f = io.open("/proc/pressure/cpu")
        local avg = tonumber(f:read("l"):match("avg10=([%d.]+)"))
        f:close()
        return avg > 2
    end, { timeout = 15, desc = "CPU pressure above 2 %" })
end

-- a.test.lua keeps a CPU busy until b.test.lua has started (6 s at most);
-- the events of the run, in order, as one line each.
local function pressure_run(d)
    meta.write(d .. "/a.test.lua", ([[
test("spins", function()
    local t0 = _provium_c.now()
    while _provium_c.now() - t0 < 6 and not io.open("%s/b.started") do end
end)
]]):format(d))
    meta.write(d .. "/b.test.lua", ('test("x", function() io.open("%s/b.started", "w"):close() end)\n'):format(d))
    local p = io.popen(("cd %s && PROVIUM_PSI_THRESHOLD=1 %s --events-stdout . 2>/dev/null | /usr/bin/python3 %s -")
        :format(meta.quote(d), meta.quote(meta.bin), meta.quote(meta.tests .. "/lib/events_dump.py")))
    local ev = p:read("a")
    p:close()
    local b_started = ev:find('"file_dispatched", "payload": {"path": "b.test.lua"', 1, true)
    local a_ended = ev:find('"file_completed", "payload": {"duration_ns": %d+, "path": "a.test.lua"')
    return ev, b_started, a_ended
end

test("CPU pressure holds new files back while the running ones wait too", function(t)
    if not io.open("/proc/pressure/cpu") then t:skip("this kernel has no PSI") end
    local d = meta.tmpdir()
    busy_loops(0)
    local ev, b_started, a_ended = pressure_run(d)
    t:assert_contains(ev, '"reason": "psi_pressure"')
    t:assert(b_started and a_ended and b_started > a_ended, "b started after a ended:\n" .. ev)
end)

test("work niced below provium raises the pressure but holds no file back", function(t)
    if not io.open("/proc/pressure/cpu") then t:skip("this kernel has no PSI") end
    local d = meta.tmpdir()
    busy_loops(19)
    local ev, b_started, a_ended = pressure_run(d)
    t:assert(b_started and a_ended and b_started < a_ended, "b started while a ran:\n" .. ev)
end)
