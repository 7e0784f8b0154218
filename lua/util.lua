-- Shared helpers for the prelude. Internal: everything lives in _provium.
local C = _provium_c
local P = {}
_provium = P

-- The longest duration, in seconds (about 31 years): PV_DURATION_MAX of
-- src/common/util.h. Longer is a typo ("1e300h"), and its deadline in
-- nanoseconds would overflow.
local DURATION_MAX = 1e9
local UNITS = { [""] = 1, s = 1, ms = 0.001, m = 60, h = 3600 }

local function too_long(what, shown, level)
    error(("%s: %s is longer than the longest duration, 1e9 s (about 31 years)")
        :format(what, shown), level + 1)
end

-- A duration: number of seconds, or "500ms" / "30s" / "5m" / "2h".
function P.duration(v, what, level)
    level = (level or 1) + 1
    if type(v) == "number" then
        if v ~= v or v == math.huge or v == -math.huge then
            error(what .. ": must be a finite number (got " .. tostring(v) .. ")", level)
        end
        if v < 0 then
            error(what .. ": must not be negative (got " .. tostring(v) .. ")", level)
        end
        if v > DURATION_MAX then too_long(what, ("%g s"):format(v), level) end
        return v
    elseif type(v) == "string" then
        local s = C.parse_duration(v)
        if not s then
            -- a well-formed number and unit that only came out too long
            local n, unit = v:match("^(.-)(%a*)$")
            local x = tonumber(n)
            if x and UNITS[unit] and x == x and x >= 0 and x * UNITS[unit] > DURATION_MAX then
                too_long(what, "`" .. v .. "`", level)
            end
            error(("%s: bad timeout string `%s` (use e.g. \"30s\", \"500ms\", \"5m\", \"2h\")")
                :format(what, v), level)
        end
        return s
    end
    error(what .. ": expected a number of seconds or a duration string, got " .. type(v), level)
end

function P.is_array(t)
    if type(t) ~= "table" then return false end
    local n = 0
    for k in pairs(t) do
        if type(k) ~= "number" or k < 1 or math.type(k) ~= "integer" then return false end
        n = n + 1
    end
    return n == #t
end

function P.sorted_keys(t)
    local keys = {}
    for k in pairs(t) do keys[#keys + 1] = k end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    return keys
end

-- provium.pack / unpack: Lua 5.4 string.pack formats, plus the word formats
-- of the seeds ("u32 u64 s8": little-endian, widths in bits).
local words = { u8 = "I1", u16 = "I2", u32 = "I4", u64 = "I8",
                s8 = "i1", s16 = "i2", s32 = "i4", s64 = "i8",
                i16 = "i2", i32 = "i4", i64 = "i8" }

local function translate(fmt)
    if type(fmt) ~= "string" then
        error("pack: format must be a string, got " .. type(fmt), 3)
    end
    local out, any = {"<"}, false
    for tok in fmt:gmatch("%S+") do
        local w = words[tok]
        if not w then return fmt end
        out[#out + 1] = w
        any = true
    end
    return any and table.concat(out) or fmt
end

function P.pack(fmt, ...)
    return string.pack(translate(fmt), ...)
end

function P.unpack(fmt, s, pos)
    local f = translate(fmt)
    if type(s) ~= "string" then
        error("unpack: data must be a string, got " .. type(s), 2)
    end
    local need = string.packsize and pcall(string.packsize, f) and string.packsize(f)
    if need and #s - (pos or 1) + 1 < need then
        error(("unpack: data too short (%d bytes, format needs %d)"):format(#s - (pos or 1) + 1, need), 2)
    end
    return string.unpack(f, s, pos)
end

-- Whether the agent behind x (a VM, or a Worker: lua/worker.lua) still answers.
function P.reachable(x)
    local st = x:state()
    return st == "booted" or st == "running"
end

-- What a test holds open in a VM's agent (streams, files, processes), each
-- mapped to the VM or Worker it came from, for the accessors of lua/process.lua
-- and worker:join. Weak: a collected
-- object is closed by its finaliser.
P.live = setmetatable({}, { __mode = "k" })
