-- Kernel modules in the guest: vm:insmod, vm:rmmod, vm:modprobe (docs/modules.md).
local C = _provium_c
local P = _provium
local V = C.vm_mt.__index

local GUEST_DIR = "/tmp/.provium-modules"

local function basename(p) return p:match("([^/]+)$") end

-- The kernel's own words about a failure: its new log lines.
local function kernel_says(vm, before)
    pcall(vm.ping, vm)
    local log = vm:kernel_log():sub(before + 1)
    local lines = {}
    for l in log:gmatch("[^\n]+") do lines[#lines + 1] = l end
    local from = math.max(1, #lines - 4)
    return #lines > 0 and ("\n" .. table.concat(lines, "\n", from)) or ""
end

local function load(vm, guest_path, params, level)
    local sys, E = P.sys, P.errno
    local before = #vm:kernel_log()
    local f = vm:open_file(guest_path, { read = true })
    local flags = guest_path:match("%.ko$") and 0 or 4 -- MODULE_INIT_COMPRESSED_FILE
    local r = vm:syscall(sys.finit_module, { args = { f:fd(), 0, flags },
        bufs = { (params or "") .. "\0" }, ptrs = { 1 } })
    f:close()
    if r.ret ~= 0 and r.errno ~= E.EEXIST then
        local name = "E" .. r.errno
        for k, v in pairs(E) do if v == r.errno then name = k break end end
        error(("vm `%s`: insmod %s: %s%s"):format(vm:name(), basename(guest_path), name,
            kernel_says(vm, before)), level + 1)
    end
    return r.errno ~= E.EEXIST
end

-- vm:insmod(path, params?): a .ko on the host (pushed first) or in the guest.
function V:insmod(path, params)
    if type(path) ~= "string" then error("vm:insmod: path must be a string", 2) end
    if params ~= nil and type(params) ~= "string" then error("vm:insmod: params must be a string such as \"debug=1\"", 2) end
    local guest = path
    local f = io.open(path, "rb")
    if f then
        f:close()
        self:mkdir(GUEST_DIR, { parents = true })
        guest = GUEST_DIR .. "/" .. basename(path)
        self:push_file(path, guest)
        P.symbols.note_module(self, path) -- its frames' file:line (docs/splats.md)
    end
    if not load(self, guest, params, 2) then
        error(("vm `%s`: insmod %s: EEXIST: the module is already loaded"):format(self:name(), basename(path)), 2)
    end
end

-- vm:rmmod(name)
function V:rmmod(name)
    if type(name) ~= "string" then error("vm:rmmod: name must be a string", 2) end
    local before = #self:kernel_log()
    local r = self:syscall(P.sys.delete_module, { args = { 0, 0x800 --[[O_NONBLOCK]] },
        bufs = { name:gsub("-", "_") .. "\0" }, ptrs = { 0 } })
    if r.ret ~= 0 then
        local ename = "E" .. r.errno
        for k, v in pairs(P.errno) do if v == r.errno then ename = k break end end
        error(("vm `%s`: rmmod %s: %s%s"):format(self:name(), name, ename, kernel_says(self, before)), 2)
    end
end

-- vm:modprobe(name, params?): the module and its dependencies from the
-- profile's modules tree, resolved on the host, loaded in order.
function V:modprobe(name, params)
    local dir = self:modules_dir()
    if not dir then
        error(("vm `%s`: modprobe %s: no modules tree for this VM's kernel (set `modules` in its profile)"):format(self:name(), name), 2)
    end
    local ok, paths = pcall(C.kmod_order, dir, name)
    if not ok then error(("vm `%s`: modprobe: %s"):format(self:name(), paths), 2) end
    self:mkdir(GUEST_DIR, { parents = true })
    for i, rel in ipairs(paths) do
        local guest = GUEST_DIR .. "/" .. basename(rel)
        local mod = basename(rel):gsub("%.ko.*$", ""):gsub("-", "_")
        if not self:exists("/sys/module/" .. mod) then
            self:push_file(dir .. "/" .. rel, guest)
            load(self, guest, i == #paths and params or nil, 2)
        end
    end
end
