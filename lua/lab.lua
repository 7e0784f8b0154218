-- Labs: resource ownership and scopes (docs/writing-tests.md#scopes-and-labs). The root lab is the
-- global `provium`; each test body runs in a sub-lab whose parent is the root.
local C = _provium_c
local P = _provium

local Lab = {}
P.Lab = Lab
P.home = setmetatable({}, { __mode = "k" }) -- VM -> the lab that declared it

local reserved = { pack = true, unpack = true, vm_fixture = true, lab_fixture = true }

-- provium.pack(...) and provium:pack(...) both work: drop a leading lab.
local function strip(f)
    return function(a, ...)
        if getmetatable(a) == Lab then return f(...) end
        return f(a, ...)
    end
end
local sugar = { pack = strip(P.pack), unpack = strip(P.unpack), sys = P.sys, errno = P.errno,
    caps = P.caps }

local function lookup(lab, kind, name)
    local l = lab
    while l do
        local r = rawget(l, "_" .. kind)[name]
        if r then return r, l end
        l = rawget(l, "_parent")
    end
end

Lab.__index = function(self, k)
    local m = rawget(Lab, k)
    if m ~= nil then return m end
    if sugar[k] then return sugar[k] end
    if type(k) ~= "string" then return nil end
    return lookup(self, "vms", k) or lookup(self, "bridges", k) or lookup(self, "labs", k)
end

Lab.__newindex = function(self, k, v)
    rawset(self, k, v)
end

Lab.__tostring = function(self)
    return "Lab(" .. rawget(self, "_name") .. ")"
end

function P.new_lab(name, parent)
    return setmetatable({ _name = name, _parent = parent, _vms = {}, _labs = {}, _bridges = {},
        _order = {}, _resources = {} }, Lab)
end

local function check_name(self, name, what)
    if type(name) ~= "string" or name == "" then
        error(what .. ": name must be a non-empty string, got " .. type(name), 3)
    end
    if reserved[name] then
        error(("%s: `%s` is a reserved name (pack, unpack, vm_fixture and lab_fixture are)"):format(what, name), 3)
    end
    if rawget(self, "_vms")[name] or rawget(self, "_labs")[name] or rawget(self, "_bridges")[name] then
        error(("%s: `%s` already exists in lab `%s`"):format(what, name, rawget(self, "_name")), 3)
    end
    local parent = rawget(self, "_parent")
    if parent and (lookup(parent, "vms", name) or lookup(parent, "labs", name)) then
        local _, owner = lookup(parent, "vms", name)
        error(("name `%s` already declared at parent scope (lab `%s`). Pick a different name, or use provium:vm(\"%s\") to reuse it.")
            :format(name, owner and rawget(owner, "_name") or "provium", name), 3)
    end
end

-- Resources close at scope end, by priority then registration order.
function Lab:_register(obj, priority)
    local res = rawget(self, "_resources")
    res[#res + 1] = { obj = obj, priority = priority or 5, seq = #res }
end

function Lab:_close()
    local res = rawget(self, "_resources")
    table.sort(res, function(a, b)
        if a.priority ~= b.priority then return a.priority < b.priority end
        return a.seq > b.seq
    end)
    local first_err
    for _, r in ipairs(res) do
        local ok, err = pcall(r.obj.close, r.obj)
        if not ok and not first_err then first_err = err end
    end
    rawset(self, "_resources", {})
    -- a lab that was only included closes with the lab that made it
    for _, sub in pairs(rawget(self, "_labs")) do
        if not (P.included[sub] and P.included[sub][self]) then sub:_close() end
    end
    return first_err
end

-- lab:vm(name) looks up (walking parents); lab:vm(name, profile, opts?) creates.
function Lab:vm(name, profile, opts)
    if getmetatable(self) ~= Lab then
        error("provium:vm: call it with a colon (provium:vm(...))", 2)
    end
    if profile == nil then
        local vm = lookup(self, "vms", name)
        if not vm then
            local names = {}
            local l = self
            while l do
                for n in pairs(rawget(l, "_vms")) do names[#names + 1] = n end
                l = rawget(l, "_parent")
            end
            table.sort(names)
            error(("vm `%s` not found (declared: %s)"):format(tostring(name),
                #names > 0 and table.concat(names, ", ") or "none"), 2)
        end
        return vm
    end
    if type(profile) ~= "string" then
        error("provium:vm: profile must be a string, got " .. type(profile), 2)
    end
    if opts ~= nil and type(opts) ~= "table" then
        error("provium:vm: boot opts must be a table, got " .. type(opts), 2)
    end
    check_name(self, name, "provium:vm")
    local vm = C.vm_new(name, profile, P.legacy_boot_opts(opts, 2))
    P.home[vm] = self
    rawget(self, "_vms")[name] = vm
    local order = rawget(self, "_order")
    order[#order + 1] = { kind = "vm", name = name }
    self:_register(vm, 5)
    return vm
end

function Lab:lab(name)
    local n = name
    if n == nil then
        local i = 0
        while rawget(self, "_labs")["__lab_" .. i] do i = i + 1 end
        n = "__lab_" .. i
    else
        check_name(self, n, "provium:lab")
    end
    -- sub-labs federate: no parent chain for lookups
    local sub = P.new_lab(n, nil)
    rawget(self, "_labs")[n] = sub
    local order = rawget(self, "_order")
    order[#order + 1] = { kind = "sub_lab", name = n }
    return sub
end

function Lab:name() return rawget(self, "_name") end

local tables = { vm = "_vms", bridge = "_bridges", sub_lab = "_labs" }
local function names(self, kind)
    local out = {}
    for _, m in ipairs(rawget(self, "_order")) do
        if m.kind == kind and rawget(self, tables[kind])[m.name] then
            out[#out + 1] = m.name
        end
    end
    return out
end
function Lab:vm_names() return names(self, "vm") end
function Lab:sub_lab_names() return names(self, "sub_lab") end
function Lab:bridge_names() return names(self, "bridge") end
function Lab:members()
    local out = {}
    for _, m in ipairs(rawget(self, "_order")) do
        if rawget(self, tables[m.kind])[m.name] then out[#out + 1] = { kind = m.kind, name = m.name } end
    end
    return out
end

-- Graph-only: the resource is forgotten by this lab, not shut down. A name
-- is tried as a VM, then a bridge, then a sub-lab.
function Lab:remove(x)
    for _, key in ipairs({ "_vms", "_bridges", "_labs" }) do
        local t = rawget(self, key)
        for n, v in pairs(t) do
            if n == x or v == x then
                t[n] = nil
                local inc = P.included[v]
                local owned = not (inc and inc[self])
                local res = rawget(self, "_resources")
                for i = #res, 1, -1 do
                    if res[i].obj == v then table.remove(res, i) end
                end
                -- moved (lab:include, then remove from the lab that made
                -- it): it is now a lab's that still holds it
                for lab, k in pairs(owned and inc or {}) do
                    if rawget(lab, k)[n] == v then
                        inc[lab] = nil
                        if key ~= "_labs" then lab:_register(v, 5) end
                        break
                    end
                end
                return
            end
        end
    end
end

-- resource -> {lab that included it = its table there}: where its close
-- goes when the lab that owns it lets it go (Lab:remove)
P.included = setmetatable({}, { __mode = "k" })

-- lab:include(resource or {resources}): a VM, bridge or lab made elsewhere
-- becomes a member of this lab too (its lookups, names, boot/shutdown and
-- snapshot), under the naming rules of lab:vm. It still closes with the
-- scope that made it; `sub:include(x)` then `provium:remove(x)` moves it.
local function include_one(self, x)
    local kind, name, key
    if getmetatable(x) == C.vm_mt then
        kind, name, key = "vm", x:name(), "_vms"
    elseif getmetatable(x) == Lab then
        if x == self then error("provium:include: a lab cannot include itself", 3) end
        kind, name, key = "sub_lab", rawget(x, "_name"), "_labs"
    elseif getmetatable(x) == P.Bridge then
        kind, name, key = "bridge", rawget(x, "_name"), "_bridges"
    else
        error("provium:include: expected a VM, a bridge or a lab (or an array of them), got " ..
            (type(x) == "table" and "a table" or type(x)), 3)
    end
    if rawget(self, key)[name] == x then return end
    local ok, err = pcall(check_name, self, name, "provium:include")
    if not ok then P.rethrow(err, 3) end
    rawget(self, key)[name] = x
    local order = rawget(self, "_order")
    order[#order + 1] = { kind = kind, name = name }
    P.included[x] = P.included[x] or setmetatable({}, { __mode = "k" })
    P.included[x][self] = key
end

function Lab:include(x)
    if getmetatable(self) ~= Lab then error("provium:include: call it with a colon (provium:include(...))", 2) end
    if type(x) == "table" and getmetatable(x) == nil and P.is_array(x) then
        for _, one in ipairs(x) do include_one(self, one) end
    else
        include_one(self, x)
    end
end

function Lab:boot()
    for _, n in ipairs(self:vm_names()) do
        local vm = rawget(self, "_vms")[n]
        if vm:state() == "created" then vm:boot() end
    end
    return self
end

local function each_vm(self, method)
    for _, n in ipairs(self:vm_names()) do
        local vm = rawget(self, "_vms")[n]
        vm[method](vm)
    end
end
function Lab:shutdown() each_vm(self, "shutdown") end
function Lab:pause() each_vm(self, "pause") end
function Lab:resume() each_vm(self, "resume") end

-- provium:claim{memory=, cpus=}: what the file's VMs need at once (cpus
-- omitted is 0). The runner reads it from the source before the file starts
-- (docs/running.md); here it is checked against what was reserved. One
-- claim per lab: a second errors. A claim in a test body is that test's
-- (isolated: the next test may claim again).
function Lab:claim(t)
    if type(t) ~= "table" then error("provium:claim: expected a table {memory=, cpus=}", 2) end
    if rawget(self, "_claim") then error("provium:claim: claim already taken", 2) end
    for k in pairs(t) do
        if k ~= "memory" and k ~= "cpus" then
            error(("provium:claim: unknown key `%s` (memory, cpus)"):format(tostring(k)), 2)
        end
    end
    if t.cpus ~= nil and math.type(t.cpus) ~= "integer" then
        error("provium:claim: cpus must be a whole number of vCPUs", 2)
    end
    local ok, err = pcall(C.claim, t.memory, t.cpus or 0)
    if not ok then P.rethrow(err, 2) end
    rawset(self, "_claim", { memory = t.memory, cpus = t.cpus or 0 })
end

-- lab:barrier(name, count, timeout?): waits until count files of the run
-- have called it with that name (docs/labs.md). The runner keeps the
-- barriers; this file's process only waits for its answer.
function Lab:barrier(name, count, timeout)
    if getmetatable(self) ~= Lab then error("provium:barrier: call it with a colon (provium:barrier(...))", 2) end
    if type(name) ~= "string" or name == "" then
        error("provium:barrier: name must be a non-empty string, got " .. type(name), 2)
    end
    if math.type(count) ~= "integer" or count < 1 or count > 64 then
        error("provium:barrier: count must be a whole number of files from 1 to 64, got " .. tostring(count), 2)
    end
    local secs = P.duration(timeout == nil and 60 or timeout, "provium:barrier: timeout", 2)
    local ok, err = pcall(C.barrier, name, count, secs)
    if not ok then P.rethrow(err, 2) end
end

-- provium:depends_on_file(path): a host file the fixture's cache key
-- follows (docs/fixtures.md). The key is made from the source before the
-- fixture runs, which reads literal paths only; at run time the call only
-- checks its argument.
function Lab:depends_on_file(path)
    if type(path) ~= "string" or path == "" then
        error("depends_on_file: path must be a non-empty string, got " .. type(path), 2)
    end
end

-- Every VM booted anywhere in this lab and its parents (for failure excerpts).
function Lab:_all_vms(out)
    out = out or {}
    for _, n in ipairs(self:vm_names()) do out[#out + 1] = rawget(self, "_vms")[n] end
    for _, sub in pairs(rawget(self, "_labs")) do sub:_all_vms(out) end
    return out
end

provium = P.new_lab("provium", nil)
P.root = provium

-- LEGACY: provium.create(profile) -> an unbooted VM with a generated name.
local created = 0
function Lab.create(a, b)
    local profile = getmetatable(a) == Lab and b or a
    created = created + 1
    return P.root:vm("vm" .. created, profile or "default")
end

-- LEGACY: provium.shutdown_all(): every booted VM of the file (its root lab,
-- the running test's, their sub-labs) shuts down.
function Lab.shutdown_all()
    local scope = rawget(_G, "provium")
    local vms = P.root:_all_vms(scope ~= P.root and getmetatable(scope) == Lab and scope:_all_vms() or nil)
    for _, vm in ipairs(vms) do
        local st = vm:state()
        if st == "booted" or st == "paused" then
            local ok, err = pcall(vm.shutdown, vm)
            if not ok then P.rethrow(err, 2) end
        end
    end
end
