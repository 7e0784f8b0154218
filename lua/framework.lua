-- The test framework (docs/writing-tests.md): test, todo, wait_until, the `t`
-- context, and the per-file runner that C calls.
local C = _provium_c
local P = _provium

local tests, by_name = {}, {}
local todo_reason
local current -- the running test's t, for the global asserts and todo

function test(name, meta, fn)
    if type(name) ~= "string" or name == "" then
        error("test: name must be a non-empty string, got " .. type(name), 2)
    end
    if fn == nil then meta, fn = nil, meta end
    if meta ~= nil and type(meta) ~= "table" then
        error("test: meta must be a table, got " .. type(meta), 2)
    end
    if type(fn) ~= "function" then
        error(("test `%s`: body must be a function, got %s"):format(name, type(fn)), 2)
    end
    if by_name[name] then
        error(("test: duplicate name `%s` in this file"):format(name), 2)
    end
    local info = debug.getinfo(2, "Sl")
    local t = { name = name, meta = meta or {}, fn = fn, line = info and info.currentline }
    tests[#tests + 1] = t
    by_name[name] = t
end

-- At the top level todo skips every test of the file; inside a test body
-- (the seeds' form, docs/legacy.md) it skips that test and ends it.
function todo(reason)
    local why = reason ~= nil and tostring(reason) or "todo"
    if current then current:skip(why) end
    todo_reason = why
end

function wait_until(pred, opts)
    if type(pred) ~= "function" then
        error("wait_until: predicate must be a function, got " .. type(pred), 2)
    end
    opts = opts or {}
    local timeout = P.duration(opts.timeout or 10, "wait_until: timeout", 2)
    local interval = P.duration(opts.interval or 0.1, "wait_until: interval", 2)
    local desc = opts.desc or "condition"
    local deadline = C.now() + timeout
    while true do
        local v = pred()
        if v then return v end
        if C.now() >= deadline then
            error(("wait_until: %s not met within %gs"):format(desc, timeout), 2)
        end
        C.sleep(interval)
    end
end

-- The hang watchdog's timeout (docs/debugging.md#hangs): the file's
-- provium.hang_timeout from the moment it is set, a test's meta.hang_timeout
-- while that test runs. `what` names the setting in errors.
local file_hang
local lab_newindex = P.Lab.__newindex
P.Lab.__newindex = function(self, k, v)
    if k == "hang_timeout" and self == P.root then
        file_hang = v ~= nil and P.duration(v, "provium.hang_timeout", 2) or nil
        C.set_hang_timeout(file_hang)
    end
    lab_newindex(self, k, v)
end

-- The t context.
local T = {}
T.__index = T
local SKIP = setmetatable({}, { __tostring = function() return "skip" end })

local function fail(t, msg, level)
    rawset(t, "_failed", true)
    error(msg, level + 1)
end

local escapes = { ["\n"] = "\\n", ["\t"] = "\\t", ["\r"] = "\\r", ['"'] = '\\"', ["\\"] = "\\\\" }
local function show(v)
    if type(v) ~= "string" then return tostring(v) end
    if #v > 2000 then v = v:sub(1, 2000) .. "..." end
    return '"' .. v:gsub('[%c"\\]', function(c)
        return escapes[c] or ("\\x%02x"):format(c:byte())
    end) .. '"'
end

function T:assert(cond, msg)
    if not cond then fail(self, msg or "assertion failed", 2) end
    return cond
end

function T:assert_eq(a, b, msg)
    if a ~= b then fail(self, ("%s: %s ~= %s"):format(msg or "assert_eq", show(a), show(b)), 2) end
end

function T:assert_neq(a, b, msg)
    if a == b then fail(self, ("%s: %s == %s"):format(msg or "assert_neq", show(a), show(b)), 2) end
end

function T:assert_contains(h, n, msg)
    if type(h) ~= "string" or type(n) ~= "string" then
        fail(self, ("assert_contains: both arguments must be strings (got %s, %s)"):format(type(h), type(n)), 2)
    end
    if not h:find(n, 1, true) then
        fail(self, ("%s: %s does not contain %s"):format(msg or "assert_contains", show(h), show(n)), 2)
    end
end

function T:assert_raises(fn, msg)
    local saved = rawget(self, "_failed")
    local ok, err = pcall(fn)
    if ok then fail(self, (msg or "assert_raises") .. ": expected to raise", 2) end
    rawset(self, "_failed", saved)
    return err
end

function T:fail(msg)
    fail(self, msg or "explicit failure (t:fail)", 2)
end

function T:skip(reason)
    rawset(self, "_skip", reason ~= nil and tostring(reason) or "skipped")
    error(SKIP, 0)
end

-- The seeds' global assertions (docs/legacy.md). assert_eq and
-- assert_contains fail the running test like t's (even when a pcall
-- catches them). assert stays the builtin (a pcall that catches it hides
-- it, as before), with the caller's file and line added to a string
-- message.
local function global_fail(msg)
    if current then rawset(current, "_failed", true) end
    error(msg, 3)
end

function assert(cond, msg, ...)
    if not cond then
        if msg == nil then error("assertion failed!", 2) end
        if type(msg) == "string" or type(msg) == "number" then error(tostring(msg), 2) end
        error(msg, 0)
    end
    return cond, msg, ...
end

-- assert_eq(expected, actual, msg?): the expected value first
function assert_eq(expected, actual, msg)
    if expected ~= actual then
        global_fail(("%s: expected %s, got %s"):format(msg or "assert_eq", show(expected), show(actual)))
    end
end

function assert_contains(h, n, msg)
    if type(h) ~= "string" or type(n) ~= "string" then
        global_fail(("assert_contains: both arguments must be strings (got %s, %s)"):format(type(h), type(n)))
    end
    if not h:find(n, 1, true) then
        global_fail(("%s: %s does not contain %s"):format(msg or "assert_contains", show(h), show(n)))
    end
end

function T:log(msg)
    local log = rawget(self, "_log")
    log[#log + 1] = tostring(msg)
end

local function truthy_flag(v)
    return v == true or (math.type(v) == "integer" and v ~= 0)
end

-- The per-test filters of the command line (--tag, --no-tag, --tag-meta,
-- --no-tag-meta), as the runner hands them over.
local test_filter = json.decode(os.getenv("PROVIUM_TEST_FILTER") or "{}")

local function tags_of(meta)
    local t = meta.tags
    if type(t) == "string" then return { [t] = true } end
    local set = {}
    if type(t) == "table" then
        for _, v in ipairs(t) do
            if type(v) == "string" then set[v] = true end
        end
    end
    return set
end

-- meta[key] is value, or an array of strings holding it
local function meta_has(meta, key, value)
    local v = meta[key]
    if type(v) == "string" then return v == value end
    if P.is_array(v) then
        for _, x in ipairs(v) do
            if x == value then return true end
        end
    end
    return false
end

local function meta_any(meta, key, values)
    for _, value in ipairs(values) do
        if meta_has(meta, key, value) then return value end
    end
end

local function filter_reason(meta)
    local f, tags = test_filter, tags_of(meta)
    for _, tag in ipairs(f.no_tag or {}) do
        if tags[tag] then return ("filtered: tagged `%s` (--no-tag %s)"):format(tag, tag) end
    end
    if f.tag then
        local any = false
        for _, tag in ipairs(f.tag) do any = any or tags[tag] end
        if not any then
            return ("filtered: not tagged %s (--tag)"):format(table.concat(f.tag, " or "))
        end
    end
    for _, key in ipairs(P.sorted_keys(f.no_tag_meta or {})) do
        local v = meta_any(meta, key, f.no_tag_meta[key])
        if v then return ("filtered: meta.%s has `%s` (--no-tag-meta %s=%s)"):format(key, v, key, v) end
    end
    for _, key in ipairs(P.sorted_keys(f.tag_meta or {})) do
        local values = f.tag_meta[key]
        if not meta_any(meta, key, values) then
            return ("filtered: meta.%s is not %s (--tag-meta)"):format(key, table.concat(values, " or "))
        end
    end
end

-- Why a test does not run, in the order docs/cli.md gives.
local function skip_reason(meta)
    local s = meta.skip
    if type(s) == "string" then return "skipped: " .. s end
    if truthy_flag(s) then return "skipped (meta.skip)" end
    if truthy_flag(meta.slow) and os.getenv("PROVIUM_INCLUDE_SLOW") ~= "1" then
        return "filtered: slow tests skipped (pass --include-slow)"
    end
    return filter_reason(meta)
end

local function excerpt(scope)
    local parts = {}
    local vms = P.root:_all_vms(scope and scope:_all_vms() or nil)
    for _, vm in ipairs(vms) do
        local st = vm:state()
        if st ~= "created" then
            local log = vm:console_log()
            if #log > 4096 then log = log:sub(-4096) end
            parts[#parts + 1] = ("== vm %s (%s) ==\n%s"):format(vm:name(), st, log)
        end
    end
    return table.concat(parts, "\n")
end

-- Whether err, an error that escaped, is a VM's infrastructure error (its
-- boot failed twice for the machine's sake: docs/debugging.md#infrastructure-errors).
local function infra(err, vms)
    if type(err) ~= "string" then return false end
    for _, vm in ipairs(vms) do
        local msg = C.infra_error(vm)
        if msg and err:find(msg, 1, true) then return true end
    end
    return false
end

local function clean(msg)
    if msg == nil then return "error (nil)" end
    if type(msg) ~= "string" then msg = tostring(msg) end
    return msg
end

-- Run one test in its own scope. Returns its outcome record.
-- --keep-on-failure (docs/debugging.md#keeping-the-vms-of-a-failing-file):
-- at a file's first failure its running VMs stay up until Ctrl-C, for
-- `provium attach`; then they are killed and the file ends there.
local keep_wanted = C.keep_on_failure
local kept = false
local keep_envs = setmetatable({}, { __mode = "k" })

-- `provium attach --lua`: a chunk run with `vm` the kept VM, in an
-- environment per VM that lasts while it is kept. Returns the text to
-- show, whether it is an error, and whether the chunk is unfinished.
local function keep_eval(vm, chunk)
    local env = keep_envs[vm]
    if not env then
        env = setmetatable({ vm = vm }, { __index = _G })
        keep_envs[vm] = env
    end
    local out = {}
    env.print = function(...)
        local n, parts = select("#", ...), {}
        for i = 1, n do parts[i] = tostring((select(i, ...))) end
        out[#out + 1] = table.concat(parts, "\t") .. "\n"
    end
    local f, err = load("return " .. chunk .. ";", "=attach", "t", env)
    if not f then f, err = load(chunk, "=attach", "t", env) end
    if not f then
        if err:sub(-5) == "<eof>" then return "", false, true end
        return err .. "\n", true, false
    end
    local res = table.pack(xpcall(f, function(e) return debug.traceback(tostring(e), 2) end))
    if not res[1] then
        -- the traceback down to the chunk, not the keeper's frames under it
        local msg = tostring(res[2]):gsub("\n\t%[C%]: in function 'xpcall'.*", "")
        return table.concat(out) .. msg .. "\n", true, false
    end
    for i = 2, res.n do
        local v = res[i]
        if type(v) == "table" and not (getmetatable(v) or {}).__tostring then
            local ok, j = pcall(json.encode, v)
            v = ok and j or v
        end
        out[#out + 1] = tostring(v) .. "\n"
    end
    return table.concat(out), false, false
end

local function keep(vms, why)
    if not keep_wanted or kept then return end
    C.set_deadline(nil)
    local ok, did = pcall(C.keep, vms, (why:gsub("\n.*", "")), keep_eval)
    if not ok then
        io.stderr:write("provium: --keep-on-failure: " .. tostring(did) .. "\n")
    elseif did then
        kept = true
        C.kill_all("--keep-on-failure: the kept VMs were stopped (Ctrl-C)")
    end
end

local function run_test(t)
    local rec = { name = t.name, meta = t.meta, log = {}, status = "passed", message = nil }
    local reason = todo_reason or skip_reason(t.meta)
    if reason then
        rec.status, rec.message = "skipped", reason
        return rec
    end
    local ctx = setmetatable({ name = t.name, meta = t.meta, _failed = false, _log = rec.log }, T)
    local scope = P.new_lab("test:" .. t.name, P.root)
    local limit = t.meta.timeout or provium.timeout
    local timed_out_msg
    if limit ~= nil then
        local ok, secs = pcall(P.duration, limit, "timeout")
        if not ok then
            rec.status, rec.message = "failed", secs
            return rec
        end
        timed_out_msg = ("test timed out after %gs"):format(secs)
        C.set_deadline(secs, timed_out_msg)
    end
    if t.meta.hang_timeout ~= nil then
        local ok, secs = pcall(P.duration, t.meta.hang_timeout, "meta.hang_timeout")
        if not ok then
            C.set_deadline(nil)
            rec.status, rec.message = "failed", secs
            return rec
        end
        C.set_hang_timeout(secs)
    end
    -- what the file's VMs logged, and their taint, before this test is not
    -- this test's doing
    local before = P.root:_all_vms()
    for _, vm in ipairs(before) do P.splat.collect(vm) end
    P.splat.taint_before(before)
    local body, leak_check = t.fn, false
    if P.kmemleak.wanted(t.meta) then
        -- inside the body: a kernel without kmemleak fails the test, under its deadline
        body = function(c)
            for _, vm in ipairs(before) do P.kmemleak.start(vm) end
            leak_check, P.kmemleak.active = true, true
            return t.fn(c)
        end
    end
    local splats = {}
    P.splat.sink = splats
    local started = C.now()
    rawset(_G, "provium", scope)
    current = ctx
    local ok, err = xpcall(body, function(e)
        if e == SKIP then return e end
        return clean(e)
    end, ctx)
    current = nil
    rawset(_G, "provium", P.root)
    P.kmemleak.active = false
    local timed_out = timed_out_msg and not ok and C.deadline_passed()
    C.set_deadline(nil)
    C.set_hang_timeout(file_hang)
    rec.duration = C.now() - started
    if not ok and err == SKIP then
        rec.status, rec.message = "skipped", rawget(ctx, "_skip")
    elseif not ok then
        rec.status, rec.message = "failed", err
    elseif rawget(ctx, "_failed") then
        rec.status, rec.message = "failed", "an assertion failed (caught by pcall)"
    end
    -- kernel splats, taints and leaks while the test ran fail it, unless it
    -- expects them
    local vms = P.root:_all_vms(scope:_all_vms())
    for _, vm in ipairs(vms) do P.splat.collect(vm) end
    P.splat.sink = nil
    if rec.status ~= "skipped" and not timed_out then
        for _, x in ipairs(P.splat.taint_after(vms, splats)) do splats[#splats + 1] = x end
        for _, vm in ipairs(leak_check and vms or {}) do
            local kok, leaks = pcall(P.kmemleak.finish, vm)
            if not kok and rec.status == "passed" then
                rec.status, rec.message = "failed", clean(leaks)
            end
            for _, x in ipairs(kok and leaks or {}) do splats[#splats + 1] = x end
        end
    end
    if #splats > 0 then
        rec.splats = P.splat.public(splats)
        if not t.meta.allow_kernel_warnings and rec.status ~= "skipped" then
            rec.status, rec.message = P.splat.judge(splats, rec.status, rec.message)
        end
    end
    -- an infrastructure error that escaped the body is not the kernel's failure
    if rec.status == "failed" and not ok and infra(err, vms) then rec.status = "error" end
    if rec.status ~= "passed" and rec.status ~= "skipped" then rec.console_excerpt = excerpt(scope) end
    if (rec.status == "failed" or rec.status == "error") and not timed_out then
        keep(vms, ("test `%s` failed: %s"):format(t.name, tostring(rec.message)))
    end
    if timed_out then
        -- whether it hit the deadline in Lua or inside a guest operation
        if rec.message ~= timed_out_msg then
            rec.message = timed_out_msg .. " (in: " .. rec.message .. ")"
        end
        -- no cooperative cancel: tear the whole file's lab down
        C.kill_all(timed_out_msg)
    end
    local cerr = scope:_close()
    if cerr and rec.status == "passed" then
        rec.status, rec.message = "failed", "closing the test's resources: " .. clean(cerr)
    end
    return rec
end

-- The event stream (docs/events.md): test_started, then one of test_passed,
-- test_failed, test_error or test_skipped, for every test.
local function run_test_with_events(t)
    local meta = t.meta
    C.event("test_started", { path = C.display, name = t.name, meta = meta })
    local rec = run_test(t)
    local ns = math.floor((rec.duration or 0) * 1e9)
    if rec.status == "skipped" then
        C.event("test_skipped", { path = C.display, name = t.name, reason = rec.message, meta = meta })
    elseif rec.status == "passed" then
        C.event("test_passed", { path = C.display, name = t.name, duration_ns = ns, meta = meta,
            log = rec.log })
    elseif rec.status == "error" then
        C.event("test_error", { path = C.display, name = t.name, duration_ns = ns,
            reason = rec.message, console_excerpt = rec.console_excerpt or "", meta = meta,
            log = rec.log })
    else
        C.event("test_failed", { path = C.display, name = t.name, duration_ns = ns,
            reason = rec.message, console_excerpt = rec.console_excerpt or "", meta = meta,
            log = rec.log })
    end
    return rec
end

-- Called by C once per file. Returns the outcome table.
-- A test or fixture file as a chunk (or nil and why); require resolves
-- against the roots and the file's own directory.
function P.load_file(path)
    local dirs = {}
    for _, r in ipairs(C.roots) do dirs[#dirs + 1] = r .. "/?.lua;" .. r .. "/?/init.lua" end
    local here = path:match("^(.*)/[^/]*$") or "."
    dirs[#dirs + 1] = here .. "/?.lua"
    package.path = table.concat(dirs, ";") .. ";" .. package.path
    -- named as displayed, so messages read "x.test.lua:3:", not an absolute path
    local f, ferr = io.open(path, "rb")
    if not f then return nil, ferr end
    local src = f:read("a")
    f:close()
    return load(src, "@" .. C.display, "t")
end

function _provium_run_file(path)
    local out = { path = C.display, tests = {}, chunk_error = nil }
    local chunk, lerr = P.load_file(path)
    if not chunk then
        out.chunk_error = lerr
        return out
    end
    local setup_splats = {}
    P.splat.sink = setup_splats
    local ok, err = xpcall(chunk, function(e) return debug.traceback(clean(e), 2) end)
    if not ok then
        P.splat.sink = nil
        out.chunk_error = err
        out.chunk_infra = infra(err, P.root:_all_vms()) or nil
        out.console_excerpt = excerpt()
        keep(P.root:_all_vms(), "its top-level code failed: " .. tostring(err))
        P.root:_close()
        return out
    end
    for _, vm in ipairs(P.root:_all_vms()) do P.splat.collect(vm) end
    P.splat.sink = nil
    local _, blamed = P.splat.judge(setup_splats, "passed")
    if blamed and not provium.allow_kernel_warnings then
        out.chunk_error = "kernel splat while the file's top-level code ran " ..
            "(set provium.allow_kernel_warnings = true to allow it)\n" .. blamed
        out.console_excerpt = excerpt()
        P.root:_close()
        return out
    end
    local baseline
    if rawget(P.root, "reset_between_tests") then
        local bok, b = pcall(P.baseline, P.root)
        if not bok then
            out.chunk_error = clean(b)
            P.root:_close()
            return out
        end
        baseline = b
    end
    for i, t in ipairs(tests) do
        local rec = run_test_with_events(t)
        out.tests[#out.tests + 1] = rec
        if kept then break end -- --keep-on-failure: the file ends at its kept failure
        -- the next test starts from the baseline
        if baseline and i < #tests then
            local rok, rerr = pcall(P.restore_baseline, baseline)
            if not rok then
                rec.status = "failed"
                rec.message = (rec.message and rec.message .. "\n" or "") ..
                    "provium.reset_between_tests: restoring the baseline failed: " .. clean(rerr)
            end
        end
    end
    local cerr = P.root:_close()
    if cerr then out.chunk_error = "closing file-scope resources: " .. clean(cerr) end
    return out
end
