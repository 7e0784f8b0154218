-- provium repl (docs/repl.md), fed on stdin.
local meta = require("lib.meta")

local function repl(args, input, cwd)
    local d = meta.tmpdir()
    meta.write(d .. "/in", input)
    local a = { "repl" }
    for _, x in ipairs(args) do a[#a + 1] = x end
    local parts = { meta.quote(meta.bin) }
    for _, x in ipairs(a) do parts[#parts + 1] = meta.quote(x) end
    local p = io.popen(("cd %s && %s < %s 2>&1; echo \"@@EXIT=$?\""):format(meta.quote(cwd or meta.tests),
        table.concat(parts, " "), meta.quote(d .. "/in")))
    local out = p:read("a")
    p:close()
    meta.rmdir(d)
    return out:gsub("@@EXIT=%d+%s*$", ""), tonumber(out:match("@@EXIT=(%d+)%s*$"))
end

test("a prompt with a booted VM: expressions print, statements run, errors do not end it", function(t)
    local out, code = repl({ "--name", "box" }, table.concat({
        'vm:run("uname -r").stdout',
        "box:kernel_release() .. '!'",
        "for i = 1, 2 do",
        "  print('line ' .. i)",
        "end",
        "{ answer = 42 }",
        'error("boom")',
        "vm:state()",
        -- a guest's escape sequences, shown and printed: escaped
        [==[vm:run([[printf '\033]52;c;aGk=\007']]).stdout]==],
        [==[print(vm:run([[printf '\033]0;title\007']]).stdout)]==],
        "" }, "\n"))
    t:assert_eq(code, 0, out)
    local release = out:match("provium repl: `vm` %(also `box`%) is booted.-\n(.-)\n")
    t:assert(release and release:match("^%d+%.%d+"), "uname printed: " .. out)
    t:assert_contains(out, release .. "!\n")
    t:assert_contains(out, "line 1\nline 2\n")
    t:assert_contains(out, '{"answer":42}\n')
    t:assert_contains(out, "repl:1: boom")
    t:assert_contains(out, "\nbooted\n")
    t:assert_contains(out, "\\x1b]52;c;aGk=\\x07\n")
    t:assert_contains(out, "\\x1b]0;title\\x07\n")
    t:assert(not out:find("\27", 1, true), "no raw ESC: " .. ("%q"):format(out))
end)

test("repl refuses what it cannot do", function(t)
    local out, code = repl({ "nosuch" }, "")
    t:assert_eq(code, 2)
    t:assert_contains(out, "nosuch")
    out, code = repl({ "--fixture", "fixtures/nope" }, "")
    t:assert_eq(code, 2)
    t:assert_contains(out, "fixture `fixtures/nope` not found in any test root")
end)

test("repl --fixture starts from a fixture", function(t)
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/fixtures")
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\n')
    meta.write(d .. "/fixtures/ready.fixture.lua", [[
local vm = provium:vm("ready", "default"):boot()
vm:write_file("/tmp/ready", "yes\n")
return vm:snapshot()
]])
    local out, code = repl({ "--fixture", "fixtures/ready" }, 'ready:read_file("/tmp/ready")\n', d)
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "`vm` (also `ready`) is booted")
    t:assert_contains(out, "\nyes\n")
end)
