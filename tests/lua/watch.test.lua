-- --watch (docs/cli.md): a run, then another whenever a .lua file changes;
-- Ctrl-C ends it.
local meta = require("lib.meta")

local function read(path)
    local f = io.open(path)
    if not f then return "" end
    local s = f:read("a")
    f:close()
    return s
end

local function count(s, pat)
    local n = 0
    for _ in s:gmatch(pat) do n = n + 1 end
    return n
end

test("--watch runs again on a change and stops at Ctrl-C", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/a.test.lua", 'test("x", function() end)\n')
    os.execute(("sh -c 'cd %s; %s --watch --save-events ev.bin . > log 2>&1 & echo $! > pid; " ..
        "wait $!; echo $? > rc' &"):format(meta.quote(d), meta.quote(meta.bin)))
    local log = d .. "/log"
    wait_until(function() return read(log):find("1 passed, 0 failed", 1, true) end,
        { timeout = 30, desc = "the first run" })
    -- the summary line and the watch line are two writes: wait for the second
    wait_until(function() return read(log):find("provium: watching for changes (Ctrl-C to stop)", 1, true) end,
        { timeout = 30, desc = "the watch line" })
    -- a change to a file
    _provium_c.sleep(0.05)
    meta.write(d .. "/a.test.lua", 'test("x", function(t) t:fail("now failing") end)\n')
    wait_until(function() return read(log):find("0 passed, 1 failed", 1, true) end,
        { timeout = 30, desc = "the run after the change" })
    -- a new file (and a helper) are picked up
    meta.write(d .. "/b.test.lua", 'test("y", function() end)\n')
    wait_until(function() return read(log):find("2 file(s); 1 passed, 1 failed", 1, true) end,
        { timeout = 30, desc = "the run with the new file" })
    -- the events file holds the last run only
    wait_until(function() return read(log):match("watching for changes[^\n]*\n$") end,
        { timeout = 30, desc = "watching again" })
    local ev = io.popen("/usr/bin/python3 " .. meta.quote(meta.tests .. "/lib/events_dump.py") ..
        " " .. meta.quote(d .. "/ev.bin")):read("a")
    t:assert_eq(count(ev, '"kind": "file_discovered"'), 2)
    os.execute("kill -INT $(cat " .. meta.quote(d .. "/pid") .. ")")
    wait_until(function() return read(d .. "/rc") ~= "" end, { timeout = 20, desc = "exit" })
    local rc, out = read(d .. "/rc"), read(log)
    meta.rmdir(d)
    t:assert_eq(rc, "1\n", "the last run failed")
    t:assert_eq(count(out, "file%(s%);"), 3, "three runs")
end)
