-- A test file written for the seeds' Provium (docs/legacy.md), using only
-- the forms that did not change: test bodies without `t`, global asserts,
-- provium.create, vm:exec and its string helpers, the buffer forms of
-- syscall and ioctl with their raw results, background jobs, workers with
-- the same methods. It runs unchanged; one VM serves every test.
local vm = provium.create("default")
vm:boot({ files = { ["/opt/seeds/hello.sh"] = "data/seeds_hello.sh" } })

local SYS_open, SYS_close, SYS_write, SYS_readv, SYS_uname = 2, 3, 1, 19, 63
local SYS_renameat, SYS_socket = 264, 41
local O_WRONLY_CREAT = 0x41
local AT_FDCWD = -100

test("exec and the output's helpers", function()
    local r = vm:exec("echo hello; echo oops >&2")
    assert(r.ok, "echo failed")
    assert_eq(0, r.exit_code)
    assert_eq("hello\n", r.stdout.value)
    assert(r.stdout.contains("ell"))
    assert(r.stdout.starts_with("hel"))
    assert(not r.stdout.starts_with("ell"))
    assert_eq("hello", r.stdout.trim())
    assert_eq("oops", r.stderr.trim())
    assert_contains(r.stdout, "hello")
    local bad = vm:exec("exit 3")
    assert(not bad.ok)
    assert_eq(3, bad.exit_code)
end)

test("boot files: a host file at a guest path, runnable", function()
    local r = vm:exec("/opt/seeds/hello.sh seeds")
    assert_eq("hello seeds", r.stdout.trim())
end)

test("files and json", function()
    vm:write_file("/tmp/seeds.json", '{"name": "seeds", "n": [1, 2, 3]}')
    assert_eq('{"name": "seeds", "n": [1, 2, 3]}', vm:read_file("/tmp/seeds.json"))
    local v = vm:json("cat /tmp/seeds.json")
    assert_eq("seeds", v.name)
    assert_eq(3, #v.n)
    assert(not pcall(vm.json, vm, "echo not json"), "not JSON raises")
end)

test("dmesg, whole and filtered", function()
    vm:exec("echo seeds-marker-1 > /dev/kmsg")
    vm:wait_until(function() return vm:dmesg("seeds-marker-1") ~= "" end, { timeout = 10 })
    local only = vm:dmesg("seeds-marker-1")
    assert(only.contains("seeds-marker-1"))
    assert(not only.contains("Linux version"), "only the matching lines")
    assert(vm:dmesg().contains("Linux version"), "the whole log without a pattern")
end)

test("mount_vfs mounts what is missing, once", function()
    local function count(target)
        local n = 0
        for line in vm:read_file("/proc/self/mounts"):gmatch("[^\n]+") do
            if line:match("^%S+ (%S+) ") == target then n = n + 1 end
        end
        return n
    end
    vm:exec("umount /sys/kernel/security 2>/dev/null; true")
    assert_eq(0, count("/sys/kernel/security"))
    vm:mount_vfs()
    vm:mount_vfs()
    for _, target in ipairs({ "/proc", "/sys", "/dev" }) do
        assert_eq(1, count(target), target .. " mounted once")
    end
    local fs = vm:read_file("/proc/filesystems")
    if fs.contains("securityfs") then assert_eq(1, count("/sys/kernel/security")) end
end)

test("syscall_buf: a path in, a raw result out", function()
    local fd = vm:syscall_buf(SYS_open, 0, "/tmp/seeds-sb\0", 0, O_WRONLY_CREAT, 420)
    assert(fd >= 0, "open: " .. fd)
    assert_eq(3, (vm:syscall_buf(SYS_write, 1, "abc", fd, 0, 3)))
    assert_eq(0, (vm:syscall(SYS_close, fd).ret))
    assert_eq("abc", vm:read_file("/tmp/seeds-sb"))
    assert_eq(-2, (vm:syscall_buf(SYS_open, 0, "/nonexistent/x\0", 0, 0)), "-ENOENT")
    local ret, uts = vm:syscall_buf(SYS_uname, 0, string.rep("\0", 390))
    assert_eq(0, ret)
    assert(uts.starts_with("Linux"), "the buffer comes back")
end)

test("syscall_bufs: two buffers by argument index", function()
    vm:write_file("/tmp/seeds-old", "x")
    local ret, old, new = vm:syscall_bufs(SYS_renameat, { [1] = "/tmp/seeds-old\0", [3] = "/tmp/seeds-new\0" },
        AT_FDCWD, 0, AT_FDCWD, 0)
    assert_eq(0, ret)
    assert_eq("/tmp/seeds-old\0", old)
    assert_eq("/tmp/seeds-new\0", new)
    assert(vm:exists("/tmp/seeds-new") and not vm:exists("/tmp/seeds-old"))
end)

test("syscall_ptr: a pointer inside a buffer (readv)", function()
    vm:write_file("/tmp/seeds-rv", "hello world")
    local fd = vm:syscall_buf(SYS_open, 0, "/tmp/seeds-rv\0", 0, 0)
    assert(fd >= 0)
    local iov = provium.pack("u64 u64", 0, 5)
    local ret, iov_out, data = vm:syscall_ptr(SYS_readv, { [1] = iov },
        { { buf_idx = 1, ptr_offset = 0, data_len = 5, output = true } }, fd, 0, 1)
    assert_eq(5, ret)
    assert_eq("hello", data)
    assert_eq(16, #iov_out)
    vm:syscall(SYS_close, fd)
end)

test("ioctl_buf: SIOCGIFCONF fills a buffer its struct points at", function()
    vm:exec("ifconfig lo 127.0.0.1 up")
    local sock = vm:syscall(SYS_socket, 2, 2, 0).ret
    assert(sock >= 0)
    local ret, ifc, buf = vm:ioctl_buf(sock, 0x8912, provium.pack("u32 u32 u64", 400, 0, 0),
        { { ptr_offset = 8, buf_len = 400, output = true } })
    assert_eq(0, ret)
    assert_eq(40, (provium.unpack("u32", ifc)), "one struct ifreq")
    assert_eq("lo\0", buf:sub(1, 3))
    assert_eq(-9, (vm:ioctl_buf(9999, 0x8912, provium.pack("u32 u32 u64", 0, 0, 0), {})), "-EBADF")
    vm:syscall(SYS_close, sock)
end)

test("background jobs: poll, wait, kill", function()
    local job = vm:background("sleep 1; echo done")
    assert(job.id ~= nil and job.pid > 0)
    assert(vm:job_wait(job, 0).running, "still running when polled")
    local r = vm:job_wait(job, 30)
    assert(not r.running)
    assert_eq(0, r.exit_code)
    assert_eq("done", r.stdout.trim())
    local long = vm:background("sleep 100")
    assert(vm:job_wait(long, 0.2).running, "a timeout does not kill it")
    vm:job_kill(long)
    r = vm:job_wait(long, 30)
    assert(not r.running)
    assert_eq(9, r.signal)
end)

test("workers have the same methods", function()
    local w = vm:spawn({ uid = 1000 })
    assert_eq("1000", w:exec("id -u").stdout.trim())
    assert_eq(1000, w:json("id -u"))
    local ret, uts = w:syscall_buf(SYS_uname, 0, string.rep("\0", 390))
    assert_eq(0, ret)
    assert(uts.starts_with("Linux"))
    local job = w:background("id -u")
    assert_eq("1000", w:job_wait(job, 30).stdout.trim())
    assert(w:dmesg().contains("Linux version"))
    assert_eq("ok", w:wait_until(function() return "ok" end))
    w:close()
end)

test("todo marks one test", function()
    todo("seed-style todo")
    error("not reached")
end)

test("shutdown_all stops every VM", function()
    provium.shutdown_all()
    assert_eq("shutdown", vm:state())
end)
