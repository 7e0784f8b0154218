-- The seeds' API (docs/legacy.md) without a VM: the global assertions and
-- todo inside a test through the real runner, the exec strings' helpers,
-- boot's files map, the dot-call forms, and the checks the buffer forms of
-- syscall make before anything reaches a guest.
local meta = require("lib.meta")
local P = _provium

test("tests without t: global asserts and todo inside a test", function(t)
    local files, code = meta.json_run({ "lua/cases/seeds.lua" })
    local _, f = next(files)
    t:assert(f, "a json line for the file")
    t:assert_eq(code, 1)
    local s = meta.by_name(f)
    t:assert_eq(s["passes with global asserts"].status, "passed")
    t:assert_contains(s["assert_eq fails expected first"].message, "seeds.lua:8: one: expected 1, got 2")
    t:assert_contains(s["assert fails with its message"].message, "seeds.lua:9: nope")
    t:assert_contains(s["assert fails without a message"].message, "seeds.lua:10: assertion failed!")
    t:assert_contains(s["assert_contains fails"].message, '"abc" does not contain "z"')
    t:assert_eq(s["assert_eq caught by pcall still fails"].status, "failed")
    t:assert_eq(s["builtin-style assert caught by pcall passes"].status, "passed")
    t:assert_eq(s["todo inside a test skips it"].status, "skipped")
    t:assert_eq(s["todo inside a test skips it"].message, "needs the new ioctl")
    t:assert_eq(s["todo without a reason"].message, "todo")
    t:assert_eq(s["runs after a todo"].status, "passed")
end)

test("exec output: real strings with value, contains, starts_with, trim", function(t)
    P.legacy_strings()
    local s = "  hello world\n"
    t:assert_eq(type(s), "string")
    t:assert_eq(s.value, s)
    t:assert_eq(s.contains("lo w"), true)
    t:assert_eq(s.contains("%a"), false, "a plain substring, not a pattern")
    t:assert_eq(s:contains("world"), true, "colon form")
    t:assert_eq(s.starts_with("  he"), true)
    t:assert_eq(s.starts_with("he"), false)
    t:assert_eq(s.trim(), "hello world")
    t:assert_eq(s:trim(), "hello world")
    t:assert_eq(s.trim().value, "hello world")
    -- the string library is untouched
    t:assert_eq(s:upper(), "  HELLO WORLD\n")
    t:assert_eq(#s, 14)
    t:assert_eq(s.nosuch, nil)
    t:assert_contains(s, "hello")
end)

test("boot's files map: guest path -> host file, read at the call", function(t)
    local dir = meta.tmpdir()
    meta.write(dir .. "/prog", "#!/bin/sh\necho hi\n")
    local o = P.legacy_boot_opts({ memory = "256M", files = { ["/bin/prog"] = dir .. "/prog" } }, 1)
    t:assert_eq(o.memory, "256M")
    t:assert_eq(#o.files, 1)
    t:assert_eq(o.files[1].path, "/bin/prog")
    t:assert_eq(o.files[1].content, "#!/bin/sh\necho hi\n")
    t:assert_eq(o.files[1].mode, tonumber("755", 8))
    local today = { files = { { path = "/a", content = "x" } } }
    t:assert_eq(P.legacy_boot_opts(today, 1), today, "today's array form passes through")
    local err = t:assert_raises(function()
        P.legacy_boot_opts({ files = { ["/x"] = dir .. "/missing" } }, 1)
    end)
    t:assert_contains(err, 'files["/x"]')
    t:assert_contains(err, "missing")
end)

test("dot calls: fixture, vm_fixture, lab_fixture, shutdown_all", function(t)
    local err = t:assert_raises(function() provium.fixture(42) end)
    t:assert_contains(err, "provium.fixture: expected a fixture name")
    err = t:assert_raises(function() provium.vm_fixture(nil) end)
    t:assert_contains(err, "vm_fixture: expected a fixture path")
    err = t:assert_raises(function() provium.lab_fixture(7) end)
    t:assert_contains(err, "lab_fixture: expected a fixture path")
    err = t:assert_raises(function() provium.fixture("no-such-fixture") end)
    t:assert_contains(err, "fixture `no-such-fixture` not found in any test root")
    provium.shutdown_all() -- nothing booted: nothing to do
    provium:shutdown_all()
end)

test("provium.fixture(name) builds fixtures/<name>.fixture.lua", function(t)
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/fixtures")
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\n')
    meta.write(d .. "/fixtures/broken.fixture.lua", 'error("seeds-broken")\n')
    meta.write(d .. "/a.test.lua", 'local vm = provium.fixture("broken")\ntest("x", function() end)\n')
    local files, code, out = meta.json_run({ "a.test.lua" }, { cwd = d })
    t:assert_eq(code, 1, out)
    local err = files["a.test.lua"].chunk_error
    t:assert_contains(err, "fixture `fixtures/broken` failed to build")
    t:assert_contains(err, "seeds-broken")
    t:assert_contains(err, "a.test.lua:1:", "named at the caller")
end)

test("buffer forms of syscall and ioctl check their arguments first", function(t)
    local vm = provium:vm("unbooted", "default")
    local cases = {
        { function() vm:syscall_buf(1, "x", "data") end, "argument index must be an integer" },
        { function() vm:syscall_bufs(1, { [7] = "x" }) end, "buffer key `7` is not an argument index" },
        { function() vm:syscall_bufs(1, { [0] = 5 }) end, "buffer 0 must be a string" },
        { function() vm:syscall_bufs(1, {}, 1, 2, 3, 4, 5, 6, 7) end, "at most 6 arguments" },
        { function() vm:syscall_bufs("read", {}) end, "syscall number must be an integer" },
        { function() vm:syscall_ptr(1, { [0] = "s" }, { { buf_idx = 3, ptr_offset = 0, data_len = 4 } }) end,
            "buf_idx 3 is not one of the buffers" },
        { function() vm:syscall_ptr(1, { [0] = "s" }, { { buf_idx = 0, ptr_offset = 0, data_len = 1, data = "toolong" } }) end,
            "do not fit in data_len 1" },
        { function() vm:ioctl_buf(3, 4, 5) end, "struct must be a string" },
        { function() vm:ioctl_buf(3, 4, "s", { { "x" } }) end, "needs integer ptr_offset and data_len" },
        { function() vm:job_wait({ id = 99 }) end, "no background job 99" },
        { function() vm:wait_until(5) end, "predicate must be a function" },
        { function() vm:dmesg(5) end, "pattern must be a string" },
    }
    for i, c in ipairs(cases) do
        local e = t:assert_raises(c[1])
        t:assert_contains(e, c[2], "case " .. i)
        t:assert_contains(e, "seeds.test.lua:", "case " .. i .. " names the caller")
    end
end)

test("vm:wait_until polls every 0.5 s by default and passes the VM", function(t)
    local vm = provium:vm("waiter", "default")
    local calls, got = 0, nil
    local started = _provium_c.now()
    local v = vm:wait_until(function(x) calls = calls + 1; got = x; return calls == 2 and "ok" end)
    t:assert_eq(v, "ok")
    t:assert_eq(got, vm)
    t:assert(_provium_c.now() - started >= 0.45, "one interval of 0.5 s between the two calls")
    local err = t:assert_raises(function()
        vm:wait_until(function() return false end, { timeout = 0.1, interval = 0.02, desc = "never" })
    end)
    t:assert_contains(err, "wait_until: never not met within 0.1s")
end)

test("CLI: provium test PATH, -p N, -f PATTERN, provium version", function(t)
    local out, code = meta.provium({ "version" })
    t:assert_eq(code, 0, out)
    t:assert(out:match("^provium %S+ %(protocol %d+%)\n$"), out)
    -- `test` first, as the seeds wrote it
    local function run(args)
        local o
        o, code = meta.provium({ "test", "--json", table.unpack(args) })
        return meta.json_lines(o), code, o
    end
    local files
    files, code, out = run({ "-p", "1", "-f", "pass", "lua/cases/seeds.lua", "lua/cases/pass.lua" })
    t:assert_eq(code, 0, out)
    t:assert(files["lua/cases/pass.lua"], "-f pass keeps pass.lua: " .. out)
    t:assert_eq(files["lua/cases/seeds.lua"], nil, "-f pass drops seeds.lua")
    -- -f repeats, like --filter
    files, code = run({ "-f", "pass", "-f", "seeds", "lua/cases/seeds.lua", "lua/cases/pass.lua" })
    t:assert_eq(code, 1)
    t:assert(files["lua/cases/seeds.lua"] and files["lua/cases/pass.lua"], "both files ran")
    meta.assert_refused(t, { { { "test", "-p", "0", "lua/cases/pass.lua" }, "--jobs: expected a positive integer, got `0`" } })
end)
