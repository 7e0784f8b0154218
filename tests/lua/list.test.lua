-- provium list (docs/cli.md): the files and their tests, read from the
-- source; nothing runs.
local meta = require("lib.meta")

test("list names each file's tests without running them", function(t)
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/sub")
    meta.write(d .. "/a.test.lua", [[
error("this file is never run")
test("first", function() end)
-- test("in a comment") is not a test
local s = 'test("in a string")'
test('second', { tags = "x" }, function() end)
for i = 1, 2 do test("case " .. i, function() end) end
local latest = 1 -- a word that ends in test
]])
    meta.write(d .. "/sub/b.test.lua", 'test "no parens: not listed"\ntest("third", function() end)\n')
    meta.write(d .. "/sub/base.fixture.lua", "return {}\n")
    local out, code = meta.provium({ "list" }, { cwd = d })
    t:assert_eq(code, 0, out)
    t:assert_eq(out, table.concat({
        "a.test.lua",
        "    first",
        "    second",
        "    (a test named by an expression, line 6)",
        "sub/b.test.lua",
        "    third",
        "2 file(s), 4 test(s)",
        "" }, "\n"))
    out, code = meta.provium({ "list", "--fixtures" }, { cwd = d })
    t:assert_eq(out, "sub/base.fixture.lua\n1 fixture(s)\n")
    out, code = meta.provium({ "list", "nope" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 2)
    t:assert_contains(out, "provium: nope: No such file or directory")
end)
