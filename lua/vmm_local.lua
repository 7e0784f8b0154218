-- --vmm local (docs/cli.md): VMs that boot nothing, for runs of the
-- framework alone. A VM goes through its states (boot, pause, shutdown ...)
-- without QEMU; every operation that needs a guest raises. Loaded last, so
-- it replaces the methods the other files of the prelude defined.
if os.getenv("PROVIUM_VMM") ~= "local" then return end
local C = _provium_c
local V = C.vm_mt.__index

local states = setmetatable({}, { __mode = "k" })
local c_state = V.state

-- What works without a guest: names, states, the (empty) logs, and the
-- accessors the framework reads after every test.
local keep = { name = true, profile = true, console_log = true, kernel_log = true, splats = true,
    open_file_count = true, open_stream_count = true, is_quiescent = true, boot_seconds = true,
    gdb_port = true, cid = true, modules_dir = true }

local function refuse(vm, op, level)
    error(("vm `%s`: %s: --vmm local boots no kernel, so guest operations fail; run with --vmm qemu")
        :format(vm:name(), op), level + 1)
end

for k, f in pairs(V) do
    if type(f) == "function" and not keep[k] then
        V[k] = function(self) refuse(self, k, 2) end
    end
end

function V:state() return states[self] or c_state(self) end

local function need(vm, want, op)
    local st = vm:state()
    if st ~= want then
        error(("vm `%s`: %s() needs a %s VM, but it is %s"):format(vm:name(), op, want, st), 3)
    end
end

function V:boot(opts)
    if opts ~= nil and type(opts) ~= "table" then
        error("vm:boot: opts must be a table, got " .. type(opts), 2)
    end
    local st = self:state()
    if st == "booted" or st == "paused" then
        error(("vm `%s`: boot() on a VM that is already %s"):format(self:name(), st), 2)
    end
    states[self] = "booted"
    return self
end

function V:pause() need(self, "booted", "pause") states[self] = "paused" end
function V:resume() need(self, "paused", "resume") states[self] = "booted" end
function V:reset() need(self, "booted", "reset") end
local function stop(self)
    if states[self] then states[self] = "shutdown" end
end
V.shutdown, V.kill, V.power_button, V.close = stop, stop, stop, stop
C.vm_mt.__close = stop

-- The console has no socket to read.
local refused = setmetatable({}, { __index = function(_, k)
    if k == "close" then return function() end end
    return function() error("console:" .. k .. ": VMM does not expose a console socket", 2) end
end })
function V:console() return refused end
