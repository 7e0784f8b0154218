-- Raw syscalls, ioctls and the agent's memory, on one VM.
local vm = provium:vm("s", "default"):boot()
local sys, E = provium.sys, provium.errno

local function cstr(s) return s .. "\0" end

test("name tables come from the UAPI headers and libc", function(t)
    t:assert_eq(sys.getpid, 39)
    t:assert_eq(sys.ioctl, 16)
    t:assert_eq(E.EPERM, 1)
    t:assert_eq(E.EFAULT, 14)
    t:assert_eq(provium.sys, sys)
end)

test("integer form: a result, and errno on failure", function(t)
    local r = vm:syscall(sys.getpid)
    t:assert(r.ret > 0, "a pid")
    t:assert_eq(r.result, r.ret)
    t:assert_eq(r.errno, 0)
    r = vm:syscall(sys.close, 9999)
    t:assert_eq(r.ret, -1)
    t:assert_eq(r.errno, E.EBADF)
end)

test("table form: buffers in and out; an fd lives across calls", function(t)
    local fd = vm:syscall(sys.open, { args = { 0, 0x42, 0x1a4 }, bufs = { cstr("/tmp/sys") }, ptrs = { 0 } }).ret
    t:assert(fd >= 0, "open gave " .. fd)
    local w = vm:syscall(sys.write, { args = { fd, 0, 5 }, bufs = { "hello" }, ptrs = { 1 } })
    t:assert_eq(w.ret, 5)
    vm:syscall(sys.lseek, fd, 0, 0)
    local r = vm:syscall(sys.read, { args = { fd, 0, 5 }, bufs = { string.rep("\0", 5) }, ptrs = { 1 } })
    t:assert_eq(r.ret, 5)
    t:assert_eq(r.out_bufs[1], "hello")
    t:assert_eq(vm:read_file("/tmp/sys"), "hello")
    -- nested: readv's struct iovec holds a pointer to the data buffer
    vm:syscall(sys.lseek, fd, 0, 0)
    local iov = provium.pack("<I8 I8", 0, 5)
    r = vm:syscall(sys.readv, { args = { fd, 0, 1 }, bufs = { iov, string.rep("\0", 5) },
        ptrs = { 1 }, nested = { { parent = 1, child = 2, offset = 0 } } })
    t:assert_eq(r.ret, 5)
    t:assert_eq(r.out_bufs[2], "hello")
    t:assert_eq(vm:syscall(sys.close, fd).ret, 0)
end)

test("a wild pointer is EFAULT, and the agent lives on", function(t)
    local r = vm:syscall(sys.write, 1, 0xdead0000, 16)
    t:assert_eq(r.ret, -1)
    t:assert_eq(r.errno, E.EFAULT)
    t:assert_eq(vm:run("echo alive").stdout, "alive\n")
end)

test("bad shapes are refused with the reason", function(t)
    t:assert_contains(t:assert_raises(function() vm:syscall("getpid") end), "must be an integer")
    t:assert_contains(t:assert_raises(function() vm:syscall(sys.read, 1, 2, 3, 4, 5, 6, 7) end), "at most 6")
    t:assert_contains(t:assert_raises(function()
        vm:syscall(sys.read, { bufs = { "x" }, nested = { { parent = 1, child = 1, offset = 4 } } })
    end), "must leave 8 bytes inside buffer 1")
end)

test("ioctl: data by address comes back as out_data", function(t)
    local p = vm:syscall(sys.pipe2, { args = { 0, 0 }, bufs = { string.rep("\0", 8) }, ptrs = { 0 } })
    t:assert_eq(p.ret, 0)
    local rfd, wfd = provium.unpack("<i4 i4", p.out_bufs[1])
    vm:syscall(sys.write, { args = { wfd, 0, 3 }, bufs = { "abc" }, ptrs = { 1 } })
    local r = vm:ioctl(rfd, 0x541B --[[FIONREAD]], provium.pack("<i4", 0))
    t:assert_eq(r.ret, 0)
    t:assert_eq((provium.unpack("<i4", r.out_data)), 3)
end)

test("ioctl: ptr_offsets put buffer addresses inside data (SIOCGIFCONF)", function(t)
    vm:run("ifconfig lo 127.0.0.1 up"):assert_ok()
    local sock = vm:syscall(sys.socket, 2 --[[AF_INET]], 2 --[[SOCK_DGRAM]], 0).ret
    t:assert(sock >= 0)
    -- struct ifconf { int ifc_len; /* pad */ char *ifc_buf; } with ifc_buf at offset 8
    local r = vm:ioctl(sock, 0x8912, provium.pack("<i4 i4 I8", 400, 0, 0),
        { bufs = { string.rep("\0", 400) }, ptr_offsets = { 8 } })
    t:assert_eq(r.ret, 0)
    t:assert_eq((provium.unpack("<i4", r.out_data)), 40, "one struct ifreq back")
    t:assert_eq(r.out_bufs[1]:sub(1, 3), "lo\0")
end)

test("read_mem and write_mem on memory a syscall mapped", function(t)
    local addr = vm:syscall(sys.mmap, 0, 4096, 3, 0x22, -1, 0).ret
    t:assert(addr > 0, "mmap")
    vm:write_mem(addr + 10, "provium")
    t:assert_eq(vm:read_mem(addr + 10, 7), "provium")
    t:assert_eq(vm:read_mem(addr, 2), "\0\0")
    local err = t:assert_raises(function() vm:read_mem(0, 8) end)
    t:assert_contains(err, "EFAULT")
    t:assert_contains(t:assert_raises(function() vm:write_mem(8, "x") end), "EFAULT")
    t:assert_eq(vm:syscall(sys.munmap, addr, 4096).ret, 0)
end)
