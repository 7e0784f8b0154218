-- vm:snapshot and vm:restore (docs/snapshots.md).
local C = _provium_c
local P = _provium
local V = C.vm_mt.__index

local Snapshot = {}
Snapshot.__index = Snapshot
P.Snapshot = Snapshot

function Snapshot:path() return self._path end

-- the disk space of its files (the RAM file too, which it may share with
-- the snapshot or boot it came from); 0 when it is gone
function Snapshot:size() return C.disk_usage(self._path) end

-- best effort, idempotent
function Snapshot:delete() C.remove_tree(self._path) end

Snapshot.__tostring = function(s) return ("Snapshot(%s)"):format(s._path) end

-- "tail_file("/var/log/x") at t.test.lua:42" for each live stream of vm
local function live_streams(vm)
    local out = {}
    for obj, owner in pairs(P.live) do
        local bridge = getmetatable(owner) == P.Bridge
        if obj.kind and (bridge and owner:_carries(vm) or not bridge and P.vm_of(owner) == vm) then
            local detail = obj.detail
            if type(detail) == "string" then detail = ("%q"):format(detail)
            elseif detail ~= nil then detail = "handle=" .. tostring(detail) end
            local site = obj:creation_site()
            out[#out + 1] = ("  - %s(%s) at %s"):format(obj.kind, detail or "",
                site and ("%s:%d"):format(site.file, site.line) or "?")
        end
    end
    table.sort(out)
    return out
end

local function refuse_live(what, vms, level)
    local live = {}
    for _, vm in ipairs(vms) do
        for _, l in ipairs(live_streams(vm)) do live[#live + 1] = l end
    end
    if #live > 0 then
        error(("provium: %s refused — file `%s` has live streams:\n%s\n" ..
            "Close the streams before snapshotting (or remove the snapshot)."):format(
            what, C.display, table.concat(live, "\n")), level + 1)
    end
end

-- vm:snapshot(path?) -> Snapshot: the running machine, saved; it goes on
function V:snapshot(path)
    if path ~= nil and type(path) ~= "string" then
        error("vm:snapshot: path must be a string, got " .. type(path), 2)
    end
    refuse_live("vm:snapshot()", { self }, 2)
    local ok, p = pcall(C.snapshot, self, path)
    if not ok then P.rethrow(p, 2) end
    return setmetatable({ _path = p }, Snapshot)
end

-- vm:restore(snap_or_path): a created or shut-down VM becomes the saved one
function V:restore(snap)
    local path = getmetatable(snap) == Snapshot and snap._path or snap
    if type(path) ~= "string" then
        error("vm:restore: expected a Snapshot or a path, got " .. type(snap), 2)
    end
    local ok, err = pcall(C.restore, self, path)
    if not ok then P.rethrow(err, 2) end
    return self
end

-- provium.reset_between_tests (docs/writing-tests.md): every booted VM of the root
-- lab saved once the file's top level has run, and put back after each test.
function P.baseline(root)
    local vms, live = {}, {}
    for _, vm in ipairs(root:_all_vms()) do
        vms[#vms + 1] = vm
        for _, l in ipairs(live_streams(vm)) do live[#live + 1] = l end
    end
    if #live > 0 then
        error("provium.reset_between_tests would auto-snapshot a live stream opened at file scope:\n" ..
            table.concat(live, "\n") .. "\nClose it at the end of the top level, or open it in the tests.", 0)
    end
    local base = { bridges = {} }
    for _, vm in ipairs(vms) do
        local snap = vm:state() == "booted" and vm:snapshot() or nil
        base[#base + 1] = { vm = vm, snap = snap }
        -- the QEMU of the next reset starts while the test runs
        if snap then C.standby(vm, snap:path()) end
    end
    for _, b in ipairs(root:_all_bridges()) do base.bridges[b] = b:_save() end
    return base
end

-- Back to the baseline: the saved VMs restored, the others stopped.
function P.restore_baseline(base)
    for _, b in ipairs(base) do
        local st = b.vm:state()
        if st ~= "created" and st ~= "shutdown" then b.vm:kill() end
        if b.snap then
            b.vm:restore(b.snap)
            C.standby(b.vm, b.snap:path())
        end
    end
    for bridge, rules in pairs(base.bridges) do bridge:_load(rules) end
end

-- LabSnapshot: a directory of lab.json and a <vm>.snap snapshot per VM.
local LabSnapshot = {}
LabSnapshot.__index = LabSnapshot
P.LabSnapshot = LabSnapshot

function LabSnapshot:path() return self._path end

LabSnapshot.size = Snapshot.size
LabSnapshot.delete = Snapshot.delete

LabSnapshot.__tostring = function(s) return ("LabSnapshot(%s)"):format(s._path) end

-- lab:snapshot(dir?): every VM of this lab and its sub-labs. No dir: a
-- LabSnapshot in a new directory; with one: its path.
function P.Lab:snapshot(dir)
    if dir ~= nil and type(dir) ~= "string" then
        error("lab:snapshot: dir must be a string, got " .. type(dir), 2)
    end
    local vms = self:_all_vms()
    refuse_live("lab:snapshot()", vms, 2)
    local path = dir or C.tempdir()
    local made, merr = C.host_dir(path, true)
    if not made then error("lab:snapshot: " .. merr, 2) end
    local index = { vms = {} }
    for _, vm in ipairs(vms) do
        local entry = { name = vm:name(), profile = vm:profile(), state = vm:state() }
        if entry.state == "booted" then
            entry.snap = entry.name .. ".snap"
            local ok, err = pcall(vm.snapshot, vm, path .. "/" .. entry.snap)
            if not ok then P.rethrow(err, 2) end
        end
        index.vms[#index.vms + 1] = entry
    end
    local f = assert(io.open(path .. "/lab.json", "w"))
    f:write(json.encode(index), "\n")
    f:close()
    if dir then return dir end
    return setmetatable({ _path = path }, LabSnapshot)
end

-- lab:restore(dir_or_labsnapshot): each saved VM, by name; a VM the lab does
-- not have yet is declared with the recorded profile.
function P.Lab:restore(snap)
    local path = getmetatable(snap) == LabSnapshot and snap._path or snap
    if type(path) ~= "string" then
        error("lab:restore: expected a LabSnapshot or a directory, got " .. type(snap), 2)
    end
    local f = io.open(path .. "/lab.json")
    if not f then error(("lab:restore: %s holds no lab.json: not a lab snapshot"):format(path), 2) end
    local ok, index = pcall(json.decode, f:read("a"))
    f:close()
    local function valid(e)
        return type(e) == "table" and type(e.name) == "string"
            and (e.snap == nil or (type(e.snap) == "string" and not e.snap:find("/", 1, true)))
            and (e.profile == nil or type(e.profile) == "string")
    end
    local good = ok and type(index) == "table" and type(index.vms) == "table"
    for _, e in ipairs(good and index.vms or {}) do good = good and valid(e) end
    if not good then
        error(("lab:restore: %s/lab.json is not a lab snapshot's index"):format(path), 2)
    end
    for _, e in ipairs(index.vms) do
        if e.snap then
            local vm = rawget(self, "_vms")[e.name] or self:vm(e.name, e.profile)
            local rok, err = pcall(V.restore, vm, path .. "/" .. e.snap)
            if not rok then P.rethrow(err, 2) end
        end
    end
    return self
end
