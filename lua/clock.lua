-- The guest's clock (docs/vms.md#the-clock). VM-wide: it
-- sets CLOCK_REALTIME, so every process in the guest sees the change.
local C = _provium_c
local P = _provium
local V = C.vm_mt.__index
local OP = C.clock_ops -- the wire's clock operations, from C

local Clock = {}
Clock.__index = Clock

function V:clock()
    return setmetatable({ vm = self }, Clock)
end

local function finite(v, what)
    if type(v) ~= "number" then
        error(("%s: value must be a number, got %s"):format(what, type(v)), 3)
    end
    if v ~= v or v == math.huge or v == -math.huge then
        error(("%s: value must be a finite number (got NaN/inf)"):format(what), 3)
    end
    return v
end

local function call(self, op, ns)
    local ok, r = pcall(C.clock, self.vm, op, ns)
    if not ok then error(r, 3) end
    return r
end

function Clock:get_ns() return call(self, OP.get, 0) end
function Clock:get() return call(self, OP.get, 0) / 1e9 end

function Clock:set(seconds)
    finite(seconds, "clock:set")
    call(self, OP.set, math.floor(seconds * 1e9 + 0.5))
end

function Clock:set_ns(ns)
    if math.type(ns) ~= "integer" then error("clock:set_ns: ns must be an integer", 2) end
    call(self, OP.set, ns)
end

-- advance(seconds): a signed, non-blocking jump of the realtime clock
function Clock:advance(seconds)
    if type(seconds) == "string" then seconds = P.duration(seconds, "clock:advance", 2) end
    finite(seconds, "clock:advance")
    call(self, OP.advance, math.floor(seconds * 1e9 + 0.5))
end

-- sleep(duration): waits on the host (wall time), as long as asked; the
-- guest's clock runs on meanwhile
function Clock:sleep(duration)
    if type(duration) == "number" and (duration ~= duration or duration == math.huge or duration == -math.huge) then
        error("clock:sleep: value must be a finite number (got NaN/inf)", 2)
    end
    C.sleep(P.duration(duration, "clock:sleep", 2))
end
