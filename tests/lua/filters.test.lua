-- Which files and tests run (docs/cli.md): --filter,
-- --rerun-failed, --since, --shard, and the per-test tag filters.
local meta = require("lib.meta")

local function paths(files)
    local out = {}
    for p in pairs(files) do out[#out + 1] = p end
    table.sort(out)
    return table.concat(out, " ")
end

test("--filter keeps the files whose path contains it; a|b is either", function(t)
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/sub")
    for _, f in ipairs { "a", "b", "sub/c" } do
        meta.write(("%s/%s.test.lua"):format(d, f), 'test("x", function() end)\n')
    end
    local files, code, out = meta.json_run({ "--filter", "sub", "." }, { cwd = d })
    t:assert_eq(code, 0)
    t:assert_eq(paths(files), "sub/c.test.lua")
    t:assert_contains(out, "provium: 1 of 3 file(s) selected (--filter)")
    files = meta.json_run({ "--filter", "a.test|c.test", "." }, { cwd = d })
    t:assert_eq(paths(files), "a.test.lua sub/c.test.lua")
    files = meta.json_run({ "--filter", "a.", "--filter", "b.", "." }, { cwd = d })
    t:assert_eq(paths(files), "a.test.lua b.test.lua")
    meta.rmdir(d)
end)

test("tag filters skip tests with the filter as the reason", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/t.test.lua", [[
test("net", { tags = { "net", "fast" }, area = "tcp" }, function() end)
test("fs", { tags = "fs", area = { "vfs", "ext4" } }, function() end)
test("plain", function() end)
]])
    local function statuses(args)
        local a = { "t.test.lua" }
        for _, x in ipairs(args) do a[#a + 1] = x end
        local files, code = meta.json_run(a, { cwd = d })
        t:assert_eq(code, 0)
        return meta.by_name(files["t.test.lua"])
    end
    local s = statuses { "--tag", "net", "--tag", "fs" }
    t:assert_eq(s.net.status, "passed")
    t:assert_eq(s.fs.status, "passed")
    t:assert_eq(s.plain.status, "skipped")
    t:assert_eq(s.plain.message, "filtered: not tagged net or fs (--tag)")
    s = statuses { "--tag", "net", "--no-tag", "fast" }
    t:assert_eq(s.net.message, "filtered: tagged `fast` (--no-tag fast)")
    s = statuses { "--tag-meta", "area=ext4" }
    t:assert_eq(s.fs.status, "passed")
    t:assert_eq(s.net.message, "filtered: meta.area is not ext4 (--tag-meta)")
    s = statuses { "--no-tag-meta", "area=tcp" }
    t:assert_eq(s.net.message, "filtered: meta.area has `tcp` (--no-tag-meta area=tcp)")
    t:assert_eq(s.plain.status, "passed")
    meta.rmdir(d)
end)

test("--rerun-failed runs what failed last time, until it passes", function(t)
    local d = meta.tmpdir()
    local env = { PROVIUM_RERUN_STATE = d .. "/state/rerun.json" }
    meta.write(d .. "/ok.test.lua", 'test("x", function() end)\n')
    meta.write(d .. "/bad.test.lua", 'test("x", function(t) t:fail("no") end)\n')
    local files, code, out = meta.json_run({ "--rerun-failed", "." }, { cwd = d, env = env })
    t:assert_eq(code, 0)
    t:assert_eq(paths(files), "")
    t:assert_contains(out, "--rerun-failed: no failures recorded")
    files, code = meta.json_run({ "." }, { cwd = d, env = env })
    t:assert_eq(code, 1)
    files, code = meta.json_run({ "--rerun-failed", "." }, { cwd = d, env = env })
    t:assert_eq(code, 1)
    t:assert_eq(paths(files), "bad.test.lua")
    meta.write(d .. "/bad.test.lua", 'test("x", function() end)\n')
    files, code = meta.json_run({ "--rerun-failed", "." }, { cwd = d, env = env })
    t:assert_eq(code, 0)
    t:assert_eq(paths(files), "bad.test.lua")
    files = meta.json_run({ "--rerun-failed", "." }, { cwd = d, env = env })
    meta.rmdir(d)
    t:assert_eq(paths(files), "")
end)

test("--since keeps the files changed after a reference file", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/old.test.lua", 'test("x", function() end)\n')
    meta.write(d .. "/ref", "")
    _provium_c.sleep(0.05)
    meta.write(d .. "/new.test.lua", 'test("x", function() end)\n')
    local files = meta.json_run({ "--since", "ref", "." }, { cwd = d })
    t:assert_eq(paths(files), "new.test.lua")
    local out, code = meta.provium({ "--since", "nope", "." }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 2)
    t:assert_contains(out, "--since nope: No such file or directory")
end)

test("--shard K/N: the shards cover every file once, and stay put as files are added", function(t)
    local d = meta.tmpdir()
    for i = 1, 12 do
        meta.write(("%s/f%02d.test.lua"):format(d, i), 'test("x", function() end)\n')
    end
    local seen, shard_of = {}, {}
    for k = 1, 3 do
        local files = meta.json_run({ "--shard", k .. "/3", "." }, { cwd = d })
        for p in pairs(files) do
            t:assert(not seen[p], p .. " in one shard only")
            seen[p], shard_of[p] = true, k
        end
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    t:assert_eq(n, 12)
    meta.write(d .. "/zz_new.test.lua", 'test("x", function() end)\n')
    for k = 1, 3 do
        for p in pairs(meta.json_run({ "--shard", k .. "/3", "." }, { cwd = d })) do
            if shard_of[p] then t:assert_eq(shard_of[p], k, p .. " stayed in its shard") end
        end
    end
    meta.rmdir(d)
end)

test("bad filter values exit 2 and say why", function(t)
    meta.assert_refused(t, {
        { { "--shard", "0/3" }, "--shard: expected K/N with 1 <= K <= N" },
        { { "--shard", "4/3" }, "--shard: expected K/N" },
        { { "--tag-meta", "area" }, "--tag-meta: expected KEY=VALUE, got `area`" },
        { { "--tag", "" }, "--tag: expected a tag name" },
    })
end)

test("a rerun state that is not what provium wrote does not crash the run", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/state.json", '{"failed": [1, null, "x"]}\n')
    meta.write(d .. "/a.test.lua", 'test("x", function() end)\n')
    local out, code = meta.provium({ "." }, { cwd = d, env = { PROVIUM_RERUN_STATE = d .. "/state.json" } })
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "1 file(s); 1 passed, 0 failed, 0 skipped")
    meta.write(d .. "/state.json", "not json at all")
    out, code = meta.provium({ "--rerun-failed", "." }, { cwd = d, env = { PROVIUM_RERUN_STATE = d .. "/state.json" } })
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "--rerun-failed: no failures recorded")
end)
