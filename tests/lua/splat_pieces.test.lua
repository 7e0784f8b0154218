-- The splat scan reads a log in 1 MiB pieces from where the last look
-- stopped (docs/splats.md): a report that straddles a piece's end is found
-- whole, once, and a flood costs a bounded amount per look. The logs here
-- are made up and served through a stand-in for _provium_c.log_read, so the
-- boundaries fall exactly where the test puts them.
local S = _provium.splat
local C = _provium_c

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local f = assert(io.open(here .. "/data/splats/warning.txt", "rb"))
local warning = f:read("a")
f:close()

local PIECE = 1024 * 1024

-- filler kernel lines up to exactly `size` bytes
local function filler(size)
    local line = "[    1.000000] virtio_blk virtio1: [vda] 8388608 512-byte logical blocks\n"
    local n = size // #line
    local s = line:rep(n)
    local rest = size - #s
    if rest > 0 then s = s .. ("x"):rep(rest - 1) .. "\n" end
    return s
end

-- A log whose report starts `before` bytes ahead of each piece boundary.
local function log_with(boundaries, before)
    local parts, at = {}, 0
    for _, b in ipairs(boundaries) do
        parts[#parts + 1] = filler(b - before - at)
        parts[#parts + 1] = warning
        at = b - before + #warning
    end
    parts[#parts + 1] = filler(4096)
    return table.concat(parts)
end

-- S.collect over `text` as the kernel log of a running VM `fake`, one look
-- for each length in `looks` (the log grows between them; default: one
-- look at all of it). `at_ping`: the length the log has once the second
-- round trip of the first look has come back. Returns the splats.
local function collect(text, looks, at_ping)
    local saved = { C.log_read, C.log_generation, C.death_reported, S.sink }
    local visible, pings = #text, 0
    local vm = {
        state = function() return "booted" end,
        name = function() return "fake" end,
        ping = function()
            pings = pings + 1
            if pings == 2 and at_ping then visible = at_ping end
        end,
    }
    C.log_read = function(_, which, off, max)
        if which ~= "kmsg" then return "", off end
        local chunk = text:sub(off + 1, math.min(off + max, visible))
        return chunk, off + #chunk
    end
    C.log_generation = function() return 1 end
    C.death_reported = function() return false end
    S.sink = nil -- these splats are the test's data, not its failures
    local all = {}
    local ok, err = pcall(function()
        for _, upto in ipairs(looks or { #text }) do
            visible = upto
            for _, sp in ipairs(S.collect(vm)) do all[#all + 1] = sp end
        end
    end)
    C.log_read, C.log_generation, C.death_reported, S.sink = table.unpack(saved)
    if not ok then error(err, 0) end
    return all
end

test("a report across a piece's end is found whole, once", function(t)
    -- the header 200 bytes before the 1 MiB and 2 MiB boundaries, the trace after
    local text = log_with({ PIECE, 2 * PIECE }, 200)
    local found = collect(text)
    t:assert_eq(#found, 2, "two reports")
    for _, sp in ipairs(found) do
        t:assert_eq(sp.title, "WARNING in demo_write")
        t:assert_contains(sp.excerpt, "---[ end trace", "the excerpt runs to the end marker")
        t:assert(sp.excerpt:match("^%[[^]]*%] WARNING: CPU: 0"), "and starts at its header: " .. sp.excerpt)
    end
end)

test("a report whose header is a piece's first line, and one at its last", function(t)
    local first = log_with({ PIECE }, 0)
    t:assert_eq(#collect(first), 1)
    local last = log_with({ PIECE }, #warning)
    t:assert_eq(#collect(last), 1)
end)

test("a report the guest is still writing when a look begins is read whole", function(t)
    local text = log_with({ PIECE }, 200)
    local header = PIECE - 200 + #("[    2.084102] ------------[ cut here ]------------\n")
    -- the look begins with the header in and no trace yet, or half the
    -- report in; its second round trip brings the rest
    for _, mid in ipairs({ header + 100, PIECE - 200 + #warning // 2 }) do
        local found = collect(text, { mid }, #text)
        t:assert_eq(#found, 1, "once, whole")
        t:assert_contains(found[1].excerpt, "---[ end trace")
    end
    -- a VM that stays silent: the report is taken as it is at the second scan
    local cut = PIECE - 200 + #warning // 2
    local found = collect(text, { cut, #text })
    t:assert_eq(#found, 1, "once")
end)

test("a flood: one look reads at most 64 pieces, the next goes on", function(t)
    local boundaries = {}
    for i = 1, 70 do boundaries[#boundaries + 1] = i * PIECE end
    local text = log_with(boundaries, 300)
    local found = collect(text, { #text, #text })
    t:assert_eq(#found, 70, "every report, over two looks")
end)
