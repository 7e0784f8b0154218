-- Labs and fixtures (docs/writing-tests.md, docs/running.md,
-- docs/fixtures.md): claims, run-time depends_on_file, t:log in the
-- events, the fixture references of file_discovered.
local meta = require("lib.meta")
local cases = "lua/cases/"

-- The events of a run of args, decoded (an independent msgpack decoder).
local function events(args)
    local d = meta.tmpdir()
    local a = { "--save-events", d .. "/ev.bin" }
    for _, x in ipairs(args) do a[#a + 1] = x end
    local out, code = meta.provium(a)
    local p = io.popen("/usr/bin/python3 " .. meta.quote(meta.tests .. "/lib/events_dump.py")
        .. " " .. meta.quote(d .. "/ev.bin"))
    local list = {}
    for line in p:lines() do list[#list + 1] = json.decode(line) end
    p:close()
    return list, code, out
end

local function first(list, kind)
    for _, e in ipairs(list) do
        if e.kind == kind then return e.payload end
    end
end

test("claims: one per scope, cpus omitted is 0", function(t)
    local list, code, out = events({ cases .. "claims.lua" })
    t:assert_eq(code, 0, out)
    local found = first(list, "file_discovered")
    t:assert(found and found.declared_claim, "the claim is declared: " .. out)
    t:assert_eq(found.declared_claim.cpus, 0, "omitted cpus is 0")
    t:assert_eq(found.declared_claim.memory_bytes, 600 * 1024 * 1024)
    local acquired = first(list, "claim_acquired")
    t:assert_eq(acquired.amount.cpus, 0)
end)

test("t:log lines reach test_passed and test_failed; fixture_refs from the source", function(t)
    local list, code, out = events({ cases .. "logs.lua" })
    t:assert_eq(code, 1, out)
    local by = {}
    for _, e in ipairs(list) do
        if e.kind == "test_passed" or e.kind == "test_failed" then by[e.payload.name] = e end
    end
    t:assert_eq(by["passes with logs"].kind, "test_passed")
    t:assert_eq(json.encode(by["passes with logs"].payload.log), '["one","2"]')
    t:assert_eq(by["fails with a log"].kind, "test_failed")
    t:assert_eq(json.encode(by["fails with a log"].payload.log), '["before"]')
    t:assert_eq(#by["no log"].payload.log, 0)
    t:assert_eq(by["depends_on_file runs"].kind, "test_passed", "depends_on_file at run time")
    local found = first(list, "file_discovered")
    t:assert_eq(json.encode(found.fixture_refs), '["fixtures/one","fixtures/pair"]')
end)

test("lab:include: a VM or a lab made elsewhere becomes a member", function(t)
    local sub = provium:lab("group")
    local a = provium:vm("inc_a", "default")
    local b = provium:vm("inc_b", "default")
    local other = provium:lab("other")
    sub:include(a)
    sub:include({ b, other })
    sub:include(a) -- again: nothing changes
    t:assert_eq(sub.inc_a, a)
    t:assert_eq(sub:vm("inc_b"), b)
    t:assert_eq(sub.other, other)
    t:assert_eq(table.concat(sub:vm_names(), ","), "inc_a,inc_b")
    t:assert_eq(table.concat(sub:sub_lab_names(), ","), "other")
    -- still closed by the test's lab, which made it
    local function closes(lab, x)
        for _, r in ipairs(rawget(lab, "_resources")) do
            if r.obj == x then return true end
        end
        return false
    end
    t:assert(closes(provium, a) and not closes(sub, a))
    -- moved: the test's lab no longer lists it, the group does, and closes it
    provium:remove(a)
    t:assert_eq(provium.inc_a, nil)
    t:assert_eq(sub.inc_a, a)
    t:assert(closes(sub, a) and not closes(provium, a), "the group closes it now")
    -- the naming rules of lab:vm
    local clash = provium:lab("clash")
    clash:vm("inc_a", "default")
    local err = t:assert_raises(function() clash:include(a) end)
    t:assert_contains(err, "provium:include: `inc_a` already exists in lab `clash`")
    t:assert_contains(err, "labs.test.lua:", "named at the caller")
    t:assert_contains(t:assert_raises(function() sub:include(sub) end), "a lab cannot include itself")
    t:assert_contains(t:assert_raises(function() sub:include("inc_a") end),
        "expected a VM, a bridge or a lab (or an array of them), got string")
    t:assert_contains(t:assert_raises(function() sub.include(a) end), "call it with a colon")
end)

local shared = provium:vm("shared_for_include", "default")
test("lab:include from a test: a file-scope name would be shadowed", function(t)
    local err = t:assert_raises(function() provium:include(shared) end)
    t:assert_contains(err, "name `shared_for_include` already declared at parent scope")
end)
