-- Persistent fixtures (docs/fixtures.md): provium:vm_fixture
-- and the build of a fixture file in its own process.
local C = _provium_c
local P = _provium

-- The directory of the file that called (level 3: the caller of the method).
local function caller_dir()
    local info = debug.getinfo(3, "S") -- none when called from C (the repl)
    local src = info and info.source or ""
    local file = src:sub(1, 1) == "@" and src:sub(2) or "."
    return file:match("^(.*)/[^/]*$") or "."
end

-- The VM name and profile a snapshot recorded (in its header, `machine`).
local function recorded(path)
    local f = io.open(path .. "/machine", "rb")
    if not f then return nil end
    f:read("l")
    local ok, h = pcall(json.decode, f:read("l") or "")
    f:close()
    return ok and type(h) == "table" and h or nil
end

-- Fixture `name` from the cache (built first if missing), made into a VM
-- or a lab by restore(path). A damaged cached entry is not fatal: it is
-- dropped and built again, once. Errors are raised at the caller's caller.
local function resume(name, dir, lab, restore)
    for attempt = 1, 2 do
        local ok, path, built = pcall(C.fixture, name, dir, lab)
        if not ok then P.rethrow(path, 3) end
        local rok, obj = pcall(restore, path)
        if rok then
            C.cache_touch(path)
            if not built then C.event("fixture_cache_hit", { path = name }) end
            return obj
        end
        if built or attempt == 2 then P.rethrow(obj, 3) end
        -- only a damaged entry goes: a restore that failed for another reason
        -- (the claim, the host's memory) fails with its own error
        local damaged = C.cache_discard_damaged(path)
        if not damaged then P.rethrow(obj, 3) end
        io.stderr:write(("provium: fixture `%s`: the cached entry %s is damaged (%s); rebuilding\n")
            :format(name, path, damaged))
    end
end

-- The VM fixture `name` looked up from dir -> a booted VM, restored from the
-- fixture's snapshot; it belongs to the file's root lab, wherever it is
-- called. Errors at level 3 from here (the caller of the method).
local function vm_fixture(name, dir)
    return resume(name, dir, false, function(path)
        local h = recorded(path)
        if not h then error("its header is unreadable", 0) end
        local vm = rawget(P.root, "_vms")[h.vm] or P.root:vm(h.vm, h.profile)
        vm:restore(path)
        return vm
    end)
end

-- provium:vm_fixture(name) or provium.vm_fixture(name) -> a booted VM
function P.Lab.vm_fixture(a, b)
    local name = getmetatable(a) == P.Lab and b or a
    if type(name) ~= "string" then
        error("vm_fixture: expected a fixture path such as \"fixtures/base\", got " .. type(name), 2)
    end
    return vm_fixture(name, caller_dir())
end

-- provium:lab_fixture(name) or provium.lab_fixture(name) -> a fresh sub-lab
-- of the file's root holding the fixture's VMs, restored (members reached
-- as lab.a); the fixture ends with `return provium:snapshot()`.
function P.Lab.lab_fixture(a, b)
    local name = getmetatable(a) == P.Lab and b or a
    if type(name) ~= "string" then
        error("lab_fixture: expected a fixture path such as \"fixtures/cluster\", got " .. type(name), 2)
    end
    local labname = name:gsub("[^%w_]", "_")
    return resume(name, caller_dir(), true, function(path)
        local lab = rawget(P.root, "_labs")[labname] or P.root:lab(labname)
        local ok, err = pcall(lab.restore, lab, path)
        if not ok then
            lab:shutdown()
            error(err, 0)
        end
        return lab
    end)
end

-- LEGACY: provium.fixture(name) -> the VM of fixtures/<name>.fixture.lua
-- (the seeds kept fixtures in a fixtures/ directory), else of <name>.
function P.Lab.fixture(a, b)
    local name = getmetatable(a) == P.Lab and b or a
    if type(name) ~= "string" then
        error("provium.fixture: expected a fixture name such as \"base\", got " .. type(name), 2)
    end
    local dir = caller_dir()
    if not name:find("/", 1, true) then
        local ok, vm = pcall(vm_fixture, "fixtures/" .. name, dir)
        if ok then return vm end
        if not tostring(vm):find("not found in any test root", 1, true) then P.rethrow(vm, 2) end
    end
    return vm_fixture(name, dir)
end

-- In the build process (src/host/fixture.c): run the fixture file; it
-- returns a Snapshot (a LabSnapshot for a lab fixture), which becomes
-- `out`. Returns the exit status.
function _provium_build_fixture(path, out)
    local chunk, lerr = P.load_file(path)
    if not chunk then
        io.stderr:write(lerr, "\n")
        return 1
    end
    local ok, res = xpcall(chunk, function(e) return debug.traceback(tostring(e), 2) end)
    local code = 0
    if not ok then
        io.stderr:write(res, "\n")
        code = 1
    elseif getmetatable(res) ~= P.Snapshot and getmetatable(res) ~= P.LabSnapshot then
        io.stderr:write(("%s: a fixture must end with `return vm:snapshot()` or " ..
            "`return provium:snapshot()` (it returned %s)\n"):format(C.display, type(res)))
        code = 1
    elseif (getmetatable(res) == P.LabSnapshot) ~= (out:sub(-4) == ".lab") then
        io.stderr:write(("%s: %s fixture must return %s\n"):format(C.display,
            out:sub(-4) == ".lab" and "a lab" or "a VM",
            out:sub(-4) == ".lab" and "provium:snapshot()" or "vm:snapshot()"))
        code = 1
    else
        local rok, rerr = os.rename(res:path(), out)
        if not rok then
            io.stderr:write("moving the snapshot into the cache: ", rerr, "\n")
            code = 1
        end
    end
    P.root:_close()
    return code
end
