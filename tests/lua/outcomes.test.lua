-- Outcomes, messages and exit codes of the framework, seen from outside:
-- provium runs case files and we read its --json lines and human output.
local meta = require("lib.meta")
local cases = "lua/cases/"

local function case(name, extra)
    local args = extra or {}
    args[#args + 1] = cases .. name .. ".lua"
    local files, code, out = meta.json_run(args)
    local _, f = next(files)
    return f, code, out
end

test("outcome of each kind of test", function(t)
    local f, code = case("outcomes")
    t:assert(f, "a json line for the file")
    t:assert_eq(code, 1, "exit code with failures")
    t:assert_eq(f.passed, false)
    local s = meta.by_name(f)
    t:assert_eq(s["passes"].status, "passed")
    t:assert_eq(s["fails with assert_eq"].status, "failed")
    t:assert_contains(s["fails with assert_eq"].message, "1 must equal 2: 1 ~= 2")
    t:assert_contains(s["fails with assert_eq"].message, "outcomes.lua:3:",
        "the message names the caller's line")
    t:assert_eq(s["sticky failure"].status, "failed", "pcall does not hide a failed assert")
    t:assert_eq(s["assert_raises does not poison"].status, "passed")
    t:assert_eq(s["explicit fail"].message:match("explicit failure %(t:fail%)$") ~= nil, true)
    t:assert_contains(s["runtime error"].message, "attempt to index")
    t:assert_eq(s["skips itself"].status, "skipped")
    t:assert_eq(s["skips itself"].message, "not today")
    t:assert_eq(s["meta skip true"].message, "skipped (meta.skip)")
    t:assert_eq(s["meta skip string"].message, "skipped: broken upstream")
    t:assert_eq(s["meta skip 0 runs"].status, "passed")
    t:assert_eq(s["slow"].message, "filtered: slow tests skipped (pass --include-slow)")
    t:assert_eq(#s["logs"].log, 2)
    t:assert_eq(s["logs"].log[2], "2")
    t:assert_eq(s["times out"].status, "failed")
    t:assert_eq(s["times out"].message, "test timed out after 0.3s")
    t:assert_eq(s["runs after a timeout"].status, "passed")
    t:assert_eq(s["wait_until times out"].message:match("wait_until: never not met within 0.2s") ~= nil, true)
end)

test("--include-slow runs slow tests", function(t)
    local f = case("outcomes", { "--include-slow" })
    t:assert_eq(meta.by_name(f)["slow"].status, "passed")
end)

test("todo skips every test with its reason", function(t)
    local f, code = case("todo")
    t:assert_eq(code, 0)
    for _, x in ipairs(f.tests) do
        t:assert_eq(x.status, "skipped")
        t:assert_eq(x.message, "not written yet")
    end
    t:assert_eq(#f.tests, 2)
end)

test("a syntax error names the file and line", function(t)
    local f, code = case("syntax")
    t:assert_eq(code, 1)
    t:assert_contains(f.chunk_error, "syntax.lua:2:")
end)

test("duplicate test names are refused at registration", function(t)
    local f = case("dup")
    t:assert_contains(f.chunk_error, "test: duplicate name `foo` in this file")
end)

test("human output: FAIL lines, indentation, summary, exit 1", function(t)
    local out, code = meta.provium({ cases .. "fail.lua" })
    t:assert_eq(code, 1)
    t:assert_contains(out, "FAIL " .. cases .. "fail.lua (1 passed, 1 failed, 0 skipped)\n")
    t:assert_contains(out, "\n    FAIL split-brain\n        ")
    t:assert_contains(out, "client A could not reach client B after partition")
    t:assert(out:match("\n1 file%(s%); 1 passed, 1 failed, 0 skipped; [%d.]+s\n$"),
        "the summary is the last line")
end)

test("a passing file: PASS line and exit 0", function(t)
    local out, code = meta.provium({ cases .. "pass.lua" })
    t:assert_eq(code, 0)
    t:assert_contains(out, "PASS " .. cases .. "pass.lua (1 passed, 0 failed, 0 skipped)")
end)

test("-v lists passing and skipped tests; -q hides passing files", function(t)
    local out = meta.provium({ "-v", cases .. "todo.lua" })
    t:assert_contains(out, "    SKIP a\n        not written yet")
    out = meta.provium({ "-q", cases .. "pass.lua" })
    t:assert(not out:find("PASS", 1, true), "-q prints no PASS line")
end)

test("--timeout ends a file with TIME", function(t)
    local out, code = meta.provium({ "--timeout", "1s", cases .. "sleepy.lua" })
    t:assert_eq(code, 1)
    t:assert_contains(out, "TIME " .. cases .. "sleepy.lua")
    t:assert_contains(out, "file timed out after 1s")
end)

test("a malformed provium.toml exits 2 naming file and line", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/provium.toml", "[profiles.x]\nkernel = \"/k\"\ncmdline = \"a\nb\"\n")
    meta.write(d .. "/a.test.lua", "test('x', function() end)\n")
    local out, code = meta.provium({ "a.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 2)
    t:assert_contains(out, "parse `")
    t:assert_contains(out, "provium.toml`:3:")
end)

test("an unknown option exits 2", function(t)
    local _, code = meta.provium({ "--no-such-flag" })
    t:assert_eq(code, 2)
end)

test("a missing path exits 2", function(t)
    local out, code = meta.provium({ "/nonexistent/x.test.lua" })
    t:assert_eq(code, 2)
    t:assert_contains(out, "/nonexistent/x.test.lua")
end)

test("a NUL in a message or an event loses neither the file's results nor the event", function(t)
    local d = meta.tmpdir()
    local out, code = meta.provium({ "--save-events", d .. "/ev.bin", cases .. "nul.lua" })
    t:assert_eq(code, 1, out)
    t:assert_contains(out, "FAIL " .. cases .. "nul.lua (1 passed, 2 failed, 0 skipped)")
    t:assert_contains(out, "    FAIL fails with a NUL\n        " .. cases .. "nul.lua:3: before\\x00after\n")
    t:assert_contains(out, "    FAIL errors with a NUL\n        one\\x00two\n")
    t:assert(not out:find("\0", 1, true), "no raw NUL on the terminal")

    local f = case("nul")
    t:assert(type(f.chunk_error) ~= "string", "the file loaded")
    local s = meta.by_name(f)
    t:assert_eq(s["fails with a NUL"].status, "failed")
    t:assert_contains(s["fails with a NUL"].message, "before\\x00after")
    t:assert_eq(s["sends an event with a NUL"].status, "passed")

    local p = io.popen("/usr/bin/python3 " .. meta.quote(meta.tests .. "/lib/events_dump.py")
        .. " " .. meta.quote(d .. "/ev.bin"))
    local failed, note = {}, nil
    for line in p:lines() do
        local e = json.decode(line)
        if e.kind == "test_failed" then failed[e.payload.name] = e.payload.reason end
        if e.kind == "test_note" then note = e.payload.text end
    end
    p:close()
    t:assert_eq(note, "x\0y", "the event arrives, its NUL intact")
    t:assert_contains(failed["fails with a NUL"] or "", "before\0after")
    t:assert_contains(failed["errors with a NUL"] or "", "one\0two")
    local _, status = meta.json_run({ cases .. "nul.lua" })
    t:assert_eq(status, 1)
end)

test("an event line over 16 MiB is dropped; the main process does not keep it, the next arrives", function(t)
    local d = meta.tmpdir()
    local out, code = meta.provium({ "--save-events", d .. "/ev.bin", cases .. "bigevent.lua" })
    t:assert_eq(code, 0, out)
    local p = io.popen("/usr/bin/python3 " .. meta.quote(meta.tests .. "/lib/events_dump.py")
        .. " " .. meta.quote(d .. "/ev.bin"))
    local notes = {}
    for line in p:lines() do
        local e = json.decode(line)
        if e.kind == "test_note" then notes[#notes + 1] = e.payload.text end
    end
    p:close()
    t:assert_eq(#notes, 1, "only the small note")
    t:assert_eq(notes[1], "small")
    meta.rmdir(d)
end)
