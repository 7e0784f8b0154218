-- `provium fixture stale | build | rebuild` with a lab fixture (its entry is
-- <key>.lab/, docs/fixtures.md), in a project of its own so that the cache
-- starts empty. One VM in the lab keeps it short.
local meta = require("lib.meta")

test("stale, build and rebuild know a lab fixture's entry", function(t)
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. d .. "/fixtures")
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\n')
    meta.write(d .. "/fixtures/solo.fixture.lua", [[
-- not a VM fixture: this comment's vm:snapshot() does not count
local a = provium:vm("a", "default", { memory = "256M" }):boot()
a:write_file("/tmp/who", "solo\n")
return provium:snapshot()
]])
    local function fx(...)
        local out, code = meta.provium({ "fixture", ... }, { cwd = d })
        t:assert_eq(code, 0, out)
        return out
    end
    t:assert_contains(fx("stale"), "  fixtures/solo.fixture.lua\n1 stale fixture(s)")
    local out = fx("build", "fixtures/solo")
    t:assert_contains(out, "built: fixtures/solo\n")
    t:assert(out:match("%x+%.lab\n"), "the entry is a lab's: " .. out)
    t:assert_contains(fx("stale"), "0 stale fixture(s)")
    t:assert_contains(fx("build", "fixtures/solo"), "already built: fixtures/solo\n")
    t:assert_contains(fx("rebuild", "fixtures/solo"), "built: fixtures/solo\n")
    local n = io.popen("ls " .. meta.quote(d .. "/cache") .. " | grep -c '\\.lab$'"):read("l")
    t:assert_eq(n, "1", "the rebuild replaced the entry")
    -- a test file restores what the command built
    meta.write(d .. "/a.test.lua", [[
local solo = provium.lab_fixture("fixtures/solo")
test("restored", function(t) t:assert_eq(solo.a:read_file("/tmp/who"), "solo\n") end)
]])
    local files, code
    files, code, out = meta.json_run({ "a.test.lua" }, { cwd = d })
    t:assert_eq(code, 0, out)
    t:assert_eq(files["a.test.lua"].tests[1].status, "passed")
end)
