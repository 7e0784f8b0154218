-- --keep-on-failure and provium attach (docs/debugging.md#keeping-the-vms-of-a-failing-file):
-- nested runs of provium keep the VM of a failing file; a second process
-- attaches to it (commands, a shell, Lua); Ctrl-C leaves no QEMU and no run
-- directory.
local meta = require("lib.meta")

-- The nested file: its second test boots `a`, fails with the guest's
-- release in its message; the third never runs once the VM is kept.
local INNER = [[
test("passes", function(t) end)
test("fails", function(t)
    local vm = provium:vm("a", "default", { memory = "256M" }):boot()
    error("release " .. vm:run("uname -r").stdout)
end)
test("never runs", function(t) error("ran after the kept failure") end)
]]

-- Misbehaving clients of a keeper's socket (argv: the socket, provium, the
-- run's pid): one stalls after 3 bytes of a request while provium attach
-- runs a command; then one announces a request of 4 GiB.
local CLIENTS = [[
import socket, subprocess, sys, time
path, exe, run = sys.argv[1:4]
stall = socket.socket(socket.AF_UNIX)
stall.connect(path)
stall.sendall(b"R\x10\x00")
t0 = time.time()
r = subprocess.run([exe, "attach", "--run", run, "a", "--", "echo", "served"],
                   capture_output=True, stdin=subprocess.DEVNULL)
print("served: %d %s (after %.1fs behind a stalled client)" % (r.returncode, r.stdout.decode().strip(), time.time() - t0))
big = socket.socket(socket.AF_UNIX)
big.connect(path)
big.sendall(b"R\xff\xff\xff\xff")
big.settimeout(60)
print("huge request: " + ("closed" if big.recv(10) == b"" else "answered"))
stall.close()
]]

-- Start `provium --keep-on-failure a.test.lua` in d in the background
-- (TMPDIR=d, so other runs on the host are not seen): its pid; out<tag>
-- gets its output and code<tag> its exit status when it ends.
local function start(d, tag)
    local script = ([[
cd %s
export TMPDIR=%s
( %s --keep-on-failure a.test.lua >out%s 2>&1 & echo $! >pid%s; wait $!; echo $? >code%s ) >/dev/null 2>&1 &
sleep 0.5
cat pid%s
]]):format(meta.quote(d), meta.quote(d), meta.quote(meta.bin), tag, tag, tag, tag)
    local p = io.popen("sh -c " .. meta.quote(script))
    local pid = tonumber(p:read("a"):match("%d+"))
    p:close()
    return pid
end

local function read(path)
    local f = io.open(path)
    local s = f and f:read("a") or ""
    if f then f:close() end
    return s
end

-- provium attach with args in d (its TMPDIR), stdin from `input` (a shell
-- word, or /dev/null): output and exit code.
local function attach(d, args, input)
    local parts = {}
    for _, a in ipairs(args) do parts[#parts + 1] = meta.quote(a) end
    return meta.sh(("cd %s && TMPDIR=%s %s attach %s <%s"):format(meta.quote(d), meta.quote(d),
        meta.quote(meta.bin), table.concat(parts, " "), input or "/dev/null"))
end

local function wait_for(what, fn, secs)
    local t0 = _provium_c.now()
    while _provium_c.now() - t0 < secs do
        if fn() then return true end
        _provium_c.sleep(0.5)
    end
    error("waited " .. secs .. "s for " .. what)
end

local function count(cmd)
    local out = meta.sh(cmd)
    return tonumber(out:match("%d+"))
end

test("--keep-on-failure, then provium attach from a second process; Ctrl-C cleans up",
    { timeout = 900 }, function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/a.test.lua", INNER)
    local A, B = start(d, "A"), start(d, "B")
    t:assert(A and B, "both runs started")
    local ok, err = pcall(function()
        local t0 = _provium_c.now()
        wait_for("both runs to keep their VM", function()
            return read(d .. "/outA"):find("provium attach a", 1, true) and
                read(d .. "/outB"):find("provium attach a", 1, true)
        end, 600)
        print(("both VMs kept after %.1fs"):format(_provium_c.now() - t0))
        local outA = read(d .. "/outA")
        t:assert_contains(outA, "provium: a.test.lua: test `fails` failed: a.test.lua:4: release ")
        t:assert_contains(outA, ("its VMs stay up until Ctrl-C (run %d)"):format(A))
        local release = outA:match("release (%S+)")

        -- two runs keep `a`: say which, pick one with --run
        local out, code = attach(d, { "a", "--", "uname", "-r" })
        t:assert_eq(code, 2, out)
        t:assert_contains(out, "2 runs keep a VM named `a`: pick one with --run PID")
        t:assert_contains(out, "--run " .. A)
        t:assert_contains(out, "--run " .. B)

        local t1 = _provium_c.now()
        out, code = attach(d, { "--run", tostring(A), "a", "--", "uname", "-r" })
        print(("provium attach a -- uname -r: %.2fs"):format(_provium_c.now() - t1))
        t:assert_eq(code, 0, out)
        t:assert_eq(out, release .. "\n")

        -- a command's exit code, its stdout and stderr, its stdin
        out, code = attach(d, { "--run", tostring(A), "a", "--", "sh", "-c",
            "echo out; echo err >&2; exit 7" })
        t:assert_eq(code, 7, out)
        t:assert_contains(out, "out\n")
        t:assert_contains(out, "err\n")
        out, code = attach(d, { "--run", tostring(A), "a", "--", "cat" }, meta.quote(d .. "/a.test.lua"))
        t:assert_eq(code, 0, out)
        t:assert_eq(out, INNER)
        out, code = attach(d, { "--run", tostring(A), "a", "--", "sh", "-c", "kill -9 $$" })
        t:assert_eq(code, 128 + 9, out)

        -- --lua: chunks in the kept file's Lua state, `vm` the VM
        meta.write(d .. "/chunks.lua",
            'return vm:run("echo hi").stdout\nx = 41\nreturn x + 1\nerror("boom")\n')
        out, code = attach(d, { "--run", tostring(A), "--lua", "a" }, meta.quote(d .. "/chunks.lua"))
        t:assert_eq(code, 0, out)
        t:assert_contains(out, "hi\n")
        t:assert_contains(out, "42\n")
        t:assert_contains(out, "attach:1: boom")

        -- an interactive shell: script(1) gives provium attach a terminal of
        -- 33 x 77 and types the keys; the guest's terminal has that size
        meta.write(d .. "/keys", "stty size; echo $((6 * 7)); tty; exit 5\n")
        out, code = meta.sh(("cd %s && TMPDIR=%s timeout 120 script -qec %s /dev/null <keys"):format(
            meta.quote(d), meta.quote(d),
            meta.quote(("stty rows 33 cols 77; %s attach --run %d a"):format(meta.quote(meta.bin), A))))
        t:assert_eq(code, 5, out)
        t:assert_contains(out, "33 77\r\n42\r\n/dev/pts/")

        -- a client that stalls mid-request holds the keeper at most 10 s; one
        -- that announces a 4 GiB request is dropped at once
        local entryA = meta.sh(("cat %s/provium-%d-*/kept/*.json"):format(meta.quote(d), A))
        out = meta.sh(("TMPDIR=%s /usr/bin/python3 -c %s %s %s %d"):format(meta.quote(d),
            meta.quote(CLIENTS), meta.quote(json.decode(entryA:match("{.*}")).socket),
            meta.quote(meta.bin), A))
        print(out)
        t:assert_contains(out, "served: 0 served")
        t:assert_contains(out, "huge request: closed")

        -- bad inputs: a name no run keeps, no command
        out, code = attach(d, { "--run", tostring(A), "nosuch", "--", "true" })
        t:assert_eq(code, 2, out)
        t:assert_contains(out, "no VM named `nosuch` is kept by run " .. A)
        t:assert_contains(out, ("`a` (run %d, a.test.lua)"):format(A))
        out, code = attach(d, { "--run", tostring(A), "a" })
        t:assert_eq(code, 2, out)
        t:assert_contains(out, "an interactive shell needs a terminal on stdin")

        -- a VM no longer kept: run B killed outright (SIGKILL, no clean-up)
        local entry = meta.sh(("cat %s/provium-%d-*/kept/*.json"):format(meta.quote(d), B))
        local keeper = json.decode(entry:match("{.*}")).pid
        meta.sh(("kill -KILL %d %d"):format(keeper, B))
        wait_for("run B to end", function() return read(d .. "/codeB") ~= "" end, 30)
        out, code = attach(d, { "--run", tostring(B), "a", "--", "true" })
        t:assert_eq(code, 2, out)
        t:assert_contains(out, ("vm `a` is no longer kept: the provium that kept it (pid %d, run %d) has ended")
            :format(keeper, B))
        wait_for("run B's QEMU to go", function()
            return count(("pgrep -f 'provium-%d[-]' | wc -l"):format(B)) == 0
        end, 10)

        -- Ctrl-C (SIGINT to the provium started): the report, no QEMU, no run directory
        meta.sh("kill -INT " .. A)
        wait_for("run A to end", function() return read(d .. "/codeA") ~= "" end, 60)
        local final = read(d .. "/outA")
        t:assert_eq(tonumber(read(d .. "/codeA")), 1, final)
        t:assert_contains(final, "FAIL a.test.lua (1 passed, 1 failed, 0 skipped)")
        t:assert_contains(final, "release " .. release)
        t:assert_eq(final:find("ran after the kept failure", 1, true), nil, "the file ended there")
        t:assert_eq(count(("pgrep -f 'provium-%d[-]' | wc -l"):format(A)), 0, "QEMU left")
        t:assert_eq(count(("ls -d %s/provium-%d-* 2>/dev/null | wc -l"):format(meta.quote(d), A)), 0,
            "run directory left")
        out, code = attach(d, { "--run", tostring(A), "a", "--", "true" })
        t:assert_eq(code, 2, out)
        t:assert_contains(out, "no VM named `a` is kept by run " .. A)
    end)
    -- whatever failed, the nested runs end
    meta.sh(("kill -TERM %d %d 2>/dev/null; sleep 1"):format(A, B))
    if not ok then error(err, 0) end
end)

test("provium attach: bad arguments, and entries it must not trust", function(t)
    local d = meta.tmpdir()
    for _, case in ipairs({
        { {}, "which VM? (NAME is missing)" },
        { { "--run", "x", "a", "--", "true" }, "--run: expected a process id, got `x`" },
        { { "--lua", "a", "--", "true" }, "--lua takes no command" },
        { { "--bogus", "a" }, "unexpected `--bogus`" },
        { { "a", "b" }, "unexpected `b`" },
        { { "a", "--", "true" }, "none is kept now (a failing file keeps its VMs under --keep-on-failure" },
    }) do
        local out, code = attach(d, case[1])
        t:assert_eq(code, 2, out)
        t:assert_contains(out, case[2])
    end
    -- a registry that others could have written (mode 0777), naming a live
    -- pid (1): ignored
    meta.sh(("mkdir -p %s/provium-1-fake/kept && chmod 777 %s/provium-1-fake %s/provium-1-fake/kept")
        :format(meta.quote(d), meta.quote(d), meta.quote(d)))
    meta.write(d .. "/provium-1-fake/kept/1-0.json",
        '{"name":"a","pid":1,"run":1,"file":"x","socket":"' .. d .. '/s"}')
    local out, code = attach(d, { "a", "--", "true" })
    t:assert_eq(code, 2, out)
    t:assert_contains(out, "none is kept now")
    -- the same in a private directory: found, but pid 1 does not hold the socket
    meta.sh(("chmod 700 %s/provium-1-fake %s/provium-1-fake/kept"):format(meta.quote(d), meta.quote(d)))
    out, code = attach(d, { "a", "--", "true" })
    t:assert_eq(code, 2, out)
    t:assert_contains(out, "vm `a` is no longer kept: the provium that kept it (pid 1) does not answer at")
end)
