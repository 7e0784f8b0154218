-- The runner's own loop, seen from outside, without VMs.
local meta = require("lib.meta")

-- Run provium with args in the tests directory, env added to its
-- environment, for at most 15 s (then SIGKILL); returns its exit status, the
-- wall time, and the CPU time of provium and the children it reaped, from
-- wait4's rusage.
local RUSAGE = [[
import os, signal, subprocess, sys, time
env = dict(os.environ, **dict(a.split("=", 1) for a in sys.argv[1].split()))
t0 = time.monotonic()
p = subprocess.Popen(sys.argv[2:], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
pid = 0
while pid == 0 and time.monotonic() < t0 + 15:
    time.sleep(0.1)
    pid, status, ru = os.wait4(p.pid, os.WNOHANG)
if pid == 0:
    os.kill(p.pid, signal.SIGKILL)
    pid, status, ru = os.wait4(p.pid, 0)
print(os.waitstatus_to_exitcode(status), time.monotonic() - t0, ru.ru_utime + ru.ru_stime)
]]

local function cpu_and_wall(env, args)
    local cmd = { "cd", meta.quote(meta.tests), "&&", "/usr/bin/python3", "-c", meta.quote(RUSAGE),
        meta.quote(env), meta.quote(meta.bin) }
    for _, a in ipairs(args) do cmd[#cmd + 1] = meta.quote(a) end
    local p = io.popen(table.concat(cmd, " "))
    local out = p:read("a")
    p:close()
    local code, wall, cpu = out:match("^(%-?%d+) ([%d.]+) ([%d.]+)")
    return tonumber(code), tonumber(wall), tonumber(cpu), out
end

test("without a pidfd the runner waits for a file's end without spinning", function(t)
    -- PROVIUM_TEST_NO_PIDFD stands for a kernel without pidfd_open (before
    -- 5.3) or a runner out of descriptors (EMFILE)
    local code, wall, cpu, out = cpu_and_wall("PROVIUM_TEST_NO_PIDFD=1", { "lua/cases/nap.lua" })
    t:assert(cpu, out)
    -- a healthy run takes ~0.03 s of CPU for the 2 s nap; a busy loop takes
    -- what the machine gives it (a quarter of a core on a loaded one)
    t:assert(cpu < wall / 10,
        ("provium and the file's process used %.2fs of CPU in %.2fs"):format(cpu, wall))
    t:assert_eq(code, 0, "provium's exit status")
end)

test("a cache directory others can write is refused before anything runs", function(t)
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/cache/provium && chmod 777 " .. d .. "/cache/provium")
    local out, code = meta.provium({ "lua/cases/pass.lua" }, { env = { XDG_CACHE_HOME = d .. "/cache" } })
    t:assert_eq(code, 2, out)
    t:assert_contains(out, "provium: " .. d .. "/cache/provium is writable by group or others "
        .. "(mode 0777): refusing it as provium's cache")
    t:assert(not out:find("PASS", 1, true), "nothing ran")
end)
