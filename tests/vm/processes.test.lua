-- Processes (run_async), Tail streams, syscall_async, batch and the
-- resource accessors, on one VM; rng_seed on three small ones.
-- one VM, and a small one at a time for rng_seed (docs/running.md)
provium:claim { memory = "1G", cpus = 1 }
local vm = provium:vm("p", "default"):boot()
local sys = provium.sys

local function pipe()
    local r = vm:syscall(sys.pipe2, { args = { 0, 0 }, bufs = { string.rep("\0", 8) }, ptrs = { 0 } })
    return string.unpack("<i4i4", r.out_bufs[1])
end

test("run_async: wait gives the RunResult; a second wait gives it again", function(t)
    local p = vm:run_async("echo out; echo err >&2; sleep 0.2; exit 3")
    t:assert(p:pid() > 0, "a pid")
    t:assert(math.type(p:handle()) == "integer", "a handle")
    local st = p:status()
    t:assert_eq(st.running, true)
    t:assert_eq(st.status, "running")
    local r = p:wait()
    t:assert_eq(r.stdout, "out\n")
    t:assert_eq(r.stderr, "err\n")
    t:assert_eq(r.exit_code, 3)
    t:assert_eq(r.status, "exited")
    t:assert_eq(p:wait(), r)
    -- consumed: later ops still work, and kill is a no-op
    t:assert_eq(p:status().running, false)
    t:assert_eq(p:status().exit_code, 3)
    p:kill()
    p:close()
end)

test("run_async: call shapes and refusals", function(t)
    local r = vm:run_async("echo", { args = { "a", "b" }, env = { X = "1" } }):wait()
    t:assert_eq(r.stdout, "a b\n")
    t:assert_eq(vm:run_async({ "sh", "-c", "echo $Y" }, { env = { Y = "y" } }):wait().stdout, "y\n")
    t:assert_eq(vm:run_async("cat", { stdin = "given" }):wait("5s").stdout, "given")
    t:assert_contains(t:assert_raises(function() vm:run_async("true", { timeout = 1 }) end),
        "use proc:wait(timeout)")
    local p = vm:run_async("sleep 30")
    t:assert_contains(t:assert_raises(function() p:wait(0) end), "proc:status()")
    t:assert_contains(t:assert_raises(function() p:kill("bogus") end), "unknown signal name `bogus`")
    t:assert_contains(t:assert_raises(function() p:kill({}) end), "got table")
    local e = t:assert_raises(function() vm:run_async("/no/such/prog", { "x" }) end)
    t:assert_contains(e, "ENOENT")
    p:kill(9)
    t:assert_eq(p:wait().signal, 9)
end)

test("kill and signal by name and number; wait timeout kills", function(t)
    for _, sig in ipairs({ "term", "SIGINT", "hup", "usr1", 10, "12", "Kill" }) do
        local p = vm:run_async("sleep 30")
        p:kill(sig)
        local r = p:wait("10s")
        t:assert_eq(r.status, "signalled", tostring(sig))
        t:assert_eq(r.exit_code, -1)
    end
    -- stop and cont are not fatal. The command forks nothing: a stop and a
    -- cont sent to a process group while its shell forks can leave the new
    -- child stopped (the kernel hands the fork's child a group signal it
    -- collected during the fork after the cont; 1 run in 14-40 here).
    local p = vm:run_async("i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; echo done")
    p:signal("stop")
    p:signal("cont")
    t:assert_eq(p:wait("60s").stdout, "done\n")
    local q = vm:run_async("sleep 30")
    local r = q:wait(0.3)
    t:assert_eq(r.status, "timed_out")
    t:assert_eq(r.timed_out, true)
    t:assert_eq(r.exit_code, -2)
end)

test("stdin_write, close_stdin and the output streams", function(t)
    local p = vm:run_async("cat; echo bye >&2")
    local out, err = p:stdout_stream(), p:stderr_stream()
    t:assert_eq(out:meta().kind, "proc_stdout_stream")
    t:assert_eq(out:meta().detail, p:handle())
    t:assert_eq(p:stdin_write("one\n"), 4)
    t:assert_eq(out:read_until("one\n", 10), "one\n")
    p:stdin_write("two\n")
    p:close_stdin()
    t:assert_contains(t:assert_raises(function() p:stdin_write("x") end), "stdin is closed")
    t:assert_eq(out:read_until("two\n", 10), "two\n")
    t:assert_eq(err:read_until("bye\n", 10), "bye\n")
    local r = p:wait("10s")
    t:assert_eq(r.stdout, "one\ntwo\n") -- the capture keeps what the stream saw
    t:assert_eq(out:next(5), nil)
    t:assert(out:eof(), "stdout ended with the process")
    -- a stream opened late replays the output so far
    local q = vm:run_async("echo early; sleep 30")
    wait_until(function() return q:status().stdout_bytes > 0 end, { timeout = 10 })
    local s = q:stdout_stream()
    t:assert_eq(s:read_until("early\n", 10), "early\n")
    q:close() -- SIGTERM; the stream ends with the process
    t:assert_eq(s:next(5), nil)
    t:assert_eq(q:status().status, "signalled")
end)

test("pty: a terminal of its own, its window size, SIGWINCH on resize", function(t)
    -- vm:run: stdout and stderr are one terminal
    local r = vm:run("tty; stty size; echo err >&2", { pty = { rows = 30, cols = 100 } })
    t:assert_eq(r.exit_code, 0, r.stdout)
    t:assert_contains(r.stdout, "/dev/pts/")
    t:assert_contains(r.stdout, "30 100\r\n")
    t:assert_contains(r.stdout, "err\r\n")
    t:assert_eq(r.stderr, "")
    t:assert_contains(vm:run("stty size", { pty = true }).stdout, "24 80")
    -- run_async: typed keys, a resize the shell sees, job control's ^C
    local p = vm:run_async({ "/bin/sh", "-c",
        -- a signal ends a `read` early: the loop goes on
        "trap 'echo winch; stty size' WINCH; echo ready; while :; do read l && echo got $l; done" },
        { pty = true })
    local out = p:stdout_stream()
    out:read_until("ready", 10)
    t:assert_eq(p:stderr_stream():next(5), nil) -- all of it is stdout: this one ends at once
    p:stdin_write("one\n")
    out:read_until("got one", 10)
    p:resize(50, 132)
    out:read_until("50 132", 10)
    p:stdin_write("\3") -- ^C: the terminal sends SIGINT to its foreground group
    t:assert_eq(p:wait("10s").status, "signalled")
    t:assert_contains(t:assert_raises(function() p:resize(1, 1) end), "waited for")
    -- bad options and a resize of a process without a terminal
    t:assert_contains(t:assert_raises(function() vm:run("true", { pty = "yes" }) end),
        "opts.pty must be true or {rows = N, cols = N}, got string")
    t:assert_contains(t:assert_raises(function() vm:run("true", { pty = { rows = 0 } }) end),
        "opts.pty.rows must be an integer from 1 to 65535, got 0")
    t:assert_contains(t:assert_raises(function() vm:run("true", { pty = { width = 1 } }) end),
        "opts.pty: unknown key `width` (rows, cols)")
    local q = vm:run_async("sleep 30")
    t:assert_contains(t:assert_raises(function() q:resize(10, 10) end), "ENOTTY")
    t:assert_contains(t:assert_raises(function() q:resize(0, "x") end),
        "proc:resize: rows and cols must be integers from 1 to 65535")
    q:close()
end)

local left_running
test("a process left running ...", function(t)
    left_running = vm:run_async("sleep 300"):pid()
end)

test("... is stopped at the end of its test's scope", function(t)
    t:assert_eq(vm:run(("kill -0 %d"):format(left_running)).exit_code, 1)
end)

test("output beyond the cap is counted and marked, never a hang", function(t)
    local p = vm:run_async("head -c 70000000 /dev/zero")
    local r = p:wait("120s")
    t:assert_eq(r.status, "exited")
    t:assert_contains(r.stdout:sub(-200), "[provium: output truncated at 64 MiB of 70000000 bytes]")
end)

test("tail_file: start positions, appends, truncation", function(t)
    vm:write_file("/tmp/log", "0123456789\n")
    local from_end, line = vm:tail_file("/tmp/log"), debug.getinfo(1, "l").currentline
    local from_start = vm:tail_file("/tmp/log", { start = "beginning" })
    local last4 = vm:tail_file("/tmp/log", { start = -4 })
    local at3 = vm:tail_file("/tmp/log", { start = 3.9 })
    t:assert_eq(from_end:meta().kind, "tail_file")
    t:assert_eq(from_end:meta().detail, "/tmp/log")
    t:assert_eq(from_end:creation_site().line, line)
    vm:run("echo more >> /tmp/log")
    t:assert_eq(from_end:read_until("more\n", 10), "more\n")
    t:assert_eq(from_start:read_until("more\n", 10), "0123456789\nmore\n")
    t:assert_eq(last4:read_until("more\n", 10), "789\nmore\n")
    t:assert_eq(at3:read_until("\n", 10), "3456789\n")
    vm:write_file("/tmp/log", "new\n") -- shrinks: read from the start again
    t:assert_eq(from_end:read_until("new\n", 10), "new\n")
    t:assert_eq(vm:open_stream_count(), 4)
    from_start:close()
    t:assert_eq(vm:open_stream_count(), 3)
    t:assert_eq(from_start:next(), nil)
    t:assert_contains(t:assert_raises(function() from_start:read_until("x") end), "stream closed")
    t:assert_contains(t:assert_raises(function() vm:tail_file("/nope") end), "tail_file: ENOENT: /nope")
    t:assert_contains(t:assert_raises(function() vm:tail_file("/tmp/log", { start = "middle" }) end),
        'start must be "end"')
    t:assert_contains(t:assert_raises(function() vm:tail_file("/tmp/log", { from = 1 }) end),
        "unknown option `from`")
end)

test("fd_stream and file:tail_stream", function(t)
    local r, w = pipe()
    local s = vm:fd_stream(r)
    t:assert_eq(s:meta().kind, "fd_stream")
    vm:syscall(sys.write, { args = { w, 0, 5 }, bufs = { "hello" }, ptrs = { 1 } })
    t:assert_eq(s:read_until("hello", 10), "hello")
    vm:syscall(sys.close, w)
    t:assert_eq(s:next(10), nil) -- the pipe's end is the stream's end
    t:assert(s:eof(), "eof")
    vm:syscall(sys.close, r)

    vm:write_file("/tmp/f", "abcdef")
    local f = vm:open_file("/tmp/f", { read = true })
    f:read(2)
    local ts = f:tail_stream()
    t:assert_eq(ts:meta().kind, "file_tail_stream")
    t:assert_eq(ts:read_until("f", 10), "cdef")
    local fs = vm:fd_stream(f)
    t:assert_eq(fs:read_until("f", 10), "cdef")
    t:assert_eq(f:read(10), "cdef") -- a stream does not move the file's cursor
    t:assert_eq(vm:open_file_count(), 1)
    f:close()
    t:assert_eq(vm:open_file_count(), 0)
    t:assert_contains(t:assert_raises(function() vm:fd_stream("x") end), "expected a File")
end)

test("syscall_async: a blocked read does not hold up other calls", function(t)
    local r, w = pipe()
    local pend = vm:syscall_async(sys.read, { args = { r, 0, 16 }, bufs = { string.rep("\0", 16) }, ptrs = { 1 } })
    t:assert_contains(t:assert_raises(function() pend:await(0.2) end), "still running")
    t:assert_eq(vm:is_quiescent(), false)
    -- meanwhile other calls go through
    t:assert(vm:syscall(sys.getpid).ret > 0, "getpid while read blocks")
    vm:syscall(sys.write, { args = { w, 0, 3 }, bufs = { "abc" }, ptrs = { 1 } })
    local res = pend:await("10s")
    t:assert_eq(res.ret, 3)
    t:assert_eq(res.out_bufs[1]:sub(1, 3), "abc")
    t:assert_eq(pend:await(), res)
    vm:syscall(sys.close, r)
    vm:syscall(sys.close, w)
    t:assert_eq(vm:syscall_async(sys.getpid):await().ret, vm:syscall(sys.getpid).ret)
    t:assert_contains(t:assert_raises(function() vm:syscall_async("x") end), "vm:syscall_async")
end)

test("batch: one round trip, per-op results in order", function(t)
    local res = vm:batch(function(b)
        b:write_file("/tmp/b1", "one")
        b:mkdir("/tmp/bd/sub", { parents = true })
        b:read_file("/tmp/b1")
        b:read_file("/nope")
        b:stat("/tmp/b1")
        b:listdir("/tmp/bd")
        b:run("echo hi")
        b:syscall(sys.getpid)
        b:rename("/tmp/b1", "/tmp/b2")
        b:unlink("/tmp/b2")
    end)
    t:assert_eq(#res, 10)
    t:assert_eq(res[1].ok, nil)
    t:assert_eq(res[1].err, nil)
    t:assert_eq(res[3].ok, "one")
    t:assert_eq(res[4].err, "No such file or directory")
    t:assert_eq(res[5].ok.size, 3)
    t:assert_eq(res[6].ok[1].name, "sub")
    t:assert_eq(res[7].ok.stdout, "hi\n")
    t:assert(res[8].ok.ret > 0, "getpid")
    t:assert_eq(vm:exists("/tmp/b2"), false)
    t:assert_contains(t:assert_raises(function()
        vm:batch(function(b) b:syscall(sys.read, { args = { 0 }, ptrs = { 1 } }) end)
    end), "ptrs.buf must be an index below 0")
    t:assert_contains(t:assert_raises(function()
        vm:batch(function(b) b:syscall("read") end)
    end), "b:syscall: the syscall number must be an integer")
    t:assert_eq(#vm:batch(function() end), 0)
end)

-- provium's own resident memory (this file runs in one provium process)
local function rss_kib()
    for line in io.lines("/proc/self/status") do
        local kb = line:match("^VmRSS:%s+(%d+) kB")
        if kb then return tonumber(kb) end
    end
    error("no VmRSS in /proc/self/status")
end

local UNAME = { args = { 0 }, bufs = { string.rep("\0", 4096) }, ptrs = { 0 } }

test("batch: a syscall row takes vm:syscall's buffers and returns its out_bufs", function(t)
    local one = vm:syscall(sys.uname, UNAME)
    t:assert_eq(one.ret, 0)
    t:assert_eq(one.out_bufs[1]:sub(1, 5), "Linux")
    local r, w = pipe()
    local res = vm:batch(function(b)
        b:syscall(sys.uname, UNAME)
        b:syscall(sys.write, { args = { w, 0, 5 }, bufs = { "hello" }, ptrs = { 1 } })
        -- readv through a nested pointer: an iovec whose base is bufs[2]
        b:syscall(sys.readv, { args = { r, 0, 1 },
            bufs = { string.pack("<I8I8", 0, 5), string.rep("\0", 5) }, ptrs = { 1 },
            nested = { { parent = 1, child = 2, offset = 0 } } })
        b:syscall(sys.close, 9999)
    end)
    vm:syscall(sys.close, r)
    vm:syscall(sys.close, w)
    -- the same fields as vm:syscall's result, the same bytes
    for _, k in ipairs({ "ret", "result", "errno" }) do t:assert_eq(res[1].ok[k], one[k], k) end
    t:assert_eq(#res[1].ok.out_bufs, 1)
    t:assert_eq(res[1].ok.out_bufs[1], one.out_bufs[1])
    t:assert_eq(res[2].ok.ret, 5)
    t:assert_eq(res[2].ok.out_bufs[1], "hello")
    t:assert_eq(res[3].ok.ret, 5)
    t:assert_eq(res[3].ok.out_bufs[2], "hello")
    t:assert_eq(res[4].ok.ret, -1)
    t:assert_eq(res[4].ok.errno, provium.errno.EBADF)
    t:assert_eq(#res[4].ok.out_bufs, 0)
end)

-- Kept after its batch, each round's 500 out buffers of 4 KiB would add 2 MiB:
-- 40 MiB over 20 rounds. What one round allocates and frees (its requests,
-- replies and strings, ~8 MiB) may stay in the allocator, but only once.
-- Measured over the 20 rounds: under 30 KiB of growth, and 80 MiB when the
-- decoded buffers were not released.
test("batch: syscall out buffers do not stay in provium's memory", function(t)
    local ROWS, ROUNDS = 500, 20
    local function round()
        local res = vm:batch(function(b)
            for _ = 1, ROWS do b:syscall(sys.uname, UNAME) end
        end)
        t:assert_eq(#res, ROWS)
        t:assert_eq(#res[ROWS].ok.out_bufs[1], 4096)
        res = nil
        collectgarbage()
        collectgarbage()
    end
    round() -- the allocator reaches its working size
    round()
    local before = rss_kib()
    for _ = 1, ROUNDS do round() end
    local grew = rss_kib() - before
    t:log(("provium's RSS grew %d KiB over %d batches of %d rows"):format(grew, ROUNDS, ROWS))
    t:assert(grew < 20 * 1024, ("provium's RSS grew %d KiB"):format(grew))
end)

test("accessors", function(t)
    t:assert_eq(vm:is_quiescent(), true)
    t:assert_eq(vm:open_stream_count(), 0)
    t:assert_contains(vm:console_socket_path(), "serial.sock")
    local s = vm:console():read()
    t:assert_eq(vm:open_stream_count(), 1)
    t:assert_eq(vm:is_quiescent(), false)
    s:close()
    local p = vm:run_async("sleep 30")
    t:assert_eq(vm:is_quiescent(), false)
    p:close()
    t:assert_eq(vm:is_quiescent(), true)
end)

-- virtio-rng bytes as hex, from a VM booted with this seed
local function hwrng(name, seed)
    local v = provium:vm(name, "default", { rng_seed = seed, memory = "256M" }):boot()
    wait_until(function()
        return v:run("cat /sys/class/misc/hw_random/rng_current 2>/dev/null"):row():match("virtio")
    end, { timeout = 30, desc = "virtio-rng" })
    local r = v:run("head -c 4096 /dev/hwrng | od -An -tx1 -v | tr -d ' \\n'"):assert_ok()
    v:shutdown()
    return r.stdout
end

test("rng_seed makes virtio-rng deterministic", function(t)
    local a, b, c = hwrng("r1", 7), hwrng("r2", 7), hwrng("r3", 8)
    t:assert_eq(#a, 8192)
    -- the kernel's own hwrng reads may shift where /dev/hwrng starts: look for a window
    local window = a:sub(4097, 4160)
    t:assert(b:find(window, 1, true), "the same seed gives the same bytes")
    t:assert(not c:find(window, 1, true), "another seed gives other bytes")
    t:assert_contains(t:assert_raises(function() provium:vm("r4", "default", { rng_seed = -1 }):boot() end),
        "rng_seed must be a non-negative integer")
end)
