-- Test an out-of-tree kernel module end to end: build it against the guest
-- kernel's headers, load it, drive /dev/provium_demo through file handles,
-- ioctls (one with a struct holding a user pointer), raw syscalls and the
-- agent's memory, see a WARN_ON caught as a splat, unload it.
local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local sys = provium.sys
local DEMO_GET_LEN, DEMO_SET_FROM = 0x80045001, 0x40105002

local vm = provium:vm("m", "default"):boot()
local kver = vm:kernel_release()
local headers = "/usr/src/linux-headers-" .. kver

local function build()
    if not io.open(headers .. "/Makefile") then
        return nil, "no headers for " .. kver .. " in " .. headers ..
            " (make deps installs linux-headers-cloud-amd64)"
    end
    local ok = os.execute(("make -s -C %q KVER=%q >/dev/null"):format(here, kver))
    if not ok then return nil, "building the module failed: run make -C " .. here end
    return here .. "/provium_demo.ko"
end
local ko, why = build()

local function need_module(t)
    if not ko then t:skip(why) end
end

test("insmod creates the device", function(t)
    need_module(t)
    vm:insmod(ko)
    t:assert(vm:exists("/sys/module/provium_demo"), "the module is loaded")
    wait_until(function() return vm:exists("/dev/provium_demo") end, { desc = "/dev/provium_demo" })
    t:assert_eq(vm:stat("/dev/provium_demo").entry_type, "char_device")
end)

test("write and read through a file handle", function(t)
    need_module(t)
    local f <close> = vm:open_file("/dev/provium_demo", { read = true, write = true })
    t:assert_eq(f:write("hello"), 5)
    f:seek(0)
    t:assert_eq(f:read(100), "hello")
end)

test("ioctl: a length out, and a struct holding a user pointer in", function(t)
    need_module(t)
    local f <close> = vm:open_file("/dev/provium_demo", { read = true })
    local r = vm:ioctl(f:fd(), DEMO_GET_LEN, provium.pack("<I4", 0))
    t:assert_eq(r.ret, 0)
    t:assert_eq((provium.unpack("<I4", r.out_data)), 5)
    -- struct demo_xfer { __u64 ptr; __u32 len; __u32 flags; }: ptr at offset 0
    local payload = "set through a pointer"
    r = vm:ioctl(f:fd(), DEMO_SET_FROM, provium.pack("<I8 I4 I4", 0, #payload, 0),
        { bufs = { payload }, ptr_offsets = { 0 } })
    t:assert_eq(r.ret, 0)
    t:assert_eq(vm:read_file("/dev/provium_demo"), payload)
    -- a bad flag is refused by the driver
    r = vm:ioctl(f:fd(), DEMO_SET_FROM, provium.pack("<I8 I4 I4", 0, 1, 7),
        { bufs = { "x" }, ptr_offsets = { 0 } })
    t:assert_eq(r.errno, provium.errno.EINVAL)
    -- an unknown command
    t:assert_eq(vm:ioctl(f:fd(), 0x5099).errno, provium.errno.ENOTTY)
end)

test("raw syscalls into memory the test reads back", function(t)
    need_module(t)
    local fd = vm:syscall(sys.open, { args = { 0, 2 --[[O_RDWR]] },
        bufs = { "/dev/provium_demo\0" }, ptrs = { 0 } }).ret
    t:assert(fd >= 0)
    local w = vm:syscall(sys.write, { args = { fd, 0, 9 }, bufs = { "raw bytes" }, ptrs = { 1 } })
    t:assert_eq(w.ret, 9)
    local page = vm:syscall(sys.mmap, 0, 4096, 3, 0x22, -1, 0).ret
    t:assert_eq(vm:syscall(sys.pread64, fd, page, 9, 0).ret, 9)
    t:assert_eq(vm:read_mem(page, 9), "raw bytes")
    vm:syscall(sys.munmap, page, 4096)
    vm:syscall(sys.close, fd)
end)

test("the WARN_ON path is caught as a kernel splat", { allow_kernel_warnings = true }, function(t)
    need_module(t)
    vm:write_file("/dev/provium_demo", "provium-warn")
    local s = vm:splats()
    t:assert_eq(#s, 1)
    t:assert_eq(s[1].title, "WARNING in demo_write")
    t:assert_contains(s[1].excerpt, "provium_demo")
end)

test("rmmod unloads it", function(t)
    need_module(t)
    vm:rmmod("provium_demo")
    t:assert(not vm:exists("/sys/module/provium_demo"))
    local err = t:assert_raises(function() vm:rmmod("provium_demo") end)
    t:assert_contains(err, "ENOENT")
end)

test("modprobe loads a module of the kernel with its dependencies", function(t)
    vm:modprobe("vmw_vsock_virtio_transport")
    t:assert(vm:exists("/sys/module/vsock"), "the dependency first")
    t:assert(vm:exists("/sys/module/vmw_vsock_virtio_transport"))
end)
