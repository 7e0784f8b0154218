-- Disks attached to VMs (docs/disks.md): vm:attach_disk, vm:disk, the Disk
-- type, the boot option `disks`, and the guest's /dev/disk/by-id links. The
-- images are served to QEMU by provium's NBD server (_provium_c.disk), where
-- the faults act.
local C = _provium_c
local P = _provium
local D = C.disk
local V = C.vm_mt.__index

local Disk = {}
Disk.__index = Disk
P.Disk = Disk
Disk.__tostring = function(self) return ("Disk(%s on %s)"):format(self._id, self._vm_name) end

local SECTOR = D.const.SECTOR
local DEFAULT_SIZE = 4 * 1024 * 1024 * 1024
local VALID = table.concat(D.modes, ", ")

-- vm -> { list = {Disk, ...} in attach order, by_id = {id -> Disk} }. The
-- keys are weak: a VM's disks live as long as it does, and no longer.
local disks_of = setmetatable({}, { __mode = "k" })

local function of(vm)
    local t = disks_of[vm]
    if not t then
        t = { list = {}, by_id = {} }
        disks_of[vm] = t
    end
    return t
end

local function running(vm) return vm:state() == "booted" or vm:state() == "paused" end

-- The guest's virtio disks by serial: {serial = "vdX"}, read through the
-- agent (no shell needed); only those whose /dev node exists.
local function scan(vm)
    local map = {}
    local ok, entries = pcall(vm.listdir, vm, "/sys/block")
    if not ok then return map end
    for _, e in ipairs(entries) do
        if e.name:match("^vd%a+$") then
            local sok, serial = pcall(vm.read_file, vm, "/sys/block/" .. e.name .. "/serial")
            if sok and vm:exists("/dev/" .. e.name) then map[(serial:gsub("%s+$", ""))] = e.name end
        end
    end
    return map
end

-- How long a guest may take to show a disk (PCI hot-plug goes through ACPI).
local SEE_WITHIN = 60

-- After a boot or a hot-plug: virtio_blk loaded, each disk's guest device
-- found by its serial and noted, and, where the guest has a shell, linked as
-- /dev/disk/by-id/virtio-<id> (it has no udev to do it). Ids are letters,
-- digits, `.`, `-` and `_` only: nothing for the shell.
-- restored: the guest is as it was at a snapshot, its module loaded and
-- its links made then; only the devices are noted.
local function link(vm, disks, level, restored)
    if #disks == 0 or vm:state() ~= "booted" then return end
    if not restored and not vm:exists("/sys/module/virtio_blk") and vm:modules_dir() then
        local ok, err = pcall(vm.modprobe, vm, "virtio_blk")
        if not ok then P.rethrow(err, level + 1) end
    end
    local deadline = C.now() + SEE_WITHIN * C.timeout_scale()
    local map
    while true do
        map = scan(vm)
        local missing = {}
        for _, d in ipairs(disks) do
            if not map[d._id] then missing[#missing + 1] = d._id end
        end
        if #missing == 0 then break end
        if C.now() >= deadline then
            error(("vm `%s`: no virtio disk with serial %s after %.0f s (does its kernel have virtio_blk, and ACPI PCI hot-plug for a disk attached while it runs?)"):format(vm:name(),
                table.concat(missing, ", "), SEE_WITHIN * C.timeout_scale()), level + 1)
        end
        C.sleep(0.05)
    end
    local cmd = { "mkdir -p /dev/disk/by-id" }
    for _, d in ipairs(disks) do
        d._dev = "/dev/" .. map[d._id]
        cmd[#cmd + 1] = ("ln -sfn ../../%s /dev/disk/by-id/virtio-%s"):format(map[d._id], d._id)
    end
    if restored then return end
    pcall(vm.run, vm, { "sh", "-c", table.concat(cmd, " && ") }) -- no shell: no links
end

local KNOWN = { id = true, size = true, image = true, path = true, format = true, readonly = true,
    mediated = true, plain = true }

-- What a spec table asks for, checked: id, image, size, readonly.
local function check_spec(vm, spec, what, level)
    if type(spec) ~= "table" then
        error(("%s: expected a table {id=, size=, image=, format=, readonly=}, got %s"):format(what, type(spec)), level + 1)
    end
    for k in pairs(spec) do
        if not KNOWN[k] then
            error(("%s: unknown field `%s` (known: id, size, image, path, format, readonly, mediated, plain)"):format(what, tostring(k)), level + 1)
        end
    end
    local id = spec.id
    if id == nil then id = "attached-" .. vm:name() end
    if type(id) ~= "string" or not id:match("^[%w._%-]+$") or #id > D.const.ID_MAX then
        error(("%s: id must be 1-%d letters, digits, `.`, `-` or `_` (it is the virtio serial), got %s")
            :format(what, D.const.ID_MAX, type(id) == "string" and ("`" .. id .. "`") or type(id)), level + 1)
    end
    local image = spec.image
    if image == nil then image = spec.path end
    if image ~= nil and (type(image) ~= "string" or image == "") then
        error(("%s: disk `%s`: image must be a path, got %s"):format(what, id, type(image)), level + 1)
    end
    local format = spec.format or "raw"
    if format ~= "raw" and format ~= "qcow2" then
        error(("%s: disk `%s`: format must be \"raw\" or \"qcow2\", got %s"):format(what, id, tostring(spec.format)), level + 1)
    end
    if spec.plain ~= nil and type(spec.plain) ~= "boolean" then
        error(("%s: disk `%s`: plain must be a boolean, got %s"):format(what, id, type(spec.plain)), level + 1)
    end
    local plain = spec.plain
    if format == "qcow2" then
        if plain == false or spec.mediated then
            error(("%s: disk `%s`: a qcow2 image is opened by QEMU itself (a plain disk): faults and mediated need a raw image (docs/disks.md#plain-disks)"):format(what, id), level + 1)
        end
        if image == nil then
            error(("%s: disk `%s`: format qcow2 needs an image (a path; one that does not exist is made)"):format(what, id), level + 1)
        end
        plain = true
    end
    if plain and spec.mediated then
        error(("%s: disk `%s`: a plain disk cannot be mediated: QEMU writes it itself (docs/disks.md#plain-disks)"):format(what, id), level + 1)
    end
    if spec.readonly ~= nil and type(spec.readonly) ~= "boolean" then
        error(("%s: disk `%s`: readonly must be a boolean, got %s"):format(what, id, type(spec.readonly)), level + 1)
    end
    if spec.mediated ~= nil and type(spec.mediated) ~= "boolean" then
        error(("%s: disk `%s`: mediated must be a boolean, got %s"):format(what, id, type(spec.mediated)), level + 1)
    end
    local size = spec.size
    if size == nil then size = DEFAULT_SIZE end
    return id, image, size, spec.readonly or false, spec.mediated or false, plain and format or nil
end

local function attach(vm, spec, what, level)
    local id, image, size, readonly, mediated, plain = check_spec(vm, spec, what, level + 1)
    local t = of(vm)
    if t.by_id[id] then
        error(("%s: vm `%s` has a disk `%s` already"):format(what, vm:name(), id), level + 1)
    end
    local ok, h = pcall(D.open, image, size, readonly, what, plain)
    if not ok then P.rethrow(h, level + 1) end
    if mediated then D.mediate(h, true) end
    local aok, err = pcall(D.attach, vm, h, id, readonly)
    if not aok then
        D.close(h)
        P.rethrow(err, level + 1)
    end
    local d = setmetatable({ _h = h, _id = id, _vm = vm, _vm_name = vm:name(), _image = image,
        _readonly = readonly, _mediated = mediated, _plain = plain, _detached = false }, Disk)
    t.list[#t.list + 1] = d
    t.by_id[id] = d
    if running(vm) then link(vm, { d }, level + 1) end
    return d
end

-- vm:attach_disk{id=, size=, image=, format=, readonly=, mediated=} -> Disk
function V:attach_disk(spec)
    return attach(self, spec, "vm:attach_disk", 2)
end

-- vm:disk(id) -> Disk
function V:disk(id)
    local t = of(self)
    local d = t.by_id[id]
    if not d then
        local ids = {}
        for i, x in ipairs(t.list) do ids[i] = x._id end
        error(("vm:disk: vm `%s` has no disk `%s` (disks: %s)"):format(self:name(), tostring(id),
            #ids > 0 and table.concat(ids, ", ") or "none"), 2)
    end
    return d
end

-- vm:disks() -> its attached disks, in attach order
function V:disks()
    local out = {}
    for i, d in ipairs(of(self).list) do out[i] = d end
    return out
end

-- The boot option `disks`: each disk not yet attached (by id) is, first.
local function boot_disks(vm, opts, level)
    if type(opts) ~= "table" or opts.disks == nil then return end
    if type(opts.disks) ~= "table" then
        error(("vm:boot: disks must be an array of tables, got %s"):format(type(opts.disks)), level + 1)
    end
    for i, spec in ipairs(opts.disks) do
        local id = type(spec) == "table" and spec.id
        if id == nil and type(spec) == "table" then id = "attached-" .. vm:name() end
        if not (type(id) == "string" and of(vm).by_id[id]) then
            attach(vm, spec, ("vm:boot: disks[%d]"):format(i), level + 1)
        end
    end
end

-- provium:vm(name, profile, {disks = ...}): attached when the VM is made.
local vm_new = C.vm_new
function C.vm_new(name, profile, opts)
    local vm = vm_new(name, profile, opts)
    boot_disks(vm, opts, 3)
    return vm
end

local boot = V.boot
function V:boot(opts, ...)
    boot_disks(self, opts, 2)
    local ok, r = pcall(boot, self, opts, ...)
    if not ok then P.rethrow(r, 2) end
    local list = of(self).list
    if #list > 0 and self:boot_cached() then
        -- A kernel with virtio_blk built in read each disk's first sectors
        -- (the partition scan) in the saved boot; the disks are what they
        -- are now: the guest drops what it read and scans again
        -- (docs/boot-cache.md). A modular virtio_blk is loaded below, after
        -- the resume, and finds no disk here.
        local cmd, map = {}, scan(self)
        for _, d in ipairs(list) do
            local dev = map[d._id]
            if dev then
                cmd[#cmd + 1] = ("blockdev --flushbufs /dev/%s; blockdev --rereadpt /dev/%s 2>/dev/null"):format(dev, dev)
            end
        end
        if #cmd > 0 then pcall(self.run, self, { "sh", "-c", table.concat(cmd, "; ") }) end
    end
    link(self, list, 2)
    return r
end

-- Before a restore of path (docs/snapshots.md#disks): the VM's attached
-- disks become the snapshot's, in its order, each its frozen file under a
-- new overlay. A Disk of the same id goes on with the new disk; one the
-- snapshot does not have is detached. The new disks are opened before
-- anything changes: a failure leaves the VM's disks as they were.
local function restore_disks(vm, path, level)
    if running(vm) then return end -- the restore refuses it
    local ok, saved = pcall(D.snap_disks, path, "vm:restore")
    if not ok then return end -- the restore says what is wrong with it
    local t = of(vm)
    if #saved == 0 and #t.list == 0 then return end
    local handles = {}
    for i, e in ipairs(saved) do
        local hok, h = pcall(D.open_layered, e.file, e.readonly, ("vm `%s`: restore: disk `%s`"):format(vm:name(), e.id), e.format)
        if hok and e.mediated then hok, h = pcall(function() D.mediate(h, true) return h end) end
        if not hok then
            for _, x in ipairs(handles) do D.close(x) end
            P.rethrow(h, level + 1)
        end
        handles[i] = h
    end
    for _, d in ipairs(t.list) do
        D.detach(vm, d._id) -- stopped: out of its next boots only
        D.close(d._h)
        d._detached, d._dev = true, nil
    end
    local old = t.by_id
    t.list, t.by_id = {}, {}
    for i, e in ipairs(saved) do
        local d = old[e.id] or setmetatable({ _id = e.id, _vm = vm, _vm_name = vm:name() }, Disk)
        d._h, d._image, d._readonly, d._mediated, d._detached = handles[i], nil, e.readonly, e.mediated, false
        -- a plain raw disk comes back served (its frozen copy under an
        -- overlay, as any raw disk); a qcow2 one stays QEMU's own
        d._plain = e.format == "qcow2" and "qcow2" or nil
        D.attach(vm, d._h, e.id, e.readonly)
        t.list[i] = d
        t.by_id[e.id] = d
    end
end

local restore = V.restore
function V:restore(snap, ...)
    local path = getmetatable(snap) == P.Snapshot and snap._path or snap
    if type(path) == "string" then restore_disks(self, path, 2) end
    local ok, r = pcall(restore, self, snap, ...)
    if not ok then P.rethrow(r, 2) end
    link(self, of(self).list, 2, true)
    return r
end

-- ---- Disk ----

local function live(self, what)
    if self._detached then error(("disk:%s: disk is detached"):format(what), 3) end
end

local function call(what, f, ...)
    local ok, r = pcall(f, ...)
    if not ok then P.rethrow(r, 3) end
    return r
end

function Disk:id() return self._id end
function Disk:is_detached() return self._detached end
-- the guest's device, e.g. "/dev/vdb", as of the last boot or hot-plug (nil before)
function Disk:device() return self._dev end

function Disk:size()
    live(self, "size")
    return call("size", D.size, self._h)
end

function Disk:read_sectors(offset, n)
    live(self, "read_sectors")
    return call("read_sectors", D.read_sectors, self._h, offset, n)
end

function Disk:write_sectors(offset, data)
    live(self, "write_sectors")
    call("write_sectors", D.write_sectors, self._h, offset, data)
end

local function count_field(v, what, name, min)
    if math.type(v) ~= "integer" or v < min then
        error(("disk:fault_inject: %s must be an integer >= %d, got %s"):format(name, min, tostring(v)), 4)
    end
    return v
end

-- disk:fault_inject(mode, {ms=, sectors={first, count}}?)
function Disk:fault_inject(mode, opts)
    live(self, "fault_inject")
    if type(mode) ~= "string" then
        error(("disk:fault_inject: mode must be a string, got %s"):format(type(mode)), 2)
    end
    local known = false
    for _, m in ipairs(D.modes) do known = known or m == mode end
    if not known then
        error(("disk:fault_inject: unknown mode `%s` (valid: %s)"):format(mode, VALID), 2)
    end
    if opts ~= nil and type(opts) ~= "table" then
        error(("disk:fault_inject: opts must be a table {ms=, sectors={first, count}}, got %s"):format(type(opts)), 2)
    end
    opts = opts or {}
    for k in pairs(opts) do
        if k ~= "ms" and k ~= "sectors" then
            error(("disk:fault_inject: unknown option `%s` (known: ms, sectors)"):format(tostring(k)), 2)
        end
    end
    local ms = D.const.SLOW_MS_DEFAULT
    if opts.ms ~= nil then
        if mode ~= "slow" then error("disk:fault_inject: ms is for mode `slow` only", 2) end
        if type(opts.ms) ~= "number" or opts.ms ~= opts.ms or opts.ms < 0 or opts.ms > D.const.SLOW_MS_MAX then
            error(("disk:fault_inject: ms must be a number 0..%d, got %s"):format(D.const.SLOW_MS_MAX, tostring(opts.ms)), 2)
        end
        ms = math.floor(opts.ms + 0.5)
    end
    local first, count = 0, 0
    if opts.sectors ~= nil then
        local s = opts.sectors
        if type(s) ~= "table" then
            error(("disk:fault_inject: sectors must be {first, count}, got %s"):format(type(s)), 2)
        end
        first = count_field(s[1] or s.first, "fault_inject", "sectors.first", 0)
        count = count_field(s[2] or s.count, "fault_inject", "sectors.count", 1)
    end
    call("fault_inject", D.fault, self._h, mode, first, count, ms)
end

function Disk:clear_faults()
    live(self, "clear_faults")
    call("clear_faults", D.clear, self._h)
end

function Disk:active_faults()
    if self._detached then return {} end
    return call("active_faults", D.faults, self._h)
end

-- disk:pending_writes() -> {count =, bytes =, overflows =}: the guest's
-- writes a mediated disk holds until a flush (all 0 on another disk)
function Disk:pending_writes()
    live(self, "pending_writes")
    return call("pending_writes", D.pending, self._h)
end

-- disk:power_cut{reorder = seed}?: the VM loses power (killed: it reads
-- `shutdown`) and every disk of it its unflushed writes, or with reorder a
-- subset of them chosen by seed. -> {applied =, dropped =} for this disk.
function Disk:power_cut(opts)
    live(self, "power_cut")
    if opts ~= nil and type(opts) ~= "table" then
        error(("disk:power_cut: opts must be a table {reorder = seed}, got %s"):format(type(opts)), 2)
    end
    opts = opts or {}
    for k in pairs(opts) do
        if k ~= "reorder" then
            error(("disk:power_cut: unknown option `%s` (known: reorder)"):format(tostring(k)), 2)
        end
    end
    local seed = opts.reorder
    if seed ~= nil and math.type(seed) ~= "integer" then
        error(("disk:power_cut: reorder must be an integer seed, got %s"):format(tostring(seed)), 2)
    end
    -- The disks first: from this instant nothing the guest sends lands.
    local r = call("power_cut", D.power_cut, self._h, seed)
    for _, d in ipairs(of(self._vm).list) do
        if d ~= self then call("power_cut", D.power_cut, d._h, seed) end
    end
    local ok, err = pcall(self._vm.kill, self._vm)
    if not ok then P.rethrow(err, 2) end
    return r
end

-- disk:detach(): out of its VM (unplugged at once if it runs), the image
-- closed. Idempotent.
function Disk:detach()
    if self._detached then return end
    local vm = self._vm
    local ok, err = pcall(D.detach, vm, self._id)
    if not ok and D.has(vm, self._id) then P.rethrow(err, 2) end -- nothing changed
    self._detached = true
    local t = of(vm)
    t.by_id[self._id] = nil
    for i, d in ipairs(t.list) do
        if d == self then table.remove(t.list, i) break end
    end
    D.close(self._h)
    if self._dev and vm:state() == "booted" then
        pcall(vm.run, vm, { "rm", "-f", "/dev/disk/by-id/virtio-" .. self._id })
    end
    self._dev = nil
    if not ok then P.rethrow(err, 2) end
end
