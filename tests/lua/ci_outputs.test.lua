-- --junit and --tap (docs/cli.md): read back with a real XML parser and
-- schema (xmllint, tests/lua/data/junit.xsd) and with prove.
local meta = require("lib.meta")

local sh = meta.sh

local function suite(d)
    meta.write(d .. "/good.test.lua", [[
test("passes", function() end)
test("is skipped", { skip = "not today" }, function() end)
test("names # with < & > \"quotes\"", function() end)
]])
    meta.write(d .. "/bad.test.lua", [[
test("fails", function(t) t:fail("first line\nsecond <line> & \27[31mcolour\27[0m \255 \239\191\191") end)
test("passes too", function() end)
]])
    meta.write(d .. "/broken.test.lua", "this is not lua\n")
end

test("--junit writes XML that the JUnit schema accepts", function(t)
    local d = meta.tmpdir()
    suite(d)
    local out, code = meta.provium({ "--junit", "out.xml", "." }, { cwd = d })
    t:assert_eq(code, 1, out)
    local lint, rc = sh(("xmllint --noout --schema %s %s/out.xml"):format(
        meta.quote(meta.tests .. "/lua/data/junit.xsd"), meta.quote(d)))
    t:assert_eq(rc, 0, lint)
    local f = assert(io.open(d .. "/out.xml"))
    local xml = f:read("a")
    f:close()
    meta.rmdir(d)
    t:assert_contains(xml, '<testsuites name="provium" tests="6" failures="1" errors="1" skipped="1"')
    t:assert_contains(xml, '<testsuite name="bad.test.lua" tests="2" failures="1" errors="0" skipped="0"')
    -- control characters and U+FFFF (no XML character) are escaped as for a
    -- terminal; bytes that are not UTF-8 reach the outcome as U+FFFD
    t:assert_contains(xml, '<failure message="bad.test.lua:1: first line" type="failure">bad.test.lua:1: first line\nsecond &lt;line&gt; &amp; \\x1b[31mcolour\\x1b[0m \u{FFFD} \\xef\\xbf\\xbf</failure>')
    t:assert_contains(xml, '<skipped message="skipped: not today"/>')
    t:assert_contains(xml, 'name="names # with &lt; &amp; &gt; &quot;quotes&quot;"')
    t:assert_contains(xml, '<testcase classname="broken.test.lua" name="(file)" time="0">\n      <error message=')
    t:assert_contains(out, "FAIL bad.test.lua", "the human lines still come")
end)

test("--tap is TAP version 14 that prove reads, a subtest per file", function(t)
    local d = meta.tmpdir()
    suite(d)
    local out, code = sh(("(cd %s && %s --tap . 2>/dev/null > out.tap)"):format(meta.quote(d),
        meta.quote(meta.bin)))
    t:assert_eq(code, 1, out)
    local f = assert(io.open(d .. "/out.tap"))
    local tap = f:read("a")
    f:close()
    t:assert_eq(tap:sub(1, 15), "TAP version 14\n")
    t:assert_contains(tap, "# Subtest: good.test.lua\n    ok 1 - passes\n    ok 2 - is skipped # SKIP skipped: not today\n")
    t:assert_contains(tap, "    ok 3 - names \\# with < & > \"quotes\"\n")
    t:assert_contains(tap, "    not ok 1 - fails\n      ---\n      message: |\n        bad.test.lua:1: first line\n")
    t:assert_contains(tap, "\n        second <line> & \\x1b[31mcolour\\x1b[0m \u{FFFD} \\xef\\xbf\\xbf\n",
        "control characters escaped as for a terminal (TAP goes to stdout)")
    t:assert(tap:match("\nnot ok %d %- bad%.test%.lua\n"), "the file's point, not ok")
    t:assert(tap:match("\n1%.%.3\n$"), "the plan comes last")
    -- prove parses it: two failed subtests, no parse errors. Debian 12's
    -- prove (Test::Harness 3.44) stops at a version line above 13; the rest
    -- of the stream is what TAP 13 harnesses read (docs/cli.md).
    local prove = "sed 1s/14/13/ %s > %s.13 && prove -e cat %s.13"
    local pr = sh(("cd %s && " .. prove):format(meta.quote(d), "out.tap", "out.tap", "out.tap"))
    t:assert_contains(pr, "Failed 2/3 subtests")
    t:assert_eq(pr:find("Parse errors", 1, true), nil, pr)
    -- and a passing suite passes in prove
    os.remove(d .. "/bad.test.lua")
    os.remove(d .. "/broken.test.lua")
    sh(("(cd %s && %s --tap . 2>/dev/null > ok.tap)"):format(meta.quote(d), meta.quote(meta.bin)))
    local pr2, rc = sh(("cd %s && " .. prove):format(meta.quote(d), "ok.tap", "ok.tap", "ok.tap"))
    meta.rmdir(d)
    t:assert_eq(rc, 0, pr2)
    t:assert_contains(pr2, "Result: PASS")
end)

test("--json and --tap both want stdout", function(t)
    local out, code = meta.provium({ "--json", "--tap" })
    t:assert_eq(code, 2)
    t:assert_contains(out, "--json, --tap and --events-stdout all write to stdout: pick one")
end)
