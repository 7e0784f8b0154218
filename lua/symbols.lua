-- Symbolized stacks (docs/splats.md#symbolized-stacks): each frame of a
-- splat's excerpt, `func+0x12/0x40 [mod]`, gets the `file:line` it was at,
-- from the module's .ko or the kernel's vmlinux when they carry debug info
-- (binutils' objdump and addr2line, through _provium_c.sym). Without the
-- tools, the files or their debug info, the excerpt stays as it was: this
-- never fails a test by itself.
local C = _provium_c
local P = _provium
local Y = {}
P.symbols = Y

Y.MAX_FRAMES = 64 -- frames looked up per excerpt (sym.resolve's own limit too)
Y.TIMEOUT = 20    -- seconds per tool run
Y.BUDGET = 60     -- seconds for all the excerpts of one look at a VM's logs

-- Per VM: the host path of each module a test loaded with vm:insmod of a
-- host file, by module name (vm:modprobe's are the modules tree's).
local loaded = setmetatable({}, { __mode = "k" })

-- The name a module's frames carry: `[provium_demo]` for provium-demo.ko.
local function mod_name(path)
    return (path:match("([^/]+)$"):gsub("%.ko.*$", ""):gsub("-", "_"))
end

-- lua/module.lua tells where a module it loaded came from.
function Y.note_module(vm, path)
    local t = loaded[vm] or {}
    loaded[vm] = t
    t[mod_name(path)] = path
end

-- ELF files that gave nothing (no debug info, a tool missing or too slow):
-- not asked again in this run.
local useless = {}

local function readable(p)
    local f = p and io.open(p, "rb")
    if f then f:close() end
    return f and p or nil
end

-- The .ko of module `mod` on vm: the file it was loaded from, else the
-- profile's modules tree's, or its copy with debug info from Debian's -dbg
-- package (/usr/lib/debug/lib/modules/<release>/...). nil when none (or
-- it is compressed).
local function ko_of(vm, mod)
    local p = loaded[vm] and loaded[vm][mod]
    if readable(p) then return p end
    local dir = vm:modules_dir()
    if not dir then return nil end
    local ok, paths = pcall(C.kmod_order, dir, mod)
    local rel = ok and paths[#paths]
    if not (rel and rel:match("%.ko$")) then return nil end
    local okr, release = pcall(vm.kernel_release, vm)
    local dbg = okr and release:match("^[%w._+~-]+$") and release ~= ".." -- the guest's word
    return dbg and readable(("/usr/lib/debug/lib/modules/%s/%s"):format(release, rel))
        or readable(dir .. "/" .. rel)
end

-- The frame a line of an excerpt shows, or nil: {s, e} its span in line,
-- func, off, len, mod, ret (a return address: any frame but the faulting
-- instruction's `RIP:`/`pc :` line). A report's header (`WARNING: ... at
-- file:line func+...`) names its line already: no frame.
local function frame_in(line)
    local body = P.splat.strip(line)
    local ret, rest = true, body
    local ip = body:match("^RIP: %x+:()") or body:match("^pc : ()")
    if ip then
        ret, rest = false, body:sub(ip)
    else
        local skip = body:match("^lr : ()") or body:match("^%[<%x+>%]%s*()") or 1
        rest = body:sub(skip)
        rest = rest:gsub("^%? ", "", 1)
    end
    local s, func, off, len, e = rest:match("^()([%w_%.]+)%+0x(%x+)/0x(%x+)()")
    if not s then return nil end
    local mod, e2 = rest:match("^ %[([%w_]+)%]()", e)
    local base = #line - #rest -- rest is the end of line
    return { e = base + (e2 or e) - 1, func = func, off = tonumber(off, 16),
        len = tonumber(len, 16), mod = mod, ret = ret }
end
Y.frame_in = frame_in

-- The ELF file to look frame f up in: the module's .ko, or the vmlinux.
local function elf_of(vm, f)
    if f.mod then return ko_of(vm, f.mod) end
    return C.sym.vmlinux(vm)
end

-- excerpt with `(file:line)` after each frame the debug info places, as
-- far as the deadline (C.now() seconds) allows. find(vm, frame) -> the ELF
-- file to look it up in, or nil (default: the .ko of its module, or the
-- vmlinux of vm's kernel).
function Y.annotate(vm, excerpt, deadline, find)
    find = find or elf_of
    local lines, frames, by_elf, order = {}, {}, {}, {}
    for l in (excerpt .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
    for i, l in ipairs(lines) do
        local f = #frames < Y.MAX_FRAMES and frame_in(l)
        if f then
            local elf = find(vm, f)
            if elf and not useless[elf] then
                f.line = i
                frames[#frames + 1] = f
                if not by_elf[elf] then
                    by_elf[elf] = {}
                    order[#order + 1] = elf
                end
                table.insert(by_elf[elf], f)
            end
        end
    end
    for _, elf in ipairs(order) do
        local left = deadline - C.now()
        if left < 1 then break end
        local got = C.sym.resolve(elf, by_elf[elf], math.min(Y.TIMEOUT, left))
        local any = false
        for k, f in ipairs(by_elf[elf]) do
            f.where = got and got[k] or nil
            any = any or f.where ~= nil
        end
        if not any then useless[elf] = true end
    end
    for _, f in ipairs(frames) do
        if f.where then
            local l = lines[f.line]
            lines[f.line] = l:sub(1, f.e) .. " (" .. f.where .. ")" .. l:sub(f.e + 1)
        end
    end
    return table.concat(lines, "\n")
end

-- The splats of one look, annotated within Y.BUDGET seconds; an error in
-- here leaves an excerpt as it was.
function Y.annotate_all(vm, splats)
    local deadline = C.now() + Y.BUDGET
    for _, sp in ipairs(splats) do
        local ok, ex = pcall(Y.annotate, vm, sp.excerpt, deadline)
        if ok then sp.excerpt = ex end
    end
end
