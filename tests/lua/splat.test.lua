-- The splat scanner over a corpus of reports written for these tests (one
-- report per file in lua/data/splats/, kinds the test kernel cannot be made
-- to produce here), and over clean logs that must yield nothing.
local S = _provium.splat
local scan = S.scan

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local dir = here .. "/data/splats/"

local function read(name)
    local f = assert(io.open(dir .. name, "rb"))
    local s = f:read("a")
    f:close()
    return s
end

-- file -> the one title its report must get (syzkaller's title forms, so
-- a title can be looked up on syzbot: docs/splats.md#titles)
local corpus = {
    { "kasan-use-after-free.txt", "KASAN: slab-use-after-free Read in demo_read" },
    { "kasan-memcpy-write.txt", "KASAN: slab-out-of-bounds Write in demo_fill_header" },
    { "kasan-double-free.txt", "KASAN: double-free in demo_free_ring" },
    { "kfence.txt", "KFENCE: use-after-free read in demo_peek" },
    { "kmsan.txt", "KMSAN: uninit-value in demo_parse_opts" },
    { "kcsan.txt", "KCSAN: data-race in demo_stat_add / demo_stat_read" },
    { "general-protection-fault.txt", "general protection fault in demo_queue_flush" },
    { "null-pointer-dereference.txt", "BUG: unable to handle kernel NULL pointer dereference in demo_probe" },
    { "paging-request.txt", "BUG: unable to handle kernel paging request in demo_dma_complete" },
    { "kernel-bug.txt", "kernel BUG in demo_reset_engine" },
    { "list-corruption.txt", "BUG: corrupted list in demo_gc_work" },
    { "warning.txt", "WARNING in demo_write" },
    { "warning-new-form.txt", "WARNING in fast_dput" },
    { "refcount.txt", "WARNING: refcount bug in demo_session_put" },
    { "arm64-warning.txt", "WARNING in demo_map_buffer" },
    { "arm64-null-pointer.txt", "BUG: unable to handle kernel NULL pointer dereference in demo_poll_status" },
    { "lockdep-circular.txt", "possible deadlock in demo_set_config" },
    { "lockdep-recursive.txt", "possible deadlock in demo_update_state" },
    { "lockdep-inconsistent.txt", "inconsistent lock state in demo_timer_fn" },
    { "lockdep-unlock-balance.txt", "WARNING: bad unlock balance in demo_exit" },
    { "suspicious-rcu.txt", "WARNING: suspicious RCU usage in demo_table_lookup" },
    { "rcu-stall.txt", "INFO: rcu detected stall in demo_spin_init" },
    { "rcu-stall-old-form.txt", "INFO: rcu detected stall in demo_poll_wait" },
    { "hung-task.txt", "INFO: task hung in demo_sync_all" },
    { "hung-task-io-wait.txt", "INFO: task hung in demo_flush_pages" },
    { "soft-lockup.txt", "BUG: soft lockup in demo_busy_wait" },
    { "memory-leak.txt", "memory leak in demo_alloc_ctx" },
    { "memory-leak-new-form.txt", "memory leak in demo_session_new" },
    { "ubsan.txt", "UBSAN: shift-out-of-bounds in demo_reg_mask" },
    { "panic.txt", "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)" },
    { "login-prompt-prefix.txt", "KASAN: use-after-free Write in demo_timer_fire" },
    { "printk-dropped-prefix.txt", "BUG: unable to handle kernel NULL pointer dereference in demo_queue_reset" },
    { "device-prefix-kernel-bug.txt", "kernel BUG in demo_pci_reset" },
    { "unregister-netdevice.txt", "unregister_netdevice: waiting for DEV to become free" },
}

local clean = { "clean-boot-kmsg.txt", "clean-boot-console.txt", "clean-tricky.txt" }

test("each report of the corpus: one splat, with its title", function(t)
    local wrong = {}
    for _, c in ipairs(corpus) do
        local got = {}
        for _, sp in ipairs(scan(read(c[1]))) do got[#got + 1] = sp.title end
        if #got ~= 1 or got[1] ~= c[2] then
            wrong[#wrong + 1] = ("%s: want %q, got {%s}"):format(c[1], c[2], table.concat(got, " | "))
        end
    end
    t:assert(#wrong == 0, table.concat(wrong, "\n"))
end)

test("every file of the corpus is in the table", function(t)
    local listed = {}
    for _, c in ipairs(corpus) do listed[c[1]] = true end
    for _, name in ipairs(clean) do listed[name] = true end
    local p = io.popen("ls " .. dir)
    for name in p:lines() do t:assert(listed[name], name .. " has no expected title") end
    p:close()
end)

test("titles carry no address, pid, CPU number or offset", function(t)
    for _, c in ipairs(corpus) do
        local title = c[2]
        t:assert(not title:find("0x"), title)
        t:assert(not title:find("CPU#"), title)
        t:assert(not title:find("%+"), title)
        t:assert(not title:find("%x%x%x%x%x%x%x%x"), title)
        t:assert(not title:find(":%d"), title)
    end
end)

test("clean logs: no splat", function(t)
    for _, name in ipairs(clean) do
        local got = scan(read(name))
        t:assert_eq(#got, 0, name .. (got[1] and (": " .. got[1].title) or ""))
    end
end)

test("the printk prefix: timestamp and caller id", function(t)
    t:assert_eq(S.strip("[  334.239022][T12837] BUG: x"), "BUG: x")
    t:assert_eq(S.strip("[   24.813370][    T1] BUG: x"), "BUG: x")
    t:assert_eq(S.strip("[    1.000000][    C0] BUG: x"), "BUG: x")
    t:assert_eq(S.strip("[ 1.0] BUG: x"), "BUG: x")
end)

test("a panic that follows a report is folded into it", function(t)
    local s = scan(read("null-pointer-dereference.txt"))
    t:assert_eq(#s, 1)
    t:assert(s[1].fatal, "the report is marked as the one that ended the kernel")
    s = scan(read("kernel-bug.txt"))
    t:assert_eq(#s, 1, "the invalid opcode and the panic are part of the kernel BUG")
    t:assert_contains(s[1].excerpt, "invalid opcode")
    -- a consequence with nothing before it stands alone, marked as such
    s = scan("[ 5.0] Kernel panic - not syncing: Fatal exception\n")
    t:assert_eq(#s, 1)
    t:assert_eq(s[1].title, "kernel panic: Fatal exception")
    t:assert(s[1].consequence)
end)

test("two reports in one log are two splats, the excerpt ends at the marker", function(t)
    local s = scan(read("warning.txt") .. "[ 3.0] unrelated line\n" .. read("hung-task.txt"))
    t:assert_eq(#s, 2)
    t:assert_eq(s[1].title, "WARNING in demo_write")
    t:assert_eq(s[2].title, "INFO: task hung in demo_sync_all")
    t:assert(not s[1].excerpt:find("unrelated", 1, true), "the excerpt stops at the end marker")
end)

test("a WARNING without a call trace is not a splat", function(t)
    t:assert_eq(#scan("[ 1.0] WARNING: CPU: 0 PID: 1 at fs/x.c:1 f+0x1/0x2\n[ 1.1] nothing else\n"), 0)
    t:assert_eq(#scan("[ 1.0] some driver: WARNING: low battery\n"), 0)
end)

test("a header glued to a word is no header", function(t)
    t:assert_eq(#scan("[ 1.0] demo_BUG: kernel NULL pointer dereference, address: 8\n"), 0)
    t:assert_eq(#scan("[ 1.0] ---[ end Kernel panic - not syncing: Fatal exception ]---\n"), 0)
end)
