-- vm:snapshot and vm:restore (reference §7.5, §13; docs/snapshots.md).
local C = _provium_c
local P = _provium
local V = C.vm_mt.__index

local Snapshot = {}
Snapshot.__index = Snapshot
P.Snapshot = Snapshot

function Snapshot:path() return self._path end

-- bytes on disk; 0 when the file is gone
function Snapshot:size()
    local f = io.open(self._path, "rb")
    if not f then return 0 end
    local n = f:seek("end")
    f:close()
    return n
end

-- best effort, idempotent
function Snapshot:delete() os.remove(self._path) end

Snapshot.__tostring = function(s) return ("Snapshot(%s)"):format(s._path) end

-- "tail_file("/var/log/x") at t.test.lua:42" for each live stream of vm
local function live_streams(vm)
    local out = {}
    for obj, owner in pairs(P.live) do
        if obj.kind and P.vm_of(owner) == vm then
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

-- vm:snapshot(path?) -> Snapshot: the running machine, saved; it goes on
function V:snapshot(path)
    if path ~= nil and type(path) ~= "string" then
        error("vm:snapshot: path must be a string, got " .. type(path), 2)
    end
    local live = live_streams(self)
    if #live > 0 then
        error(("provium: vm:snapshot() refused — file `%s` has live streams:\n%s\n" ..
            "Close the streams before snapshotting (or remove the snapshot)."):format(
            C.display, table.concat(live, "\n")), 2)
    end
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

-- provium.reset_between_tests (reference §3): every booted VM of the root
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
    local base = {}
    for _, vm in ipairs(vms) do
        base[#base + 1] = { vm = vm, snap = vm:state() == "booted" and vm:snapshot() or nil }
    end
    return base
end

-- Back to the baseline: the saved VMs restored, the others stopped.
function P.restore_baseline(base)
    for _, b in ipairs(base) do
        local st = b.vm:state()
        if st ~= "created" and st ~= "shutdown" then b.vm:kill() end
        if b.snap then b.vm:restore(b.snap) end
    end
end
