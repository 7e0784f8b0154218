-- vm:syscall and vm:ioctl call shapes (docs/syscalls.md).
local C = _provium_c
local P = _provium
local V = C.vm_mt.__index

P.sys = C.sys
P.errno = C.errno

local function result(ret, err, out)
    return { ret = ret, result = ret, errno = err, out_bufs = out }
end

local function call(vm, nr, args, bufs, ptrs, nested)
    local ok, ret, err, out = pcall(C.syscall, vm, nr, args, bufs, ptrs, nested)
    if not ok then error(ret, 3) end
    return ret, err, out
end

-- The arguments of vm:syscall / vm:syscall_async -> {args, bufs, ptrs, nested}
-- for C.syscall (0-based indices there).
function P.syscall_args(nr, ...)
    if math.type(nr) ~= "integer" then
        error("vm:syscall: the syscall number must be an integer (provium.sys.<name>), got "
            .. tostring(nr), 0)
    end
    local spec = ...
    if type(spec) ~= "table" then
        if select("#", ...) > 6 then error("vm:syscall: at most 6 arguments", 0) end
        return { args = { ... }, bufs = {}, ptrs = {}, nested = {} }
    end
    if select("#", ...) > 1 then
        error("vm:syscall: the table form takes no further arguments", 0)
    end
    local r = { args = spec.args or {}, bufs = spec.bufs or {}, ptrs = {}, nested = {} }
    -- ptrs[i] is the 0-based argument slot that receives the address of bufs[i]
    for i, slot in ipairs(spec.ptrs or {}) do
        r.ptrs[#r.ptrs + 1] = { buf = i - 1, slot = slot }
    end
    -- nested: the address of bufs[child] is written into bufs[parent] at offset
    -- (1-based buffer indices, like the bufs table)
    for i, n in ipairs(spec.nested or {}) do
        if type(n) ~= "table" or math.type(n.parent) ~= "integer" or math.type(n.child) ~= "integer" then
            error(("vm:syscall: nested[%d] must be {parent=, child=, offset=} with buffer indices"):format(i), 0)
        end
        r.nested[#r.nested + 1] = { parent = n.parent - 1, child = n.child - 1, offset = n.offset }
    end
    return r
end

-- vm:syscall(nr, a1, ..., a6) | vm:syscall(nr, {args=, bufs=, ptrs=, nested=})
-- -> {ret, result, errno, out_bufs}
function V:syscall(nr, ...)
    local ok, r = pcall(P.syscall_args, nr, ...)
    if not ok then error(r, 2) end
    return result(call(self, nr, r.args, r.bufs, r.ptrs, r.nested))
end

-- vm:ioctl(fd, cmd, data?, opts?) -> {ret, result, out_data, out_bufs}
-- data (a string) is passed by address as the third argument and comes back
-- as out_data. opts.bufs are further buffers; opts.ptr_offsets[i] is the
-- offset inside data that receives the address of opts.bufs[i] (for structs
-- that hold user pointers).
function V:ioctl(fd, cmd, data, opts)
    if math.type(fd) ~= "integer" then error("vm:ioctl: fd must be an integer", 2) end
    if math.type(cmd) ~= "integer" then error("vm:ioctl: cmd must be an integer", 2) end
    opts = opts or {}
    local extra, offs = opts.bufs or {}, opts.ptr_offsets or {}
    if #offs > 0 and data == nil then
        error("vm:ioctl: ptr_offsets point into data, but there is no data", 2)
    end
    if #offs ~= 0 and #offs ~= #extra then
        error(("vm:ioctl: %d ptr_offsets for %d bufs"):format(#offs, #extra), 2)
    end
    local args, bufs, ptrs, nested = { fd, cmd, 0 }, {}, {}, {}
    if data ~= nil then
        if type(data) ~= "string" then error("vm:ioctl: data must be a string", 2) end
        bufs[1] = data
        ptrs[1] = { buf = 0, slot = 2 }
    end
    for i, b in ipairs(extra) do
        bufs[#bufs + 1] = b
        if offs[i] then
            nested[#nested + 1] = { parent = 0, child = #bufs - 1, offset = offs[i] }
        end
    end
    local ret, err, out = call(self, P.sys.ioctl, args, bufs, ptrs, nested)
    local out_bufs = {}
    for i = (data ~= nil and 2 or 1), #out do out_bufs[#out_bufs + 1] = out[i] end
    return { ret = ret, result = ret, errno = err, out_data = data ~= nil and out[1] or nil,
             out_bufs = out_bufs }
end
