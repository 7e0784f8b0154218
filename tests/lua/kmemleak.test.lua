-- The kmemleak report parser (lua/kmemleak.lua) over a report written for
-- this test in the two forms /sys/kernel/debug/kmemleak has printed: frames
-- with `[<address>]` (before 6.7) and bare frames after `backtrace (crc ...)`.
local K = _provium.kmemleak

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."

local function read(name)
    local f = assert(io.open(here .. "/data/" .. name, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

test("each unreferenced object is one leak, titled by its first non-allocator frame", function(t)
    local leaks = K.parse(read("kmemleak-report.txt"))
    t:assert_eq(#leaks, 2)
    t:assert_eq(leaks[1].title, "memory leak in demo_alloc_ctx")
    t:assert_eq(leaks[2].title, "memory leak in demo_ring_grow")
    -- each excerpt is its object's whole report, and only that
    t:assert_contains(leaks[1].excerpt, "unreferenced object 0xffff888004a3c200 (size 64):")
    t:assert_contains(leaks[1].excerpt, "entry_SYSCALL_64_after_hwframe+0x6e/0xd8")
    t:assert(not leaks[1].excerpt:find("0xffff888005b1e000", 1, true), "the second object is not in the first")
    t:assert_contains(leaks[2].excerpt, "comm \"demo-worker\", pid 256")
    t:assert_contains(leaks[2].excerpt, "ret_from_fork_asm+0x1b/0x30")
end)

test("nothing to report: no leaks", function(t)
    t:assert_eq(#K.parse(""), 0)
    t:assert_eq(#K.parse("kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)\n"), 0)
end)

test("meta.kmemleak, else --kmemleak", function(t)
    t:assert_eq(K.wanted({ kmemleak = true }), true)
    t:assert_eq(K.wanted({ kmemleak = false }), false)
    t:assert_eq(K.wanted({}), os.getenv("PROVIUM_KMEMLEAK") == "1")
end)
