-- Workers (docs/workers.md): agent processes with their own
-- credentials, on one VM.
local vm = provium:vm("w", "default"):boot()
local sys = provium.sys

vm:run("mkdir -p /tmp/wk && chmod 1777 /tmp/wk"):assert_ok()

local function cap_eff(status)
    return status:match("CapEff:%s*(%x+)")
end

test("a worker runs as the uid, gid and groups it was given, in its cwd and env", function(t)
    local w = vm:spawn_worker { uid = 1000, groups = { 10, 20 }, no_new_privs = true,
        cwd = "/tmp/wk", env = { W = "yes" } }
    t:assert(w:pid() > 0, "a pid")
    t:assert_eq(w:state(), "running")
    t:assert_eq(w:run("id -u; id -g; id -G; pwd; echo $W").stdout,
        "1000\n1000\n1000 10 20\n/tmp/wk\nyes\n")
    t:assert_eq(w:syscall(sys.getuid).ret, 1000)
    t:assert_eq(w:syscall(sys.getpid).ret, w:pid())
    -- the worker's own /proc/self: no capabilities, no_new_privs
    local st = w:read_file("/proc/self/status")
    t:assert_contains(st, "NoNewPrivs:\t1")
    t:assert_eq(cap_eff(st), "0000000000000000")
    -- what it creates is its own
    local f = w:open_file("/tmp/wk/mine", { write = true, create = true })
    t:assert_eq(f:write("x"), 1)
    t:assert_eq(vm:open_file_count(), 1, "a worker's file counts for its VM")
    f:close()
    t:assert_eq(vm:stat("/tmp/wk/mine").uid, 1000)
    t:assert_eq(w:stat("/tmp/wk/mine").gid, 1000)
    -- and what it may not touch says so, naming the worker
    local err = t:assert_raises(function() w:write_file("/root/nope", "x") end)
    t:assert_contains(err, "vm `w` worker")
    t:assert_contains(err, "EACCES")
    -- the VM itself is still root
    t:assert_eq(vm:run("id -u").stdout, "0\n")
end)

test("caps: exactly the capabilities asked for, kept across exec", function(t)
    local w = vm:spawn_worker { uid = 1000, caps = { "net_bind_service", "CAP_CHOWN" } }
    t:assert_eq(cap_eff(w:read_file("/proc/self/status")), "0000000000000401")
    t:assert_eq(cap_eff(w:run("cat /proc/self/status").stdout), "0000000000000401")
    -- root without capabilities is refused what root could do
    local r = vm:spawn { caps = {} }
    t:assert_eq(r:run("id -u").stdout, "0\n")
    t:assert_eq(r:syscall(sys.sethostname, { args = { 0, 1 }, bufs = { "x" }, ptrs = { 0 } }).errno,
        provium.errno.EPERM)
    t:assert_eq(provium.caps.sys_admin, 21)
end)

-- bind(2) to port 80: EACCES without CAP_NET_BIND_SERVICE, allowed with it
local function bind80(w)
    local fd = w:syscall(sys.socket, 2, 1, 0).ret
    local addr = string.pack("<I2>I2<I4I8", 2, 80, 0, 0)
    return w:syscall(sys.bind, { args = { fd, 0, #addr }, bufs = { addr }, ptrs = { 1 } }).errno
end

test("the example of docs/workers.md: a capability is enough for port 80", function(t)
    t:assert_eq(bind80(vm:spawn_worker { uid = 1000 }), provium.errno.EACCES)
    t:assert_eq(bind80(vm:spawn_worker { uid = 1000, caps = { "net_bind_service" } }), 0)
end)

test("two workers run at once; handles and streams live in their worker", function(t)
    local a, b = vm:spawn_worker(), vm:spawn_worker { uid = 1000 }
    local pa = a:run_async("sleep 1; echo a")
    t:assert_eq(b:run("echo b").stdout, "b\n")
    t:assert_eq(pa:status().running, true, "a's process still runs while b answers")
    t:assert_eq(pa:wait().stdout, "a\n")
    -- a blocking syscall in one worker, other calls meanwhile
    local rfd, wfd = string.unpack("<i4i4", a:syscall(sys.pipe2,
        { args = { 0, 0 }, bufs = { string.rep("\0", 8) }, ptrs = { 0 } }).out_bufs[1])
    local pend = a:syscall_async(sys.read, { args = { rfd, 0, 4 }, bufs = { "\0\0\0\0" }, ptrs = { 1 } })
    t:assert_eq(b:syscall(sys.getuid).ret, 1000)
    t:assert_eq(a:syscall(sys.write, { args = { wfd, 0, 2 }, bufs = { "hi" }, ptrs = { 1 } }).ret, 2)
    local res = pend:await("10s")
    t:assert_eq(res.ret, 2)
    t:assert_eq(res.out_bufs[1]:sub(1, 2), "hi")
    -- a's descriptors are a's own
    t:assert_eq(a:syscall(sys.dup3, wfd, 200, 0).ret, 200)
    t:assert_eq(a:syscall(sys.fcntl, 200, 1).errno, 0)
    t:assert_eq(b:syscall(sys.fcntl, 200, 1).errno, provium.errno.EBADF)
    t:assert_eq(vm:syscall(sys.fcntl, 200, 1).errno, provium.errno.EBADF)
    -- tails and batches go through the worker too
    b:write_file("/tmp/wk/log", "one\n")
    local s = b:tail_file("/tmp/wk/log", { start = "beginning" })
    t:assert_eq(s:next("10s"), "one\n")
    s:close()
    local out = b:batch(function(x)
        x:run("id -u")
        x:stat("/root/nope")
    end)
    t:assert_eq(out[1].ok.stdout, "1000\n")
    t:assert(out[2].err, "an error for the second op")
end)

test("kill broadcasts, join collects, close ends the worker", function(t)
    local w = vm:spawn_worker()
    t:assert_eq(#w:join(), 0)
    local p1, p2 = w:run_async("sleep 30"), w:run_async("sleep 31")
    w:kill("term")
    local done = w:join()
    t:assert_eq(#done, 2)
    t:assert_eq(done[1].status, "signalled")
    t:assert_eq(done[2].signal, 15)
    t:assert_eq(p1:wait(), done[1])
    t:assert_eq(p2:status().running, false)
    t:assert_contains(t:assert_raises(function() w:kill({}) end), "got table")
    t:assert_contains(t:assert_raises(function() w:kill("nope") end), "unknown signal name `nope`")
    t:assert_eq(w:close(), "exited with status 0")
    t:assert_eq(w:close(), nil, "a second close is a no-op")
    t:assert_eq(w:state(), "closed")
    t:assert_contains(t:assert_raises(function() w:run("true") end), "it is closed")
end)

local lingering
test("scope end closes a worker and what it runs", function(t)
    local w = vm:spawn_worker()
    lingering = w:run_async("sleep 4242"):pid()
end)

test("... so nothing is left of it", function(t)
    t:assert(lingering, "the previous test ran")
    t:assert_eq(vm:run("kill -0 " .. lingering).exit_code, 1)
end)

test("a worker that dies fails its calls with how it ended", function(t)
    local w = vm:spawn_worker()
    local err = t:assert_raises(function() w:run("kill -9 $PPID; sleep 5") end)
    t:assert_contains(err, "ECHILD")
    t:assert_contains(err, "killed by signal 9")
    t:assert_eq(w:state(), "exited")
    t:assert_contains(t:assert_raises(function() w:stat("/") end), "killed by signal 9")
    t:assert_contains(w:close(), "killed by signal 9")
    t:assert_eq(vm:run("echo alive").stdout, "alive\n")
end)

test("options are checked", function(t)
    local function refused(opts, want)
        t:assert_contains(t:assert_raises(function() vm:spawn_worker(opts) end), want)
    end
    refused({ thread = true }, "{thread = true} is not supported")
    refused({ bogus = 1 }, "unknown option `bogus`")
    refused({ uid = "root" }, "uid must be a numeric id")
    refused({ groups = { 1, -2 } }, "groups[2] must be a numeric id")
    refused({ caps = { "nope" } }, "unknown capability `nope`")
    refused({ env = { ["A=B"] = "x" } }, "not a variable name")
    refused({ cwd = "/nonexistent" }, "chdir: No such file or directory")
    refused(5, "opts must be a table")
    t:assert_eq(vm:spawn_worker { thread = false }:run("echo ok").stdout, "ok\n")
end)

test("a reset ends every worker", function(t)
    local w = vm:spawn_worker()
    vm:reset()
    t:assert_contains(t:assert_raises(function() w:run("true") end), "rebooted since it started")
    t:assert_eq(w:state(), "exited")
    t:assert_eq(vm:spawn_worker():run("echo new").stdout, "new\n")
end)

test("a finalizer never switches where a request goes", function(t)
    -- Pending calls of a worker that become garbage are finalized in the
    -- middle of other calls (GC on every allocation here). Each request
    -- names its target, so the VM's own requests still run as root.
    local w = vm:spawn_worker { uid = 1000 }
    local env = {}
    for i = 1, 200 do env["V" .. i] = ("x"):rep(i) end -- allocations inside the call
    collectgarbage("incremental", 1, 1000)
    for _ = 1, 30 do
        for _ = 1, 20 do w:syscall_async(sys.getpid) end
        t:assert_eq(vm:run("id -u", { env = env }).stdout, "0\n")
    end
    collectgarbage("incremental", 200, 100)
    t:assert_eq(w:run("id -u").stdout, "1000\n")
    w:close()
end)
