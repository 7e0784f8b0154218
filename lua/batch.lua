-- vm:batch(fn) (docs/processes.md): the operations fn(b)
-- queues go out together and cost one round trip.
local C = _provium_c
local P = _provium
local V = C.vm_mt.__index
local enc = C.batch.batch_encode

local Batch = {}
Batch.__index = Batch

-- Larger writes belong to vm:write_file, which streams them.
local WRITE_MAX = 8 * 1024 * 1024

local function add(b, op, ...)
    local ok, req = pcall(enc, op, ...)
    if not ok then P.rethrow(req, 3) end
    b.ops[#b.ops + 1] = req
end

local function path_arg(what, path)
    if type(path) ~= "string" then error(("b:%s: path must be a string"):format(what), 3) end
end

function Batch:run(cmd, a2)
    local argv, o = P.run_args("b:run", cmd, a2)
    add(self, "run", argv, o)
end

function Batch:read_file(path) path_arg("read_file", path) add(self, "read_file", path) end
function Batch:stat(path) path_arg("stat", path) add(self, "stat", path) end
function Batch:listdir(path) path_arg("listdir", path) add(self, "listdir", path) end
function Batch:unlink(path) path_arg("unlink", path) add(self, "unlink", path) end

function Batch:write_file(path, data)
    path_arg("write_file", path)
    if type(data) ~= "string" then error("b:write_file: data must be a string", 2) end
    if #data > WRITE_MAX then
        error("b:write_file: more than 8 MiB; use vm:write_file, which streams it", 2)
    end
    add(self, "write_file", path, data)
end

function Batch:mkdir(path, opts)
    path_arg("mkdir", path)
    opts = opts or {}
    add(self, "mkdir", path, opts.perm or 0x1ed, opts.parents and true or false)
end

function Batch:rename(from, to)
    path_arg("rename", from)
    path_arg("rename", to)
    add(self, "rename", from, to)
end

-- b:syscall(nr, a1, ..., a6) | b:syscall(nr, {args=, bufs=, ptrs=, nested=}):
-- the shapes of vm:syscall, through the same conversion; the row's value is
-- what vm:syscall returns, out_bufs included
function Batch:syscall(nr, ...)
    local ok, r = pcall(P.syscall_args, nr, ...)
    if not ok then error((r:gsub("^vm:syscall:", "b:syscall:")), 2) end
    add(self, "syscall", nr, r.args, r.bufs, r.ptrs, r.nested)
end

-- vm:batch(function(b) ... end) -> {{ok = value} | {err = message}, ...} in
-- order; a failed operation does not stop the others
function V:batch(fn)
    if type(fn) ~= "function" then error("vm:batch: expected a function(b), got " .. type(fn), 2) end
    local b = setmetatable({ ops = {} }, Batch)
    fn(b)
    if #b.ops == 0 then return {} end
    local ok, r = pcall(C.batch.batch, self, b.ops)
    if not ok then P.rethrow(r, 2) end
    return r
end
