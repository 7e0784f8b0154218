-- Coverage reports (docs/coverage.md): --coverage after a run, and
-- `provium coverage` / `provium-coverage` over an event stream from a file,
-- stdin or a socket. Pages are read by a real HTML parser
-- (tests/lib/html_check.py, Python's html.parser) and by xmllint --html.
local meta = require("lib.meta")

local HOSTILE = "<script>alert(1)</script> & \"q\" 'x' \27[31m"

-- Sections out of order, a test in two sections, a failure, a skip, a test
-- without a spec, and a name and a spec that are markup.
local CASES = {
    ["a.test.lua"] = [[
test("ten", { spec = "§4.2.10" }, function(t) end)
test("nine", { spec = "§4.2.9" }, function(t) t:assert_eq(1, 2) end)
test("two", { spec = { "§1", "§2" } }, function(t) end)
test("later", { spec = "§1", skip = "not today" }, function(t) end)
test("plain", function(t)
    print("TMP=" .. tostring(os.getenv("PROVIUM_COVERAGE_TMP")))
    print("MARKER=" .. tostring(os.getenv("PROVIUM_COVERAGE_MARKER")))
    print("USER=" .. tostring(os.getenv("PROVIUM_COVERAGE_USER_FILE")))
    local tmp = os.getenv("PROVIUM_COVERAGE_TMP")
    print("EXISTS=" .. tostring(tmp and io.open(tmp) ~= nil))
end)
test([==[HOSTILE]==], { spec = "</td><b>§9" }, function(t) error("<img src=x onerror=alert(1)>") end)
]],
    ["b.test.lua"] = "error('does not load')\n",
}

local function cases(d)
    for name, text in pairs(CASES) do
        meta.write(d .. "/" .. name, (text:gsub("HOSTILE", (HOSTILE:gsub("%%", "%%%%")))))
    end
end

local function page(t, path)
    local out, code = meta.sh("python3 " .. meta.quote(meta.tests .. "/lib/html_check.py") .. " "
        .. meta.quote(path))
    t:assert_eq(code, 0, out)
    local lint, lcode = meta.sh("xmllint --html --noout " .. meta.quote(path))
    t:assert_eq(lcode, 0, lint)
    t:assert_eq(lint, "", "xmllint --html on " .. path)
    return json.decode(out)
end

local function has(list, x)
    for _, v in ipairs(list) do
        if v == x then return true end
    end
    return false
end

-- What every report of CASES shows.
local function check_page(t, p)
    for _, tag in ipairs({ "script", "img", "b", "link", "iframe" }) do
        t:assert(not has(p.tags, tag), "a <" .. tag .. "> in the page")
    end
    t:assert_eq(#p.external, 0, "the page loads nothing: " .. table.concat(p.external, " "))
    t:assert_eq(#p.unclosed, 0, "tags left open or closed twice: " .. table.concat(p.unclosed, " "))
    t:assert(has(p.names, (HOSTILE:gsub("\27", "\\x1b"))), "the hostile name as text")
    t:assert(has(p.h2, "</td><b>§9 FAIL"), "the hostile spec as a heading's text")
    local order = {}
    for _, h in ipairs(p.h2) do order[#order + 1] = h end
    t:assert_eq(table.concat(order, "|"),
        "</td><b>§9 FAIL|§1 PASS|§2 PASS|§4.2.9 FAIL|§4.2.10 PASS|(no meta.spec) PASS|Files that did not pass")
end

test("--coverage: a report by meta.spec after the run, temporary events removed", function(t)
    local d = meta.tmpdir()
    cases(d)
    meta.sh("mkdir " .. meta.quote(d .. "/tmp"))
    local out, code = meta.provium({ "--no-preflight", "--coverage", "a.test.lua", "b.test.lua" },
        { cwd = d, env = { TMPDIR = d .. "/tmp" } })
    t:assert_eq(code, 1, out) -- the tests' failures; the report itself worked
    t:assert_contains(out, "coverage: 6 section(s), 6 test(s); 3 passed, 2 failed, 1 skipped\n")
    t:assert_contains(out, "FAIL §4.2.9 (0 passed, 1 failed, 0 skipped; ")
    t:assert_contains(out, "files that did not pass:\n    failed a.test.lua\n    failed b.test.lua\n")
    t:assert_contains(out, "provium: coverage report in coverage.html")
    t:assert(not out:find("\27", 1, true), "no raw ESC on the terminal")
    -- the files saw the temporary file and its marker, which are gone now
    local tmp = out:match("TMP=(%S+)")
    t:assert_eq(tmp, ("%s/tmp/provium-coverage-%s.msgpack"):format(d, tmp:match("(%d+)%.msgpack$")))
    t:assert_eq(out:match("MARKER=(%S+)"), tmp:gsub("%.msgpack$", ".marker"))
    t:assert_contains(out, "USER=nil")
    t:assert_contains(out, "EXISTS=true")
    t:assert_eq(meta.sh("ls -A " .. meta.quote(d .. "/tmp")), "")
    check_page(t, page(t, d .. "/coverage.html"))
end)

test("--coverage with --save-events reads that file and keeps it", function(t)
    local d = meta.tmpdir()
    cases(d)
    local out, code = meta.provium({ "--no-preflight", "--coverage", "--save-events", "run.events",
        "a.test.lua" }, { cwd = d })
    t:assert_eq(code, 1, out)
    t:assert_contains(out, "USER=run.events")
    t:assert_contains(out, "TMP=nil")
    t:assert_eq(meta.sh("test -s " .. meta.quote(d .. "/run.events") .. " && echo kept"), "kept\n")
    check_page(t, page(t, d .. "/coverage.html"))
end)

test("a report that fails makes the run's exit status 1", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/ok.test.lua", 'test("ok", { spec = "§1" }, function(t) end)\n')
    meta.sh("mkdir " .. meta.quote(d .. "/coverage.html")) -- the page cannot replace a directory
    local out, code = meta.provium({ "--no-preflight", "--coverage", "ok.test.lua" }, { cwd = d })
    t:assert_eq(code, 1, out)
    t:assert_contains(out, "1 passed, 0 failed")
    t:assert_contains(out, "provium: --coverage: the report failed: coverage.html: ")
end)

test("a killed run's temporary events are removed by the next --coverage run", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/ok.test.lua", 'test("ok", function(t) end)\n')
    local tmp = d .. "/tmp"
    -- pid 999999 is past pid_max's default: gone; pid 1 lives; a marker
    -- that names another pid than its file's is not touched
    meta.sh(([[mkdir %s && cd %s && echo 999999 > provium-coverage-999999.marker &&
        : > provium-coverage-999999.msgpack && echo 1 > provium-coverage-1.marker &&
        : > provium-coverage-1.msgpack && echo 5 > provium-coverage-999998.marker]]):format(
        meta.quote(tmp), meta.quote(tmp)))
    local out, code = meta.provium({ "--no-preflight", "--coverage", "ok.test.lua" },
        { cwd = d, env = { TMPDIR = tmp } })
    t:assert_eq(code, 0, out)
    t:assert_eq(meta.sh("ls " .. meta.quote(tmp)),
        "provium-coverage-1.marker\nprovium-coverage-1.msgpack\nprovium-coverage-999998.marker\n")
end)

test("provium coverage and provium-coverage: a file, stdin, a socket; HTML or text", function(t)
    local d = meta.tmpdir()
    cases(d)
    local out, code = meta.provium({ "--no-preflight", "--save-events", "run.events", "a.test.lua",
        "b.test.lua" }, { cwd = d })
    t:assert_eq(code, 1, out)
    out, code = meta.provium({ "coverage", "--from", "run.events", "-o", "page.html" }, { cwd = d })
    t:assert_eq(code, 0, out)
    t:assert_eq(out, "")
    check_page(t, page(t, d .. "/page.html"))
    -- stdin, through the name provium-coverage (argv[0])
    meta.sh(("ln -s %s %s/provium-coverage"):format(meta.quote(meta.bin), meta.quote(d)))
    out, code = meta.sh(("cd %s && ./provium-coverage --from - --text < run.events"):format(meta.quote(d)))
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "coverage: 6 section(s), 6 test(s); 3 passed, 2 failed, 1 skipped\n")
    t:assert_contains(out, "PASS §1 (1 passed, 0 failed, 1 skipped; ")
    out, code = meta.sh(("cd %s && ./provium-coverage --from - > stdin.html < run.events"):format(meta.quote(d)))
    t:assert_eq(code, 0, out)
    check_page(t, page(t, d .. "/stdin.html"))
    -- a socket: the report starts before the run has made it, and sees what
    -- follows its connection (0wait's test waits for it, and -j 1 holds the
    -- other files back meanwhile)
    meta.write(d .. "/0wait.test.lua", 'test("wait", function(t) _provium_c.sleep(2) end)\n')
    out, code = meta.sh(([[cd %s && { ./provium-coverage --from-socket ev.sock --text > sock.txt 2>&1 & }
        sleep 0.3; %s --no-preflight -j 1 --events-socket ev.sock 0wait.test.lua a.test.lua \
        b.test.lua >/dev/null 2>&1; wait; cat sock.txt]]):format(meta.quote(d), meta.quote(meta.bin)))
    t:assert_contains(out, "coverage: 6 section(s), 7 test(s); 4 passed, 2 failed, 1 skipped\n")
    t:assert_contains(out, "FAIL §4.2.9 (0 passed, 1 failed, 0 skipped; ")
end)

test("provium coverage refuses bad input with 1 and bad usage with 2", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/junk", "this is not an event stream")
    meta.write(d .. "/cut", "\0\0\0\20\130")
    local cases_ = {
        { { "coverage", "--from", "nothing" }, 1, "provium coverage: --from nothing: No such file or directory" },
        { { "coverage", "--from", "junk" }, 1, "provium coverage: junk: frame 1 (byte 0): 1952999795 bytes, over the 64 MiB limit" },
        { { "coverage", "--from", "cut" }, 1, "provium coverage: cut: frame 1 (byte 0): the stream ends after 1 of its 20 bytes" },
        { { "coverage" }, 2, "give one of --from PATH, --from - and --from-socket PATH" },
        { { "coverage", "--from", "a", "--from-socket", "b" }, 2, "give one of" },
        { { "coverage", "--frm", "a" }, 2, "usage: provium coverage --from PATH" },
    }
    for _, c in ipairs(cases_) do
        local out, code = meta.provium(c[1], { cwd = d })
        t:assert_eq(code, c[2], out)
        t:assert_contains(out, c[3])
    end
end)

test("a run that cannot start makes no report and leaves no temporary file", function(t)
    local d = meta.tmpdir()
    meta.sh("mkdir " .. meta.quote(d .. "/tmp"))
    local out, code = meta.provium({ "--no-preflight", "--coverage", "nosuch.test.lua" },
        { cwd = d, env = { TMPDIR = d .. "/tmp" } })
    t:assert_eq(code, 2, out)
    t:assert_contains(out, "nosuch.test.lua: No such file or directory")
    t:assert(not out:find("coverage:", 1, true), out)
    t:assert_eq(meta.sh("ls -A " .. meta.quote(d)), "tmp\n")
    t:assert_eq(meta.sh("ls -A " .. meta.quote(d .. "/tmp")), "")
end)

test("SIGTERM during a --coverage run: the report of what ran, the temporary file removed", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/hold.test.lua", [[
test("first", { spec = "§1" }, function(t) end)
test("hold", { spec = "§2" }, function(t)
    io.open("ready", "w"):close()
    _provium_c.sleep(60)
end)
]])
    local out = meta.sh(([[
cd %s && mkdir tmp && { TMPDIR=%s/tmp %s --no-preflight --coverage hold.test.lua > out 2>&1 & pid=$!; }
i=0; while [ ! -e ready ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
echo "DURING=$(ls tmp | tr '\n' ' ')"
kill -TERM $pid; wait $pid; echo "CODE=$?"
echo "AFTER=$(ls -A tmp | tr '\n' ' ')"; cat out]]):format(meta.quote(d), meta.quote(d), meta.quote(meta.bin)))
    t:assert_contains(out, "CODE=130")
    local during = out:match("DURING=([^\n]*)")
    local pid = during:match("provium%-coverage%-(%d+)%.marker")
    t:assert(pid and during:find("provium-coverage-" .. pid .. ".msgpack", 1, true),
        "the marker and the events while the run goes on:\n" .. out)
    t:assert_contains(out, "AFTER=\n")
    t:assert_contains(out, "coverage: 2 section(s), 2 test(s); 1 passed, 1 failed, 0 skipped")
    t:assert_contains(out, "did not finish: its file ended first (interrupted)")
end)
