-- The event stream (docs/events.md), decoded by Debian's
-- python3-msgpack (tests/lib/events_dump.py), and its guarantees.
local meta = require("lib.meta")

local DUMP = meta.tests .. "/lib/events_dump.py"

local function decode(lines)
    local evs = {}
    for line in lines:gmatch("[^\n]+") do evs[#evs + 1] = json.decode(line) end
    return evs
end

local function dump(path)
    local p = io.popen("/usr/bin/python3 " .. meta.quote(DUMP) .. " " .. meta.quote(path))
    local out = p:read("a")
    p:close()
    return decode(out)
end

local function of(evs, kind)
    local out = {}
    for _, e in ipairs(evs) do
        if e.kind == kind then out[#out + 1] = e end
    end
    return out
end

local function suite(d)
    meta.write(d .. "/vm.test.lua", [[
local vm = provium:vm("ev", "default"):boot()
test("boots", { tags = { "vm" }, area = "boot" }, function(t)
    t:assert_eq(vm:run("echo hi").stdout, "hi\n")
end)
test("fails", function(t) t:fail("on purpose") end)
test("skipped", { skip = "not now" }, function() end)
]])
    meta.write(d .. "/a.test.lua", 'test("sleeps", function() _provium_c.sleep(1) end)\n')
    meta.write(d .. "/b.test.lua", 'test("sleeps", function() _provium_c.sleep(1) end)\n')
end

test("--save-events: every kind's guarantees hold", function(t)
    local d = meta.tmpdir()
    suite(d)
    -- beside the other VM files of make check the CPU is busy: keep the gating out
    local out, code = meta.provium({ "--save-events", "ev.bin", "." },
        { cwd = d, env = { PROVIUM_PSI_THRESHOLD = "off" } })
    t:assert_eq(code, 1, out)
    local evs = dump(d .. "/ev.bin")
    meta.rmdir(d)
    t:assert(#evs > 10, "events were written")
    -- file_discovered for every file before any dispatch
    local first_dispatch
    for i, e in ipairs(evs) do
        t:assert(type(e.ts) == "number" and e.payload, "an envelope {ts, kind, payload}")
        if e.kind == "file_dispatched" and not first_dispatch then first_dispatch = i end
        if e.kind == "file_discovered" then
            t:assert(not first_dispatch, "discovered before any dispatch")
        end
    end
    t:assert_eq(#of(evs, "file_discovered"), 3)
    -- per file: at most one dispatch, exactly one completion, claims paired
    local per = {}
    for _, e in ipairs(evs) do
        local p = e.payload.path
        if p then
            per[p] = per[p] or {}
            per[p][e.kind] = (per[p][e.kind] or 0) + 1
        end
    end
    for path, k in pairs(per) do
        t:assert_eq(k.file_dispatched, 1, path)
        t:assert_eq(k.file_completed, 1, path)
        t:assert_eq(k.claim_acquired, k.claim_released, path)
    end
    -- per test: test_started, then exactly one outcome
    local started, ended = {}, {}
    for _, e in ipairs(evs) do
        local key = (e.payload.path or "") .. "/" .. (e.payload.name or "")
        if e.kind == "test_started" then
            t:assert(not started[key], "started once: " .. key)
            started[key] = true
            t:assert(e.payload.meta, "meta is always there")
        elseif e.kind:match("^test_") then
            t:assert(started[key] and not ended[key], "one outcome after the start: " .. key)
            ended[key] = e
        end
    end
    t:assert_eq(ended["vm.test.lua/boots"].kind, "test_passed")
    t:assert_eq(ended["vm.test.lua/boots"].payload.meta.area, "boot")
    t:assert_eq(ended["vm.test.lua/boots"].payload.meta.tags[1], "vm")
    local f = ended["vm.test.lua/fails"]
    t:assert_eq(f.kind, "test_failed")
    t:assert_contains(f.payload.reason, "on purpose")
    t:assert_contains(f.payload.console_excerpt, "== vm ev (booted) ==")
    t:assert_eq(ended["vm.test.lua/skipped"].payload.reason, "skipped: not now")
    -- the VM came and went
    local sp, sd = of(evs, "vm_spawned"), of(evs, "vm_shutdown")
    t:assert_eq(#sp, 1)
    t:assert_eq(sp[1].payload.vm_name, "ev")
    t:assert_eq(sp[1].payload.memory_bytes, 512 * 1024 * 1024)
    t:assert_eq(#sd, 1)
    t:assert(sd[1].payload.duration_ns > 0, "an uptime")
    t:assert_eq(of(evs, "file_completed")[1].payload.status ~= nil, true)
    t:assert(#of(evs, "pool_state") >= 1, "pool_state")
    -- a and b ran side by side: each started before the other ended
    local a0, a1, b0, b1
    for _, e in ipairs(evs) do
        local p = e.payload.path
        if p == "a.test.lua" and e.kind == "test_started" then a0 = e.ts end
        if p == "a.test.lua" and e.kind == "test_passed" then a1 = e.ts end
        if p == "b.test.lua" and e.kind == "test_started" then b0 = e.ts end
        if p == "b.test.lua" and e.kind == "test_passed" then b1 = e.ts end
    end
    t:assert(a0 < b1 and b0 < a1, "a and b overlap")
end)

test("a file that does not fit waits, with file_blocked", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/a.test.lua", 'test("x", function() _provium_c.sleep(0.5) end)\n')
    meta.write(d .. "/b.test.lua", 'test("x", function() end)\n')
    -- stdout holds only frames (the human lines go to stderr)
    local p = io.popen(("cd %s && %s --mem 700M --events-stdout . 2>/dev/null | /usr/bin/python3 %s -")
        :format(meta.quote(d), meta.quote(meta.bin), meta.quote(DUMP)))
    local evs = decode(p:read("a"))
    p:close()
    meta.rmdir(d)
    local blocked = of(evs, "file_blocked")
    t:assert_eq(#blocked, 1)
    t:assert_eq(blocked[1].payload.path, "b.test.lua")
    t:assert_eq(blocked[1].payload.reason, "pool_full")
    t:assert_eq(blocked[1].payload.waiting_for.memory_bytes, (576 + 50) * 1024 * 1024)
end)

test("--events-socket fans the stream out to a client", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/a.test.lua", 'test("x", function() _provium_c.sleep(2) end)\n')
    local client = io.popen(("/usr/bin/python3 %s --socket %s/ev.sock"):format(meta.quote(DUMP),
        meta.quote(d)))
    local out, code = meta.provium({ "--events-socket", "ev.sock", "." }, { cwd = d })
    local evs = decode(client:read("a"))
    client:close()
    local gone = io.open(d .. "/ev.sock") == nil
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
    t:assert_eq(#of(evs, "test_passed"), 1)
    t:assert_eq(#of(evs, "file_completed"), 1)
    t:assert(gone, "the socket is removed at the end")
end)

test("stdout has one owner", function(t)
    meta.assert_refused(t, { { { "--json", "--events-stdout" }, "pick one" } })
end)
