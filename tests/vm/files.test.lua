-- File handles, directories, push and pull, on one VM.
local meta = require("lib.meta")
local vm = provium:vm("f", "default"):boot()

test("open_file: write, seek, tell, read, read_all, close", function(t)
    local f = vm:open_file("/tmp/h", { write = true, read = true, create = true, truncate = true })
    t:assert_eq(f:write("hello world"), 11)
    t:assert_eq(f:tell(), 11)
    t:assert_eq(f:seek(0), 0)
    t:assert_eq(f:read(5), "hello")
    t:assert_eq(f:seek(1, "cur"), 6)
    t:assert_eq(f:read_all(), "world")
    t:assert_eq(f:read(10), "", "end of file is an empty string")
    t:assert_eq(f:seek(-5, "end"), 6)
    t:assert(f:fd() > 2, "a real guest fd")
    f:close()
    f:close() -- idempotent
    t:assert_eq(f:fd(), 0)
    t:assert_contains(t:assert_raises(function() f:read(1) end), "file is closed")
end)

test("open_file: modes, perm, errors", function(t)
    t:assert_contains(t:assert_raises(function() vm:open_file("/tmp/x", {}) end),
        "needs at least one of read, write or append")
    t:assert_contains(t:assert_raises(function() vm:open_file("/nope/x", { read = true }) end),
        "ENOENT: /nope/x")
    local f = vm:open_file("/tmp/p", { write = true, create = true, exclusive = true, perm = 0x180 })
    f:close()
    t:assert_eq(vm:stat("/tmp/p").perm, 0x180)
    t:assert_contains(t:assert_raises(function()
        vm:open_file("/tmp/p", { write = true, create = true, exclusive = true })
    end), "EEXIST")
    local a = vm:open_file("/tmp/p", { append = true })
    a:write("1")
    a:write("2")
    a:close()
    t:assert_eq(vm:read_file("/tmp/p"), "12")
    local r = vm:open_file("/tmp/p", { read = true })
    t:assert_contains(t:assert_raises(function() r:seek(0, "middle") end),
        "seek: whence must be set/cur/end, got `middle`")
    r:close()
end)

test("a file handle's fd works with ioctl", function(t)
    local f = vm:open_file("/tmp/h", { read = true })
    local r = vm:ioctl(f:fd(), 0x541B --[[FIONREAD]], provium.pack("<i4", 0))
    t:assert_eq(r.ret, 0)
    t:assert_eq((provium.unpack("<i4", r.out_data)), 11)
end)

local leaked
test("files opened in a test close when it ends", function(t)
    leaked = vm:open_file("/tmp/h", { read = true })
end)
test("... closed", function(t)
    t:assert_eq(leaked:fd(), 0)
end)

test("mkdir, listdir, rename, unlink", function(t)
    vm:mkdir("/tmp/d/e/f", { parents = true })
    t:assert_contains(t:assert_raises(function() vm:mkdir("/tmp/x/y") end), "ENOENT")
    vm:write_file("/tmp/d/a.txt", "a")
    vm:run("ln -s a.txt /tmp/d/link"):assert_ok()
    local names = {}
    for _, e in ipairs(vm:listdir("/tmp/d")) do names[#names + 1] = e.name .. ":" .. e.entry_type end
    t:assert_eq(table.concat(names, " "), "a.txt:file e:directory link:symlink")
    vm:rename("/tmp/d/a.txt", "/tmp/d/b.txt")
    t:assert(vm:exists("/tmp/d/b.txt") and not vm:exists("/tmp/d/a.txt"))
    t:assert_contains(t:assert_raises(function() vm:unlink("/tmp/d/e") end), "ENOTEMPTY")
    vm:unlink("/tmp/d/e/f")
    vm:unlink("/tmp/d/b.txt")
    t:assert(not vm:exists("/tmp/d/e/f"))
end)

test("push_file and pull_file stream a 40 MiB file", function(t)
    local d = meta.tmpdir()
    local src = d .. "/big"
    os.execute("head -c 41943040 /dev/urandom > " .. src)
    vm:push_file(src, "/tmp/big")
    t:assert_eq(vm:stat("/tmp/big").size, 41943040)
    vm:pull_file("/tmp/big", d .. "/back")
    t:assert(os.execute("cmp -s " .. src .. " " .. d .. "/back"), "the round trip is exact")
    vm:unlink("/tmp/big")
    meta.rmdir(d)
end)

test("read_file, file:read_all and pull_file stop at max_size", function(t)
    vm:run("head -c 100000 /dev/zero > /tmp/mx"):assert_ok()
    t:assert_eq(#vm:read_file("/tmp/mx", { max_size = 100000 }), 100000)
    t:assert_contains(t:assert_raises(function() vm:read_file("/tmp/mx", { max_size = 99999 }) end),
        "read_file: /tmp/mx: larger than max_size (99999 bytes)")
    local f <close> = vm:open_file("/tmp/mx", { read = true })
    t:assert_contains(t:assert_raises(function() f:read_all({ max_size = 1000 }) end),
        "file:read_all: /tmp/mx: larger than max_size (1000 bytes)")
    local d = meta.tmpdir()
    t:assert_contains(t:assert_raises(function() vm:pull_file("/tmp/mx", d .. "/mx", { max_size = 4096 }) end),
        "pull_file: /tmp/mx: larger than max_size (4096 bytes)")
    t:assert_eq(io.open(d .. "/mx"), nil, "the cut-short host file is removed")
    vm:pull_file("/tmp/mx", d .. "/mx", { max_size = 100000 })
    t:assert_eq(#io.open(d .. "/mx", "rb"):read("a"), 100000)
    t:assert_contains(t:assert_raises(function() vm:read_file("/tmp/mx", { max_size = -1 }) end),
        "max_size must be a non-negative integer")
    meta.rmdir(d)
end)
