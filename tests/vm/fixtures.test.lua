-- Persistent fixtures (docs/fixtures.md), in a project of
-- their own so that the cache starts empty.
local meta = require("lib.meta")

local DUMP = meta.tests .. "/lib/events_dump.py"

local function project()
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/fixtures " .. d .. "/helpers")
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\n')
    meta.write(d .. "/helpers/mark.lua", 'return { text = "v1\\n" }\n')
    meta.write(d .. "/fixtures/base.fixture.lua", [[
local mark = require("helpers.mark")
local vm = provium:vm("base", "default"):boot()
vm:write_file("/tmp/marker", mark.text)
vm:run("setsid sh -c 'while :; do sleep 1; done' >/dev/null 2>&1 &"):assert_ok()
return vm:snapshot()
]])
    for _, f in ipairs { "a", "b" } do
        meta.write(("%s/%s.test.lua"):format(d, f), [[
local vm = provium:vm_fixture("fixtures/base")
test("sees the fixture", function(t)
    t:log(vm:read_file("/tmp/marker"))
    t:assert_contains(vm:run("ps").stdout, "while :", "the fixture's process runs")
end)
]])
    end
    return d
end

-- Run the project; the fixture events' kinds counted, and each file's log.
local function run(d, env)
    local out, code = meta.provium({ "--json", "--save-events", "ev.bin", "." }, { cwd = d, env = env })
    local counts = {}
    local p = io.popen("/usr/bin/python3 " .. meta.quote(DUMP) .. " " .. meta.quote(d .. "/ev.bin"))
    for line in p:lines() do
        local k = json.decode(line).kind
        if k:match("^fixture_") then counts[k] = (counts[k] or 0) + 1 end
    end
    p:close()
    local marks = {}
    for line in out:gmatch("[^\n]+") do
        if line:sub(1, 1) == "{" then
            local f = json.decode(line)
            marks[#marks + 1] = f.tests[1] and f.tests[1].log[1] or f.chunk_error
        end
    end
    return counts, marks, code, out
end

test("two files, one build; then only cache hits; an edit rebuilds", function(t)
    local d = project()
    local c, marks, code, out = run(d)
    t:assert_eq(code, 0, out)
    t:assert_eq(c.fixture_build_started, 1)
    t:assert_eq(c.fixture_build_done, 1)
    t:assert_eq(c.fixture_cache_hit, 1, "the other file restored what the first built")
    t:assert_eq(marks[1], "v1\n")
    t:assert_eq(marks[2], "v1\n")
    local function mode(p) return io.popen("stat -c %a " .. meta.quote(p)):read("l") end
    t:assert_eq(mode(d .. "/cache"), "700", "the cache is its owner's alone")
    local snap = io.popen("ls -d " .. meta.quote(d) .. "/cache/*.snap"):read("l")
    t:assert_eq(mode(snap), "700")
    for _, f in ipairs({ "machine", "devices", "pages", "ram" }) do
        t:assert_eq(mode(snap .. "/" .. f), "600", f)
    end
    c, marks, code = run(d)
    t:assert_eq(code, 0)
    t:assert_eq(c.fixture_build_started, nil, "nothing to build the second time")
    t:assert_eq(c.fixture_cache_hit, 2)
    -- a helper the fixture requires is part of its key
    meta.write(d .. "/helpers/mark.lua", 'return { text = "v2\\n" }\n')
    c, marks = run(d)
    t:assert_eq(c.fixture_build_started, 1)
    t:assert_eq(marks[1], "v2\n")
    -- and so is the fixture itself
    meta.write(d .. "/fixtures/base.fixture.lua",
        (io.open(d .. "/fixtures/base.fixture.lua"):read("a"):gsub("mark.text", '"v3\\n"')))
    c, marks = run(d)
    t:assert_eq(c.fixture_build_started, 1)
    t:assert_eq(marks[1], "v3\n")
    local left = io.popen("ls -A " .. meta.quote(d .. "/cache/tmp")):read("a")
    meta.rmdir(d)
    t:assert_eq(left, "", "no build leftovers")
end)

test("ten files from one fixture: one build, nine cache hits", function(t)
    local d = project()
    local src = io.open(d .. "/a.test.lua"):read("a")
    for i = 3, 10 do meta.write(("%s/f%02d.test.lua"):format(d, i), src) end
    local c, marks, code, out = run(d)
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
    t:assert_eq(#marks, 10)
    t:assert_eq(c.fixture_build_started, 1)
    t:assert_eq(c.fixture_cache_hit, 9)
end)

test("the key holds the kernels of the profiles the build booted, no others", function(t)
    local d = project()
    os.remove(d .. "/b.test.lua")
    local c, _, code, out = run(d)
    t:assert_eq(code, 0, out)
    t:assert_eq(c.fixture_build_started, 1)
    -- a profile the fixture never booted: added, nothing to rebuild
    local toml = io.open(d .. "/provium.toml"):read("a")
    meta.write(d .. "/provium.toml", toml .. '[profiles.other]\nkernel = "elsewhere/bzImage"\n')
    c, _, code, out = run(d)
    t:assert_eq(code, 0, out)
    t:assert_eq(c.fixture_build_started, nil, "an unrelated profile changes nothing")
    t:assert_eq(c.fixture_cache_hit, 1)
    -- the kernel of the profile it booted (default): another path, then a new mtime
    local p = io.popen(meta.quote(meta.bin) .. " kernel path")
    local kernel, modules = p:read("l"), p:read("l")
    p:close()
    os.execute(("cp %s %s/vmlinuz"):format(meta.quote(kernel), meta.quote(d)))
    local env = { PROVIUM_KERNEL = d .. "/vmlinuz", PROVIUM_MODULES = modules }
    c, _, code, out = run(d, env)
    t:assert_eq(code, 0, out)
    t:assert_eq(c.fixture_build_started, 1, "another kernel path rebuilds")
    c = run(d, env)
    t:assert_eq(c.fixture_build_started, nil)
    os.execute("touch -d '1 hour ago' " .. meta.quote(d .. "/vmlinuz"))
    c, _, code, out = run(d, env)
    t:assert_eq(code, 0, out)
    t:assert_eq(c.fixture_build_started, 1, "a changed kernel rebuilds")
    meta.rmdir(d)
end)

test("a fixture that is missing, broken or returns no snapshot says so", function(t)
    local d = project()
    meta.write(d .. "/a.test.lua", 'local vm = provium:vm_fixture("fixtures/nope")\n')
    meta.write(d .. "/b.test.lua", 'local vm = provium:vm_fixture("fixtures/bad")\n')
    meta.write(d .. "/fixtures/bad.fixture.lua", 'local vm = provium:vm("x", "default")\nreturn 42\n')
    local files, code = meta.json_run({ "." }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 1)
    t:assert_contains(files["a.test.lua"].chunk_error, "fixture `fixtures/nope` not found in any test root")
    local e = files["b.test.lua"].chunk_error
    t:assert_contains(e, "fixture `fixtures/bad` failed to build")
    t:assert_contains(e, "fixtures/bad.fixture.lua: a fixture must end with `return vm:snapshot()` or `return provium:snapshot()` (it returned number)")
end)

test("a damaged entry is dropped with a warning and built again", function(t)
    local d = project()
    os.remove(d .. "/b.test.lua")
    local c, marks, code = run(d)
    t:assert_eq(c.fixture_build_started, 1)
    -- cut the cached snapshot's device state in half
    local name = io.popen("ls " .. meta.quote(d .. "/cache") .. " | grep '\\.snap$'"):read("l")
    local path = d .. "/cache/" .. name .. "/devices"
    local f = io.open(path, "rb")
    local data = f:read("a")
    f:close()
    f = io.open(path, "wb")
    f:write(data:sub(1, #data // 2))
    f:close()
    local out
    c, marks, code, out = run(d)
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "provium: fixture `fixtures/base`: the cached entry")
    t:assert_contains(out, "is damaged")
    t:assert_eq(c.fixture_build_started, 1, "built again")
    t:assert_eq(marks[1], "v1\n")
    meta.rmdir(d)
end)

test("the cache is kept within cache_max_size, least recently used first", function(t)
    local d = project()
    os.remove(d .. "/b.test.lua")
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\ncache_max_size = "1M"\n')
    local c = run(d)
    t:assert_eq(c.fixture_build_started, 1)
    -- at the next start-up the entry (tens of MiB) does not fit in 1 MiB: evicted, rebuilt
    c = run(d)
    t:assert_eq(c.fixture_build_started, 1)
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\n')
    c = run(d)
    meta.rmdir(d)
    t:assert_eq(c.fixture_build_started, nil, "with room, it stays")
end)

test("provium fixture: stale, build, list, rebuild, clean", function(t)
    local d = project()
    local function fx(...)
        local out, code = meta.provium({ "fixture", ... }, { cwd = d })
        t:assert_eq(code, 0, out)
        return out
    end
    local out = fx("stale")
    t:assert_contains(out, "  fixtures/base.fixture.lua\n1 stale fixture(s)")
    t:assert_eq(out:find(d, 1, true), nil, "paths shown relative to the project")
    t:assert_contains(fx("build", "fixtures/base"), "built: fixtures/base\n")
    t:assert_contains(fx("build", "fixtures/base"), "already built: fixtures/base\n")
    t:assert_contains(fx("stale"), "0 stale fixture(s)")
    out = fx("list")
    -- the fixture, and the boot its build resumed (docs/boot-cache.md)
    t:assert(out:match("MiB  vm   %x+\n"), out)
    t:assert(out:match("MiB  boot %x+\n"), out)
    t:assert(out:match("\n2 entries, [%d.]+MiB\n"), out)
    t:assert_contains(fx("rebuild", "fixtures/base"), "built: fixtures/base\n")
    fx("clean")
    t:assert_contains(fx("list"), "0 entries, 0.00MiB")
    out = meta.provium({ "fixture", "frobnicate" }, { cwd = d })
    meta.rmdir(d)
    t:assert_contains(out, "usage: provium fixture list | clean | stale | build NAME | rebuild NAME")
end)

test("two provium processes racing on one key build it once", function(t)
    local d = project()
    os.remove(d .. "/b.test.lua")
    local cmd = "cd %s && (%s --save-events ev1.bin a.test.lua > out1 2>&1 & " ..
        "%s --save-events ev2.bin a.test.lua > out2 2>&1; wait)"
    os.execute(cmd:format(meta.quote(d), meta.quote(meta.bin), meta.quote(meta.bin)))
    local builds, hits = 0, 0
    for _, ev in ipairs { "ev1.bin", "ev2.bin" } do
        local p = io.popen("/usr/bin/python3 " .. meta.quote(DUMP) .. " " .. meta.quote(d .. "/" .. ev))
        for line in p:lines() do
            local k = json.decode(line).kind
            if k == "fixture_build_started" then builds = builds + 1 end
            if k == "fixture_cache_hit" then hits = hits + 1 end
        end
        p:close()
    end
    local out = io.open(d .. "/out1"):read("a") .. io.open(d .. "/out2"):read("a")
    meta.rmdir(d)
    t:assert_eq(builds, 1, ("builds %d, hits %d:\n%s"):format(builds, hits, out))
    t:assert_eq(hits, 1)
    t:assert_eq(select(2, out:gsub("PASS a%.test%.lua", "")), 2, out)
end)

test("kill -9 of provium mid-build leaves no entry; the next run builds", function(t)
    local d = project()
    os.remove(d .. "/b.test.lua")
    meta.write(d .. "/fixtures/base.fixture.lua", [[
local vm = provium:vm("base", "default"):boot()
vm:write_file("/tmp/marker", "v1\n")
vm:run("setsid sh -c 'while :; do sleep 1; done' >/dev/null 2>&1 &"):assert_ok()
if os.getenv("SLOW_BUILD") then _provium_c.sleep(60) end
return vm:snapshot()
]])
    os.execute(("cd %s && SLOW_BUILD=1 %s a.test.lua > out 2>&1 & echo $! > %s/pid")
        :format(meta.quote(d), meta.quote(meta.bin), meta.quote(d)))
    -- the build has started once its work directory exists
    wait_until(function()
        local p = io.popen("ls " .. meta.quote(d .. "/cache/tmp") .. " 2>/dev/null")
        local s = p:read("a")
        p:close()
        return s ~= ""
    end, { timeout = 60, desc = "the build under way" })
    _provium_c.sleep(4) -- its VM booted
    os.execute("kill -9 $(cat " .. meta.quote(d .. "/pid") .. ")")
    _provium_c.sleep(1)
    local entries = io.popen("ls " .. meta.quote(d .. "/cache") .. " | grep -c '\\.snap$'"):read("l")
    t:assert_eq(entries, "0", "no entry")
    local c, marks, code, out = run(d)
    local left = io.popen("ls -A " .. meta.quote(d .. "/cache/tmp")):read("a")
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
    t:assert_eq(c.fixture_build_started, 1, "built by the next run")
    t:assert_eq(marks[1], "v1\n")
    t:assert_eq(left, "", "the killed build's work directory is gone")
end)

test("lab fixtures: every VM of a lab, restored into a sub-lab", function(t)
    local d = project()
    os.remove(d .. "/b.test.lua")
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\n')
    meta.write(d .. "/fixtures/pair.fixture.lua", [[
local a = provium:vm("a", "default", { memory = "256M" }):boot()
local b = provium:vm("b", "default", { memory = "256M" }):boot()
a:write_file("/tmp/who", "a\n")
b:write_file("/tmp/who", "b\n")
return provium:snapshot()
]])
    meta.write(d .. "/a.test.lua", [[
provium:claim { memory = "1200M", cpus = 1 }
local pair = provium:lab_fixture("fixtures/pair")
test("both machines", function(t)
    t:log(pair.a:read_file("/tmp/who") .. pair.b:read_file("/tmp/who"))
end)
]])
    local c, marks, code, out = run(d)
    t:assert_eq(code, 0, out)
    t:assert_eq(c.fixture_build_started, 1)
    t:assert_eq(marks[1], "a\nb\n")
    c, marks = run(d)
    t:assert_eq(c.fixture_cache_hit, 1)
    t:assert_eq(marks[1], "a\nb\n")
    local entry = io.popen("ls " .. meta.quote(d .. "/cache") .. " | grep '\\.lab$'"):read("l")
    meta.rmdir(d)
    t:assert(entry and #entry == 68, "cached as <key>.lab: " .. tostring(entry))
end)
