-- Guest bytes never reach the terminal raw (docs/cli.md#guest-bytes):
-- provium runs lua/cases/guest_bytes.lua, whose output and failure message
-- hold escape sequences, on a pseudo-terminal (script(1), util-linux) and
-- through a pipe. --json keeps the text as it was.
local meta = require("lib.meta")

local CASE = "lua/cases/guest_bytes.lua"

local function check(t, out, how)
    -- %q: the output shown in a failure holds no raw bytes itself
    t:assert(not out:find("\27", 1, true), how .. ": a raw ESC reached the output: " .. ("%q"):format(out))
    t:assert(not out:find("\7", 1, true), how .. ": a raw BEL reached the output")
    t:assert(not out:find("\155", 1, true), how .. ": a raw C1 CSI reached the output")
    t:assert(not out:find("\0", 1, true), how .. ": a raw NUL reached the output")
    t:assert_contains(out, "clipboard \\x1b]52;c;cHduZWQ=\\x07 after\\rover \\x7f del \\xc2\\x9b csi",
        how .. ": the failure message, escaped")
    t:assert_contains(out, "printed \\x1b]0;pwned title\\x07 and \\x1b[2J clear \\x00 nul \\x9b",
        how .. ": what the file printed, escaped")
    t:assert_contains(out, "PASS \\x1b]0;a title\\x07 in a name", how .. ": a test's name, escaped")
end

test("on a terminal, escape sequences in output and failures arrive escaped", function(t)
    -- script runs the command on a new pseudo-terminal, so provium's stdout
    -- and stderr are a terminal; its own copy of the session goes nowhere.
    local cmd = ("cd %s && %s -v %s"):format(meta.quote(meta.tests), meta.quote(meta.bin), CASE)
    local p = io.popen("script -qec " .. meta.quote(cmd) .. " /dev/null </dev/null; echo \"@@EXIT=$?\"")
    local out = p:read("a")
    p:close()
    t:assert_eq(tonumber(out:match("@@EXIT=(%d+)%s*$")), 1, ("%q"):format(out))
    -- provium's own progress line, drawn on terminals, erases itself with
    -- CR ESC [K; the case prints no such sequence
    out = out:gsub("\r\n", "\n"):gsub("\r\27%[K", "\n")
    check(t, out, "terminal")
end)

test("through a pipe (a CI log), the same", function(t)
    local out, code = meta.provium({ "-v", CASE })
    t:assert_eq(code, 1, ("%q"):format(out))
    check(t, out, "pipe")
end)

test("--json keeps the message as the test made it", function(t)
    local files = meta.json_run({ CASE })
    local _, f = next(files)
    local s = meta.by_name(f)
    t:assert_contains(s["osc 52 in a failure message"].message, "clipboard \27]52;c;cHduZWQ=\7 after\rover")
end)
