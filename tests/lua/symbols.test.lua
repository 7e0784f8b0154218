-- Symbolized stacks (docs/splats.md#symbolized-stacks) without a VM: a
-- recorded excerpt's frames looked up in ELF files with DWARF built here
-- with gcc -g from lua/data/symbols/sym_demo.c, a program (a vmlinux's
-- kind: its symbols' values are addresses) and an object file (a module's
-- .ko's kind: relocatable, every section from 0). The VM test with the
-- example module is tests/vm/symbols.test.lua.
local meta = require("lib.meta")
local Y = _provium.symbols
local C = _provium_c

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "."
local src = here .. "/data/symbols/sym_demo.c"

-- The line of sym_demo.c that holds marker (`/* FAULT */`).
local function line_of(marker)
    local n = 0
    for l in io.lines(src) do
        n = n + 1
        if l:find("/* " .. marker .. " */", 1, true) then return n end
    end
    error("no " .. marker .. " in " .. src)
end

-- Build sym_demo.c in a fresh directory with flags; the path of out.
local function build(t, flags, out)
    local dir = meta.tmpdir()
    local o, code = meta.sh(("cp %s %s && cd %s && gcc %s -O1 -o %s sym_demo.c")
        :format(meta.quote(src), meta.quote(dir), meta.quote(dir), flags, out))
    if code ~= 0 then t:fail("gcc failed:\n" .. o) end
    return dir .. "/" .. out
end

-- A WARNING as the kernel prints it, its frames in sym_demo.c's functions
-- (mod: " [sym_demo]" for a module's frames, "" for the kernel's).
local function excerpt(mod)
    return table.concat({
        "[   11.542808] WARNING: CPU: 0 PID: 79 at sym_demo.c:13 demo_fault+0xb/0x10" .. mod,
        "[   11.570814] RIP: 0010:demo_fault+0xb/0x10" .. mod,
        "[   11.593291] Call Trace:",
        "[   11.594057]  <TASK>",
        "[   11.594556]  demo_caller+0x5/0x8" .. mod,
        "[   11.595100]  ? no_such_function+0x9d/0x100" .. mod,
        "[   11.595100]  demo_fault+0x40/0x50" .. mod, -- past its end: another build
        "[   11.614822]  </TASK>",
    }, "\n")
end

local function annotate(text, elf)
    return Y.annotate(nil, text, C.now() + 60, function() return elf end)
end

test("a frame's parts, in the forms the kernel prints", function(t)
    local f = Y.frame_in("[   11.5] RIP: 0010:demo_write+0xdf/0x100 [provium_demo]")
    t:assert_eq(f.func, "demo_write")
    t:assert_eq(f.off, 0xdf)
    t:assert_eq(f.len, 0x100)
    t:assert_eq(f.mod, "provium_demo")
    t:assert_eq(f.ret, false, "the faulting instruction itself")
    t:assert_eq(("[   11.5] RIP: 0010:demo_write+0xdf/0x100 [provium_demo]"):sub(1, f.e),
        "[   11.5] RIP: 0010:demo_write+0xdf/0x100 [provium_demo]")
    f = Y.frame_in("[    6.9][ T79]  ? __fget_light.part.0+0x9d/0x100")
    t:assert_eq(f.func, "__fget_light.part.0")
    t:assert_eq(f.mod, nil)
    t:assert_eq(f.ret, true, "a call trace's frame is a return address")
    f = Y.frame_in(" [<ffffffff81234567>] vfs_write+0xc7/0x3f0")
    t:assert_eq(f.func, "vfs_write")
    t:assert_eq(Y.frame_in("pc : demo_read+0x10/0x40 [demo]").ret, false)
    t:assert_eq(Y.frame_in("lr : demo_read+0x8/0x40 [demo]").ret, true)
    -- the report's header names its line already; no frame in these
    t:assert_eq(Y.frame_in("WARNING: CPU: 0 PID: 79 at x.c:51 demo_write+0xdf/0x100 [m]"), nil)
    t:assert_eq(Y.frame_in("RIP: 0033:0x40e999"), nil)
    t:assert_eq(Y.frame_in(" <TASK>"), nil)
end)

test("the kernel's frames, from a vmlinux's kind of ELF file", function(t)
    local elf = build(t, "-g", "sym_demo")
    local got = annotate(excerpt(""), elf)
    local fault, call = line_of("FAULT"), line_of("CALL")
    t:assert_contains(got, ("RIP: 0010:demo_fault+0xb/0x10 (sym_demo.c:%d)\n"):format(fault))
    -- a return address: the call's line, not the one after it
    t:assert_contains(got, (" demo_caller+0x5/0x8 (sym_demo.c:%d)\n"):format(call))
    t:assert_contains(got, " ? no_such_function+0x9d/0x100\n")
    t:assert_contains(got, " demo_fault+0x40/0x50\n")
    t:assert_contains(got, "WARNING: CPU: 0 PID: 79 at sym_demo.c:13 demo_fault+0xb/0x10\n")
end)

test("a module's frames, from a relocatable ELF file, in two sections", function(t)
    local elf = build(t, "-g -c", "sym_demo.ko")
    local got = annotate(excerpt(" [sym_demo]"), elf)
    t:assert_contains(got, ("RIP: 0010:demo_fault+0xb/0x10 [sym_demo] (sym_demo.c:%d)\n")
        :format(line_of("FAULT")))
    t:assert_contains(got, (" demo_caller+0x5/0x8 [sym_demo] (sym_demo.c:%d)\n")
        :format(line_of("CALL")))
    local r = C.sym.resolve(elf, { { func = "demo_caller", off = 5, len = 8, ret = true } }, 10)
    t:assert_eq(r[1], ("sym_demo.c:%d"):format(line_of("CALL")))
end)

test("no debug info, no ELF file, no file: the excerpt stays as it was", function(t)
    local text = excerpt("")
    t:assert_eq(annotate(text, build(t, "", "nodebug")), text)
    local dir = meta.tmpdir()
    meta.write(dir .. "/vmlinux", "not an ELF file\n")
    t:assert_eq(annotate(text, dir .. "/vmlinux"), text)
    local r, msg = C.sym.resolve(dir .. "/vmlinux", { { func = "f", off = 1, len = 2 } }, 10)
    t:assert_eq(r, nil)
    t:assert_contains(msg, dir .. "/vmlinux: not a little-endian ELF file")
    t:assert_eq(annotate(text, dir .. "/missing"), text)
    t:assert_eq(annotate(text, nil), text)
end)

test("bounded: 64 frames an excerpt, and sym.resolve refuses more", function(t)
    local elf = build(t, "-g", "sym_demo")
    local lines = {}
    for i = 1, 70 do lines[i] = " demo_caller+0x5/0x8" end
    local got = annotate(table.concat(lines, "\n"), elf)
    local n = select(2, got:gsub("%(sym_demo%.c:%d+%)", ""))
    t:assert_eq(n, 64)
    local many = {}
    for i = 1, 65 do many[i] = { func = "f", off = 1, len = 2 } end
    t:assert_contains(t:assert_raises(function() C.sym.resolve(elf, many, 10) end), "at most 64 frames")
    t:assert_contains(t:assert_raises(function() C.sym.resolve(elf, { { func = "f", off = -1, len = 2 } }, 10) end),
        "off must be a non-negative integer")
end)
