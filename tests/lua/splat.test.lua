-- The splat scanner over hand-written logs of kinds the test kernel cannot be
-- made to produce here (KASAN, UBSAN, hung tasks, RCU stalls, BUG).
local scan = _provium.splat.scan

local function titles(text)
    local out = {}
    for _, s in ipairs(scan(text)) do out[#out + 1] = s.title end
    return out
end

test("KASAN, with its report cut at the end marker", function(t)
    local s = scan([[
[   10.000001] ==================================================================
[   10.000002] BUG: KASAN: slab-use-after-free in demo_read+0x4a/0x90 [demo]
[   10.000003] Read of size 8 at addr ffff888003a1b2c8 by task cat/211
[   10.000004] Call Trace:
[   10.000005]  demo_read+0x4a/0x90 [demo]
[   10.000006] ---[ end trace 0000000000000000 ]---
[   10.000007] unrelated line
]])
    t:assert_eq(#s, 1)
    t:assert_eq(s[1].title, "KASAN: slab-use-after-free in demo_read")
    t:assert(not s[1].excerpt:find("unrelated", 1, true), "the excerpt stops at the end marker")
end)

test("UBSAN, BUG, hung task, RCU stall, general protection fault", function(t)
    local got = titles([[
[    1.0] UBSAN: shift-out-of-bounds in drivers/demo/demo.c:42:9
[    2.0] BUG: kernel NULL pointer dereference, address: 0000000000000008
[    2.1] Oops: 0000 [#1] PREEMPT SMP NOPTI
[    2.2] ---[ end trace 0000000000000000 ]---
[    3.0] INFO: task kworker/0:1:17 blocked for more than 120 seconds.
[    4.0] rcu: INFO: rcu_preempt self-detected stall on CPU
[    5.0] general protection fault, probably for non-canonical address 0xdead: 0000 [#1] SMP
]])
    t:assert_eq(got[1], "UBSAN: shift-out-of-bounds in drivers/demo/demo.c:42:9")
    t:assert_eq(got[2], "BUG: kernel NULL pointer dereference")
    t:assert_eq(got[3], "hung task: kworker/0:1:17")
    t:assert_eq(got[4], "RCU stall (rcu_preempt)")
    t:assert_eq(got[5], "general protection fault")
    t:assert_eq(#got, 5, "the Oops inside the BUG report is not a second splat")
end)

test("a WARNING without a call trace is not a splat", function(t)
    t:assert_eq(#scan("[ 1.0] WARNING: CPU: 0 PID: 1 at fs/x.c:1 f+0x1/0x2\n[ 1.1] nothing else\n"), 0)
    t:assert_eq(#scan("[ 1.0] some driver: WARNING: low battery\n"), 0)
end)
