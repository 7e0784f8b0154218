-- Kernel splats fail the test that caused them (docs/splats.md). The agent
-- streams the guest's kernel log (/dev/kmsg, every level); a panic, which
-- ends the agent too, is read from the console. Each test scans what its
-- VMs logged while it ran.
local C = _provium_c
local P = _provium
local S = {}
P.splat = S

-- Where a splat starts: a pattern for the line (timestamp stripped) and a
-- function giving its one-line title.
local starts = {
    -- titles leave out offsets and addresses, so they are stable across builds
    { "^BUG: KASAN: (.-) in ([%w_%.]+)", function(kind, fn) return "KASAN: " .. kind .. " in " .. fn end },
    { "^BUG: KFENCE: (.-) in ([%w_%.]+)", function(kind, fn) return "KFENCE: " .. kind .. " in " .. fn end },
    { "^BUG: (kmalloc%-%S+)", function(c) return "BUG: " .. c end },
    { "^BUG: ([^,]+)", function(what) return "BUG: " .. what end },
    { "^kernel BUG at (%S+)", function(at) return "kernel BUG at " .. at:gsub("!$", "") end },
    { "^WARNING: CPU: %d+ PID: %d+ at %S+ ([%w_%.]+)", function(fn) return "WARNING in " .. fn end },
    { "^UBSAN: (.-) in (%S+)", function(kind, at) return "UBSAN: " .. kind .. " in " .. at end },
    { "^general protection fault", function() return "general protection fault" end },
    { "^Oops: ", function() return "Oops" end },
    { "^Unable to handle kernel ([^,]+)", function(w) return "Unable to handle kernel " .. w end },
    { "^stack segment: ", function() return "stack segment fault" end },
    { "^PANIC: double fault", function() return "PANIC: double fault" end },
    { "^divide error: ", function() return "divide error" end },
    { "^invalid opcode: ", function() return "invalid opcode" end },
    { "^Kernel panic %- not syncing: ([^\n]*)", function(why) return "Kernel panic: " .. why end },
    { "^rcu: INFO: (%S+) self%-detected stall", function(r) return "RCU stall (" .. r .. ")" end },
    { "^rcu: INFO: (%S+) detected stalls", function(r) return "RCU stall (" .. r .. ")" end },
    { "^INFO: task (%S+) blocked for more than", function(t) return "hung task: " .. t end },
    { "^unregister_netdevice: waiting for (%S+)", function(d) return "unregister_netdevice: waiting for " .. d end },
    { "^VFS: Busy inodes after unmount", function() return "VFS: Busy inodes after unmount" end },
}

local function strip(line)
    return (line:gsub("^%[%s*[%d.]+%]%s?", ""))
end

-- The title if line starts a splat, else nil.
local function start_of(body)
    for _, s in ipairs(starts) do
        local caps = { body:match(s[1]) }
        if #caps > 0 then return s[2](table.unpack(caps)) end
    end
end

local MAX_LINES = 80

-- Splats in text (a kernel log or console): a list of {title=, excerpt=, at=},
-- at the byte offset in text where the splat's first line starts.
function S.scan(text)
    local lines, offs = {}, {}
    for pos, l in text:gmatch("()([^\n]*)\n?") do
        if pos > #text then break end
        lines[#lines + 1] = l:gsub("\r", "")
        offs[#offs + 1] = pos - 1
    end
    local out, i = {}, 1
    while i <= #lines do
        local title = start_of(strip(lines[i]))
        -- a WARNING counts only with its call trace (the bare word is common)
        if title and title:match("^WARNING") then
            local traced = false
            for k = i + 1, math.min(i + MAX_LINES, #lines) do
                if strip(lines[k]):match("^Call Trace:") then traced = true break end
            end
            if not traced then title = nil end
        end
        if title then
            -- up to the end marker, or the line before another splat starts
            -- (an Oops inside a BUG report belongs to it)
            local last = math.min(i + MAX_LINES, #lines)
            for k = i + 1, last do
                local b = strip(lines[k])
                if b:match("^%-%-%-%[ end ") or b:match("^=========") then last = k break end
                local other = start_of(b)
                if other and other ~= "Oops" then last = k - 1 break end
            end
            local ex = {}
            for k = i, last do ex[#ex + 1] = lines[k] end
            out[#out + 1] = { title = title, excerpt = table.concat(ex, "\n"), at = offs[i] }
            i = last + 1
        else
            i = i + 1
        end
    end
    return out, offs
end

-- Per VM: how far each log has been read, and the splats seen so far.
local seen = setmetatable({}, { __mode = "k" })

local function state_of(vm)
    local s = seen[vm]
    if not s then
        s = { kmsg = 0, console = 0, list = {} }
        seen[vm] = s
    end
    return s
end

-- A log is scanned in pieces of this much from where the last scan stopped,
-- so a guest that floods it costs a bounded amount per look (docs/splats.md).
local PIECE = 1024 * 1024

-- The splats in what log `which` of vm gained since offset s[which]; keep(sp)
-- filters them. A piece ends at a line's end; when more follows, the last
-- MAX_LINES lines wait for the next piece, so an excerpt is never cut short.
local function scan_log(vm, s, which, keep, out)
    for _ = 1, 64 do -- at most 64 MiB a look; the rest waits for the next one
        local text, nxt = C.log_read(vm, which, s[which], PIECE)
        if #text == 0 then return end
        local more = #text == PIECE
        local upto = #text
        if more then
            upto = (text:match(".*()\n") or (#text + 1)) - 1
        end
        local found, offs = S.scan(text:sub(1, upto))
        local stop = upto
        if more and #offs > MAX_LINES then stop = offs[#offs - MAX_LINES] end
        if stop <= 0 then stop = upto end
        for _, sp in ipairs(found) do
            if sp.at < stop and keep(sp) then out[#out + 1] = sp end
        end
        s[which] = nxt - #text + stop
        if not more then
            s[which] = nxt
            return
        end
    end
end

-- Read what vm logged since the last look; returns its new splats.
function S.collect(vm)
    local s = state_of(vm)
    local st = vm:state()
    if st == "created" then return {} end
    if st == "booted" then pcall(vm.ping, vm) end -- every record logged before it has arrived
    local gen = C.log_generation(vm)
    if s.gen ~= gen then -- a fresh boot: its logs start over
        s.gen, s.kmsg, s.console = gen, 0, 0
    end
    local new = {}
    scan_log(vm, s, "kmsg", function() return true end, new)
    -- a panic stops the agent before it can forward it: read the console
    scan_log(vm, s, "console", function(sp) return sp.title:match("^Kernel panic") end, new)
    for _, sp in ipairs(new) do
        sp.vm = vm:name()
        sp.at = nil
        s.list[#s.list + 1] = sp
    end
    return new
end

-- Mark everything logged so far as seen (a test starts here).
function S.skip_to_now(vm)
    S.collect(vm)
end

local V = C.vm_mt.__index

-- vm:splats() -> every splat seen on this VM so far: {{title=, excerpt=}, ...}
function V:splats()
    local new = S.collect(self)
    if P.test_splats then
        for _, sp in ipairs(new) do P.test_splats[#P.test_splats + 1] = sp end
    end
    local out = {}
    for _, sp in ipairs(state_of(self).list) do
        out[#out + 1] = { title = sp.title, excerpt = sp.excerpt, vm = sp.vm }
    end
    return out
end

-- The message a splat adds to a failed test.
function S.describe(list)
    local parts = {}
    for _, sp in ipairs(list) do
        parts[#parts + 1] = ("kernel splat on vm `%s`: %s\n%s"):format(sp.vm, sp.title, sp.excerpt)
    end
    return table.concat(parts, "\n")
end
