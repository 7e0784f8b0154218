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

-- Splats in text (a kernel log or console): a list of {title=, excerpt=}.
function S.scan(text)
    local lines = {}
    for l in text:gsub("\r", ""):gmatch("([^\n]*)\n?") do lines[#lines + 1] = l end
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
            out[#out + 1] = { title = title, excerpt = table.concat(ex, "\n") }
            i = last + 1
        else
            i = i + 1
        end
    end
    return out
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

-- Read what vm logged since the last look; returns its new splats.
function S.collect(vm)
    local s = state_of(vm)
    local st = vm:state()
    if st == "created" then return {} end
    if st == "booted" then pcall(vm.ping, vm) end -- every record logged before it has arrived
    local new = {}
    local klog = vm:kernel_log()
    if #klog < s.kmsg then s.kmsg = 0 end -- a fresh boot started a new log
    for _, sp in ipairs(S.scan(klog:sub(s.kmsg + 1))) do new[#new + 1] = sp end
    s.kmsg = #klog
    -- a panic stops the agent before it can forward it: read the console
    local con = vm:console_log()
    if #con < s.console then s.console = 0 end
    for _, sp in ipairs(S.scan(con:sub(s.console + 1))) do
        if sp.title:match("^Kernel panic") then new[#new + 1] = sp end
    end
    s.console = #con
    for _, sp in ipairs(new) do
        sp.vm = vm:name()
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
