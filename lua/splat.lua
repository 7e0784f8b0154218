-- Kernel splats fail the test that caused them (docs/splats.md). The agent
-- streams the guest's kernel log (/dev/kmsg, every level); a panic, which
-- ends the agent too, is read from the console. Each test scans what its
-- VMs logged while it ran.
local C = _provium_c
local P = _provium
local S = {}
P.splat = S

-- A console line without its printk prefix: the timestamp `[  334.239022]`
-- and the caller id of CONFIG_PRINTK_CALLER kernels (`[T12837]`, `[C1]`).
local function strip(line)
    line = line:gsub("^%[%s*[%d.]+%]", "", 1)
    line = line:gsub("^%[%s*[TC]%d+%]", "", 1)
    return (line:gsub("^%s+", ""))
end
S.strip = strip

-- Frames that are never the culprit: the reporting machinery (stack dumps,
-- the WARN and BUG paths, panic), the sanitizers' own code, lockdep, the list,
-- string and refcount helpers that only noticed the damage, allocator
-- internals, the scheduler and locks a hung task waits in, and the interrupt
-- and timer paths an RCU stall is reported from. The title names the first
-- frame that is none of these (docs/splats.md#titles).
local generic = {
    "^dump_stack", "^show_stack", "^show_regs", "^show_trace", "^print_address_description",
    "^print_report", "^print_circular_bug", "^print_usage_bug", "^print_bad_", "^printk",
    "^vprintk", "^console_", "^warn_slowpath", "^warn_", "^report_bug", "^handle_bug", "^exc_",
    "^asm_exc_", "^do_error_trap", "^do_trap", "^do_invalid_op", "^die$", "^oops_", "^panic$",
    "^nmi_", "^bug_handler", "^fixup_bug", "^kasan_", "^asan_", "^check_memory_region",
    "^check_region_inline", "^kmsan_", "^kcsan_", "^ubsan_", "^kfence_", "^debug_object",
    "^debug_print_object", "^debug_check_no_", "^lockdep_", "^lock_acquire", "^lock_release",
    "^lock_acquired", "^lock_contended", "^mark_lock", "^mark_usage", "^validate_chain",
    "^check_prev_add", "^check_prevs_add", "^check_noncircular", "^check_deadlock",
    "^mark_held_locks", "^lock_is_held", "^print_lock", "^debug_locks_", "^do_raw_", "^spin_bug",
    "^spin_dump", "^queued_spin_lock", "^native_queued_spin", "^mutex_lock", "^mutex_unlock",
    "^down$", "^down_", "^up_read", "^up_write", "^rwsem_", "^rt_mutex", "^schedule$",
    "^schedule_", "^io_schedule", "^preempt_schedule", "^wait_for_completion", "^wait_for_common",
    "^do_wait_for_common", "^might_fault", "^list_add", "^list_del", "^refcount_", "^memcpy",
    "^memmove", "^memset", "^memcmp", "^memchr", "^str[a-z]*cpy$", "^strn?len$", "^strn?cmp$",
    "^strn?cat$", "^strr?chr$", "^strstr$", "^copy_to_user", "^copy_from_user", "^kmalloc",
    "^kmem_cache_", "^kfree", "^kzalloc", "^kcalloc", "^krealloc", "^kvmalloc", "^kvfree",
    "^kvzalloc", "^kmemdup", "^kstrdup", "^slab_", "^kmemleak_", "^alloc_pages", "^should_fail",
    "^fail_dump", "^vmalloc", "^rcu_", "^update_process_times", "^tick_", "^hrtimer_", "^sysvec_",
    "^asm_sysvec_", "^irq_exit", "^handle_softirqs", "^do_softirq", "^scheduler_tick",
    "^watchdog_timer_fn", "^sched_show_task", "^hung_task", "^check_hung", "^watchdog$",
    "^warn$", "^raw_", "^might_", "^copy_user", "^get_free_pages", "^do_kmalloc", "^tsan_",
    "^msan_", "^page_fault_oops", "^die_addr", "^folio_wait_", "^wait_on_", "^bit_wait",
    "^out_of_line_wait",
}

-- Whether s matches one of the patterns.
local function matches_any(patterns, s)
    for _, p in ipairs(patterns) do
        if s:find(p) then return true end
    end
    return false
end

local function is_generic(fn)
    -- `__kasan_slab_free`, `____kasan_slab_free`: the same family
    return matches_any(generic, (fn:gsub("^_+", "")))
end

-- A function name as the kernel prints it, without the compiler's suffixes
-- (`.cold`, `.isra.0`, `.constprop.0`, `.part.0`), which change with the build.
local function bare(fn)
    return (fn:gsub("%..*$", ""))
end

-- The function of a stack line, "" for a frame marked unreliable (`? f+...`),
-- nil for a line that is no frame.
local function frame_of(body)
    body = body:gsub("^%[<%x+>%]%s*", "", 1)
    if body:match("^%?") then return "" end
    return body:match("^([%w_%.]+)%+0x%x+/0x%x+")
end

-- The first function in lines[from..] that is no generic frame: the
-- instruction pointer (x86 `RIP: 0010:f+`, arm64 `pc : f+`) when `ip` says
-- so, then the call trace. Falls back to `dflt`.
local function guilty(lines, from, dflt, ip)
    if dflt and not is_generic(bare(dflt)) then return bare(dflt) end
    if ip then
        for k = from, #lines do
            local fn = lines[k]:match("^RIP: %x+:([%w_%.]+)%+") or lines[k]:match("^pc : ([%w_%.]+)%+")
            if fn and not is_generic(bare(fn)) then return bare(fn) end
        end
    end
    for k = from, #lines do
        local fn = frame_of(lines[k])
        if fn and fn ~= "" and not is_generic(bare(fn)) then return bare(fn) end
    end
    return dflt and bare(dflt) or nil
end

-- " in f", or "" when no frame is known.
local function in_(fn)
    return fn and (" in " .. fn) or ""
end

-- The title `text in f`, f the guilty function from the report's second
-- line on (ip: the instruction pointer's function first).
local function titled(text, ip)
    return function(_, lines) return text .. in_(guilty(lines, 2, nil, ip)) end
end

-- The function of the first `..., at: f+0x12/0x40` (lockdep's lock lines),
-- or of the frame on the line after a bare `at:`.
local function at_fn(lines, from)
    for k = from, #lines do
        local fn = lines[k]:match(", at: ([%w_%.]+)%+")
        if fn then return bare(fn) end
        if lines[k]:match(" at:$") and lines[k + 1] then
            fn = frame_of(lines[k + 1])
            if fn and fn ~= "" then return bare(fn) end
        end
    end
end

-- Free text from a report, without what differs between two runs of the same
-- bug: addresses, CPU and task numbers, offsets.
local function tidy(s)
    s = s:gsub("%s*%[%s*%d+%s*%]", ""):gsub("%s*CPU#%d+", ""):gsub("0x%x+", "ADDR")
    s = s:gsub("%f[%x]%x%x%x%x%x%x%x%x+%f[^%x]", "ADDR"):gsub("%+ADDR/ADDR", "")
    s = s:gsub("%s+at ADDR", ""):gsub(",? address: ADDR", ""):gsub("[%s,:]+$", "")
    return s
end
S.tidy = tidy

-- KASAN's access type: "Read" or "Write" from the line after its header.
local function access(lines)
    for k = 2, math.min(4, #lines) do
        local a = lines[k]:match("^(%a+) of size %d+")
        if a == "Read" or a == "Write" then return " " .. a end
    end
    return ""
end

-- Why a panic follows another report: such a panic belongs to that report
-- (an oops that killed the task, panic_on_warn, hung_task_panic ...).
local consequences = {
    "^Fatal exception", "^Attempted to kill init", "^Attempted to kill the idle task",
    "^Aiee, killing interrupt handler", "panic_on_warn set", "^hung_task: blocked tasks",
    "^softlockup: hung tasks", "^RCU Stall", "^Hard LOCKUP", "^kasan%.fault=panic", "^panic_on_oops",
    "^Oops", "^Fatal machine check", "^BUG: ", "^kernel BUG",
}

local function is_consequence(why)
    return matches_any(consequences, why)
end

local function lockdep(title)
    return function(_, lines) return title .. in_(at_fn(lines, 2) or guilty(lines, 2)) end
end

-- Where a splat starts. key: a word the line must hold (a quick filter);
-- pat: where the report starts in the line (text may come before it: a
-- `watchdog: ` prefix, a login prompt, `** N printk messages dropped **`);
-- title(captures, lines): its one-line title, from lines (the excerpt,
-- stripped; lines[1] the header). trace: counts only with a call trace
-- after it. follow: inside another report, it continues that report.
local rules = {
    { key = "KASAN", pat = "BUG: KASAN: (.-) in ([%w_%.]+)", title = function(c, lines)
        return "KASAN: " .. c[1] .. access(lines) .. in_(guilty(lines, 2, c[2]))
    end },
    { key = "KFENCE", pat = "BUG: KFENCE: (.-) in ([%w_%.]+)", title = function(c, lines)
        return "KFENCE: " .. c[1] .. in_(guilty(lines, 2, c[2]))
    end },
    { key = "KMSAN", pat = "BUG: KMSAN: (.-) in ([%w_%.]+)", title = function(c, lines)
        return "KMSAN: " .. c[1] .. in_(guilty(lines, 2, c[2]))
    end },
    { key = "KCSAN", pat = "BUG: KCSAN: (.-) in ([%w_%.]+) / ([%w_%.]+)", title = function(c)
        return ("KCSAN: %s in %s / %s"):format(c[1], bare(c[2]), bare(c[3]))
    end },
    { key = "KCSAN", pat = "BUG: KCSAN: (.-) in ([%w_%.]+)", title = function(c, lines)
        return "KCSAN: " .. c[1] .. in_(guilty(lines, 2, c[2]))
    end },
    { key = "soft lockup", pat = "BUG: soft lockup", title = titled("BUG: soft lockup", true) },
    { key = "NULL pointer", pat = "BUG: kernel NULL pointer dereference", title = titled("BUG: unable to handle kernel NULL pointer dereference", true) },
    { key = "NULL pointer", pat = "BUG: unable to handle kernel NULL pointer dereference", title = titled("BUG: unable to handle kernel NULL pointer dereference", true) },
    { key = "Unable to handle kernel NULL", pat = "Unable to handle kernel NULL pointer dereference", title = titled("BUG: unable to handle kernel NULL pointer dereference", true) },
    { key = "unable to handle", pat = "BUG: unable to handle ", title = titled("BUG: unable to handle kernel paging request", true) },
    { key = "Unable to handle kernel", pat = "Unable to handle kernel paging request", title = titled("BUG: unable to handle kernel paging request", true) },
    { key = "sleeping function", pat = "BUG: sleeping function called from invalid context", title = titled("BUG: sleeping function called from invalid context") },
    { key = "scheduling while atomic", pat = "BUG: scheduling while atomic", title = titled("BUG: scheduling while atomic") },
    { key = "workqueue lockup", pat = "BUG: workqueue lockup", title = function() return "BUG: workqueue lockup" end },
    -- before BUG: (arm64 says `Internal error: Oops - BUG: ...`)
    { key = "Oops", follow = true, pat = "^Oops: ", title = titled("Oops", true) },
    { key = "Oops", follow = true, pat = "^Internal error: Oops", title = titled("Oops", true) },
    { key = "BUG", pat = "^BUG ([%w_%-]+) %(.-%): (.+)", title = function(c)
        return ("BUG: %s (slab %s)"):format(tidy(c[2]), tidy(c[1]))
    end },
    { key = "BUG: ", pat = "BUG: ([^,]+)", title = function(c, lines)
        return "BUG: " .. tidy(c[1])
    end },
    { key = "kernel BUG at", pat = "kernel BUG at ([^!]+)!", title = function(c, lines)
        local fn = guilty(lines, 2, nil, true)
        if c[1]:find("lib/list_debug.c", 1, true) then return "BUG: corrupted list" .. in_(fn) end
        return "kernel BUG" .. in_(fn)
    end },
    -- lockdep: its own WARNING lines, with no `CPU:` after the word
    { key = "circular locking", pat = "WARNING: possible circular locking dependency detected", title = lockdep("possible deadlock") },
    { key = "recursive locking", pat = "WARNING: possible recursive locking detected", title = lockdep("possible deadlock") },
    { key = "lock inversion", pat = "WARNING: possible irq lock inversion dependency detected", title = lockdep("possible deadlock") },
    { key = "lock order detected", pat = "WARNING: %S+%-safe %-> %S+%-unsafe lock order detected", title = lockdep("possible deadlock") },
    { key = "inconsistent lock state", pat = "WARNING: inconsistent lock state", title = lockdep("inconsistent lock state") },
    { key = "bad unlock balance", pat = "WARNING: bad unlock balance detected", title = lockdep("WARNING: bad unlock balance") },
    { key = "held lock freed", pat = "WARNING: held lock freed", title = lockdep("WARNING: held lock freed") },
    { key = "lock held when returning", pat = "WARNING: lock held when returning to user space", title = lockdep("WARNING: lock held when returning to user space") },
    { key = "suspicious RCU usage", pat = "WARNING: suspicious RCU usage", title = titled("WARNING: suspicious RCU usage") },
    { key = "WARNING", trace = true, pat = "WARNING: CPU: %d+ PID: %d+ at (%S+) ([%w_%.]+)%+", title = function(c, lines, before)
        return S.warning_title(c[1], c[2], lines, before)
    end },
    { key = "WARNING", trace = true, pat = "WARNING: (%S+) at ([%w_%.]+)%+0x%x+/0x%x+, CPU#", title = function(c, lines, before)
        return S.warning_title(c[1], c[2], lines, before)
    end },
    { key = "UBSAN", pat = "UBSAN: (.-) in (%S+)", title = function(c, lines)
        return "UBSAN: " .. c[1] .. " in " .. (guilty(lines, 2) or c[2]:gsub(":%d+:?%d*$", ""))
    end },
    { key = "general protection", pat = "general protection fault", title = titled("general protection fault", true) },
    { key = "stack segment", pat = "stack segment: ", title = titled("stack segment fault", true) },
    { key = "double fault", pat = "PANIC: double fault", title = titled("PANIC: double fault", true) },
    { key = "divide error", pat = "^divide error: ", title = titled("divide error", true) },
    { key = "invalid opcode", follow = true, pat = "^invalid opcode: ", title = titled("invalid opcode", true) },
    { key = "Kernel panic", pat = "Kernel panic %- not syncing: ?([^\n]*)", title = function(c)
        return "kernel panic: " .. tidy(c[1])
    end },
    { key = "stall", pat = "INFO: rcu_%w+ self%-detected stall", title = titled("INFO: rcu detected stall", true) },
    { key = "stall", pat = "INFO: rcu_%w+ detected .-stall", title = titled("INFO: rcu detected stall", true) },
    { key = "INFO: task", pat = "INFO: task .- can't die for more than %d+ seconds", title = titled("INFO: task can't die") },
    { key = "INFO: task", pat = "INFO: task .- blocked .-for more than %d+ seconds", title = titled("INFO: task hung") },
    { key = "unreferenced object", pat = "^unreferenced object 0x%x+ %(size %d+%)", title = titled("memory leak") },
    { key = "unregister_netdevice", pat = "unregister_netdevice: waiting for %S+ to become free", title = function() return "unregister_netdevice: waiting for DEV to become free" end },
    { key = "Busy inodes", pat = "VFS: Busy inodes after unmount", title = function() return "VFS: Busy inodes after unmount" end },
}

-- A WARNING's title: a refcount or list helper that warned is named as the
-- kind of bug, in the first frame that is not generic.
function S.warning_title(file, fn, lines, before)
    local who = guilty(lines, 2, fn)
    if (before or ""):find("refcount_t: ", 1, true) or bare(fn):find("^refcount_") then
        return "WARNING: refcount bug" .. in_(who)
    end
    if file:find("lib/list_debug.c", 1, true) then return "BUG: corrupted list" .. in_(who) end
    if (before or ""):find("ODEBUG: ", 1, true) then return "WARNING: ODEBUG bug" .. in_(who) end
    return "WARNING" .. in_(who)
end

local keys = {}
for _, r in ipairs(rules) do keys[r.key] = true end

-- The rule and captures of the report that starts in line body, or nil.
-- Before the report's start only a separator may come (the start of the
-- line, a space, `:`, `]`, `*`, `>`), never a letter: `foo_BUG: x` is no
-- report. The end marker of a panic quotes the panic: it starts none.
local function header_of(body)
    if body:find("^%-%-%-%[ end ") then return nil end
    local hit
    for k in pairs(keys) do
        if body:find(k, 1, true) then
            hit = hit or {}
            hit[k] = true
        end
    end
    if not hit then return nil end
    for _, r in ipairs(rules) do
        if hit[r.key] then
            local init = 1
            while true do
                local caps = { body:find(r.pat, init) }
                local s = caps[1]
                if not s then break end
                local prev = s > 1 and body:sub(s - 1, s - 1) or ""
                if prev == "" or prev:find("[%s:%]%*>]") then
                    return r, { table.unpack(caps, 3) }
                end
                if r.pat:sub(1, 1) == "^" then break end
                init = s + 1
            end
        end
    end
end

local MAX_LINES = 80

-- Is a stripped line a call trace's heading? (x86 `Call Trace:`, arm64 `Call trace:`)
local function is_trace(b)
    return b:find("^Call [Tt]race:") ~= nil
end

-- Splats in text (a kernel log or console): a list of {title=, excerpt=, at=},
-- at the byte offset in text where the splat's first line starts. A panic
-- that follows a report as its consequence (`Fatal exception`) is folded
-- into it: that report gets fatal = true. A panic that nothing before it in
-- text explains stands alone, with consequence = true when its reason says
-- it follows another report (docs/splats.md#one-crash-one-splat).
--
-- The third result is the offset of a report that may be unfinished (the
-- text may end in the middle of it): one that runs to the end of text with
-- no end marker, or a WARNING whose call trace has not come yet; nil when
-- there is none.
function S.scan(text)
    local lines, offs = {}, {}
    for pos, l in text:gmatch("()([^\n]*)\n?") do
        if pos > #text then break end
        lines[#lines + 1] = l:gsub("\r", "")
        offs[#offs + 1] = pos - 1
    end
    local out, i, open = {}, 1, nil
    while i <= #lines do
        local body = strip(lines[i])
        local rule, caps = header_of(body)
        if rule and rule.trace then
            -- a WARNING counts only with its call trace (the bare word is common)
            local traced = false
            for k = i + 1, math.min(i + MAX_LINES, #lines) do
                if is_trace(strip(lines[k])) then traced = true break end
            end
            if not traced then
                if i + MAX_LINES > #lines then open = open or offs[i] end
                rule = nil
            end
        end
        local panic = rule and rule.key == "Kernel panic"
        if panic and #out > 0 and is_consequence(caps[1]) then
            -- the end of the crash just reported, not another one
            out[#out].fatal = true
            i = i + 1
        elseif rule then
            -- up to the end marker, or the line before another report starts
            -- (an Oops, an invalid opcode or the panic that ends this one
            -- belong to it)
            local last = math.min(i + MAX_LINES, #lines)
            local fatal, ended = false, last < #lines
            for k = i + 1, last do
                local b = strip(lines[k])
                if b:match("^%-%-%-%[ end ") or b:match("^=========") then last, ended = k, true break end
                local other, ocaps = header_of(b)
                if other and other.key == "Kernel panic" and is_consequence(ocaps[1]) then
                    fatal = true
                elseif other and not other.follow then
                    last, ended = k - 1, true
                    break
                end
            end
            if not ended then open = open or offs[i] end
            local ex, bodies = {}, {}
            for k = i, last do
                ex[#ex + 1] = lines[k]
                bodies[#bodies + 1] = strip(lines[k])
            end
            local before = i > 1 and strip(lines[i - 1]) or ""
            out[#out + 1] = {
                title = rule.title(caps, bodies, before), excerpt = table.concat(ex, "\n"),
                at = offs[i], fatal = fatal or nil,
                consequence = panic and is_consequence(caps[1]) or nil,
            }
            i = last + 1
        else
            i = i + 1
        end
    end
    return out, offs, open
end

-- Per VM: how far each log has been read, the splats seen so far, and what
-- this boot of it has reported (titles, for the console's copy of the crash).
local seen = setmetatable({}, { __mode = "k" })

local function state_of(vm)
    local s = seen[vm]
    if not s then
        s = { kmsg = 0, console = 0, list = {}, titles = {}, count = 0, taken = {} }
        seen[vm] = s
    end
    return s
end

-- A log is scanned in pieces of this much from where the last scan stopped,
-- so a guest that floods it costs a bounded amount per look (docs/splats.md).
local PIECE = 1024 * 1024

-- The splats in what log `which` of vm gained since offset s[which]. A
-- piece ends at a line's end; when more follows, the last MAX_LINES lines
-- wait for the next piece, so an excerpt is never cut short. At the end of
-- a log that may still grow (growing: its VM runs), a report that may be
-- unfinished is where the next scan starts, and is taken as it is only when
-- take_open says so; returns whether there was one. s.taken[which] is the
-- offset of the last splat taken, so a report scanned twice counts once.
local function scan_log(vm, s, which, out, growing, take_open)
    for _ = 1, 64 do -- at most 64 MiB a look; the rest waits for the next one
        local text, nxt = C.log_read(vm, which, s[which], PIECE)
        if #text == 0 then return false end
        local base = nxt - #text
        local more = #text == PIECE
        local upto = #text
        if more then
            upto = (text:match(".*()\n") or (#text + 1)) - 1
        end
        local found, offs, open = S.scan(text:sub(1, upto))
        local stop = upto
        if more and #offs > MAX_LINES then stop = offs[#offs - MAX_LINES] end
        if stop <= 0 then stop = upto end
        local held = not more and growing and open ~= nil
        if held then stop = open end
        for _, sp in ipairs(found) do
            if (sp.at < stop or (held and take_open)) and base + sp.at > (s.taken[which] or -1) then
                out[#out + 1] = sp
                s.taken[which] = base + sp.at
            end
        end
        s[which] = base + stop
        if not more then return held end
    end
    return false
end

-- Where a running test's splats go (the framework sets it): every splat a
-- look finds lands there, whoever looked.
S.sink = nil

-- Read what vm logged since the last look; returns its new splats.
--
-- The kernel log has every report. The console is read for the crash that
-- stopped the agent before it could forward it: a report there counts when a
-- panic ended it and the kernel log did not have it. A panic that only
-- follows a report of this boot (`Fatal exception`) is part of that report.
--
-- An operation that raised because this boot of vm died (the error carries
-- the console tail) took this boot's splats with it: they are marked
-- reported, and only fail a test whose body let that error out
-- (docs/splats.md#once-per-failure).
function S.collect(vm)
    local s = state_of(vm)
    local st = vm:state()
    if st == "created" then return {} end
    if st == "booted" then pcall(vm.ping, vm) end -- every record logged before it has arrived
    local gen = C.log_generation(vm)
    if s.gen ~= gen then -- a fresh boot: its logs start over
        s.gen, s.kmsg, s.console, s.titles, s.count, s.taken = gen, 0, 0, {}, 0, {}
    end
    local found, new = {}, {}
    -- A report the guest may still be writing at the end of a log: scanned
    -- again after another round trip, by which its lines have come, and
    -- taken as it is then (docs/splats.md#where-the-log-comes-from).
    local growing = st == "booted" or st == "paused"
    local from_console = {}
    local held = scan_log(vm, s, "kmsg", found, growing, false)
    held = scan_log(vm, s, "console", from_console, growing, false) or held
    if held then
        if st == "booted" then pcall(vm.ping, vm) end
        scan_log(vm, s, "kmsg", found, growing, true)
        scan_log(vm, s, "console", from_console, growing, true)
    end
    for _, sp in ipairs(found) do s.titles[sp.title] = true end
    for _, sp in ipairs(from_console) do
        if (sp.fatal or sp.title:find("^kernel panic")) and not s.titles[sp.title] then
            found[#found + 1] = sp
            s.titles[sp.title] = true
        end
    end
    for _, sp in ipairs(found) do
        if not (sp.consequence and s.count > 0) then
            s.count = s.count + 1
            new[#new + 1] = { title = sp.title, excerpt = sp.excerpt, vm = vm:name(), gen = gen }
        end
    end
    P.symbols.annotate_all(vm, new) -- file:line in the frames (docs/splats.md#symbolized-stacks)
    for _, sp in ipairs(new) do s.list[#s.list + 1] = sp end
    if C.death_reported(vm) then
        for _, sp in ipairs(s.list) do
            if sp.gen == gen then sp.reported = true end
        end
    end
    if S.sink then
        for _, sp in ipairs(new) do S.sink[#S.sink + 1] = sp end
    end
    return new
end

local V = C.vm_mt.__index

-- A fresh boot starts new logs: what the last boot logged is read first, so
-- its splats are not lost with them.
local boot = V.boot
function V:boot(...)
    if self:state() ~= "created" then S.collect(self) end
    return boot(self, ...)
end

-- The splats as vm:splats() and the outcome (--json) show them; `kind` is
-- "splat", or "taint" and "leak" for what S.taint_after and kmemleak add.
function S.public(list)
    local out = {}
    for _, sp in ipairs(list) do
        out[#out + 1] = { title = sp.title, excerpt = sp.excerpt, vm = sp.vm,
            reported = sp.reported or false, kind = sp.kind or "splat" }
    end
    return out
end

-- vm:splats() -> every splat seen on this VM so far: {{title=, excerpt=, vm=, reported=}, ...}
function V:splats()
    S.collect(self)
    return S.public(state_of(self).list)
end

-- The message a splat (a taint, a leak) adds to a failed test.
function S.describe(list)
    local parts = {}
    for _, sp in ipairs(list) do
        local head = "kernel splat on vm `%s`: %s\n%s"
        if sp.kind == "taint" then head = "vm `%s`: %s\n%s" end
        if sp.kind == "leak" then head = "kmemleak on vm `%s`: %s\n%s" end
        parts[#parts + 1] = head:format(sp.vm, sp.title, sp.excerpt)
    end
    return table.concat(parts, "\n")
end

-- The outcome of code that saw splats (a test body, a file's top level):
-- status ("passed" or "failed") and message given. Code that failed lists
-- them all after its own message; code that passed fails with those no
-- error it caught had carried (docs/splats.md#once-per-failure).
function S.judge(list, status, message)
    if status == "failed" then return status, message .. "\n" .. S.describe(list) end
    local blame = {}
    for _, sp in ipairs(list) do
        if not sp.reported then blame[#blame + 1] = sp end
    end
    if #blame == 0 then return status, message end
    return "failed", S.describe(blame)
end

-- Taint (docs/splats.md#taint). The bits of /proc/sys/kernel/tainted, with
-- the letters and meanings of the kernel's
-- Documentation/admin-guide/tainted-kernels.rst.
local TAINTS = {
    [0] = { "P", "proprietary module" }, { "F", "module force loaded" },
    { "S", "out-of-specification system" }, { "R", "module force unloaded" },
    { "M", "machine check" }, { "B", "bad page" }, { "U", "requested by user space" },
    { "D", "died recently" }, { "A", "ACPI table overridden" }, { "W", "warning" },
    { "C", "staging driver" }, { "I", "firmware workaround" }, { "O", "out-of-tree module" },
    { "E", "unsigned module" }, { "L", "soft lockup" }, { "K", "live patched" },
    { "X", "distribution's auxiliary taint" }, { "T", "struct randomization" },
    { "N", "in-kernel test run" }, { "J", "fwctl debug write" },
}

-- Taints no test is blamed for: O and E, which loading a module built out of
-- the kernel's tree sets (tests/vm's module tests do so on purpose), and T,
-- which a kernel built with struct randomization sets at boot.
local EXPECTED = (1 << 12) | (1 << 13) | (1 << 17)

-- "D (died recently), W (warning)" for the bits set in mask.
function S.taint_decode(mask)
    local parts = {}
    for bit = 0, 63 do
        if mask & (1 << bit) ~= 0 then
            local t = TAINTS[bit]
            parts[#parts + 1] = t and ("%s (%s)"):format(t[1], t[2]) or ("bit %d"):format(bit)
        end
    end
    return table.concat(parts, ", ")
end

-- vm's /proc/sys/kernel/tainted, or nil when it cannot be read (a VM that is
-- not booted, or died: its death is reported otherwise).
local function taint_of(vm)
    if vm:state() ~= "booted" then return nil end
    local ok, text = pcall(vm.read_file, vm, "/proc/sys/kernel/tainted")
    return ok and math.tointeger(tonumber(text:match("%d+"))) or nil
end

-- Before a test: each VM's taint, for S.taint_after to compare with.
function S.taint_before(vms)
    for _, vm in ipairs(vms) do
        local s = state_of(vm)
        s.taint, s.taint_gen = taint_of(vm), C.log_generation(vm)
    end
end

-- After a test: a {kind = "taint", title =, excerpt =, vm =} for each VM that
-- gained a taint not expected for the run. A VM booted during the test
-- starts from none; a VM with a splat in `splats` is left out, the splat's
-- failure says it (a WARNING sets W, an oops D).
function S.taint_after(vms, splats)
    local out, splatted = {}, {}
    for _, sp in ipairs(splats) do splatted[sp.vm] = true end
    for _, vm in ipairs(vms) do
        local s, now = state_of(vm), taint_of(vm)
        if now and not splatted[vm:name()] then
            local before = s.taint_gen == C.log_generation(vm) and s.taint or 0
            local new = now & ~before & ~EXPECTED
            if new ~= 0 then
                out[#out + 1] = {
                    kind = "taint", vm = vm:name(), title = "kernel taint: " .. S.taint_decode(new),
                    excerpt = ("  /proc/sys/kernel/tainted was %d before the test, %d after"):format(before, now),
                }
            end
        end
    end
    return out
end
