-- vm:spawn_worker and Worker (docs/workers.md).
-- A worker is another agent process in the guest, with the credentials the
-- test asked for. Every guest operation of a VM is also a worker's: the
-- same functions, given the Worker where they take a VM.
local C = _provium_c
local P = _provium
local V = C.vm_mt.__index
local wk = C.worker

local W = {}
wk.mt.__index = W
P.caps = wk.caps

for _, k in ipairs { "run", "run_async", "read_file", "write_file", "stat", "exists",
    "open_file", "listdir", "mkdir", "unlink", "rename", "push_file", "pull_file",
    "syscall", "syscall_async", "ioctl", "read_mem", "write_mem", "tail_file", "fd_stream",
    "batch" } do
    W[k] = V[k]
end

-- The VM behind a VM or a Worker.
function P.vm_of(x)
    if getmetatable(x) == wk.mt then return (select(3, wk.info(x))) end
    return x
end

local flag = wk.flags -- the wire's credential flags, from C
local known = "uid, gid, groups, caps, no_new_privs, cwd, env, env_clear, thread"

local function bad(msg, ...)
    error("vm:spawn_worker: " .. msg:format(...), 4)
end

local function id(v, what)
    if math.type(v) ~= "integer" or v < 0 or v > 0xfffffffe then
        bad("%s must be a numeric id such as 1000, got %s", what, type(v) == "number" and v or type(v))
    end
    return v
end

local function cap_mask(list)
    if type(list) ~= "table" then bad("caps must be an array of capability names, got %s", type(list)) end
    local mask = 0
    for _, c in ipairs(list) do
        local n = c
        if type(c) == "string" then
            n = wk.caps[c:lower():gsub("^cap_", "")]
            if not n then bad("unknown capability `%s` (names as in capabilities(7): \"net_admin\", \"CAP_SYS_ADMIN\")", c) end
        elseif math.type(c) ~= "integer" or c < 0 or c > 63 then
            bad("caps: `%s` is not a capability name or number", tostring(c))
        end
        mask = mask | (1 << n)
    end
    return mask
end

-- vm:spawn_worker{uid=, gid=, groups=, caps=, no_new_privs=, cwd=, env=, env_clear=} -> Worker
function V:spawn_worker(opts)
    if opts ~= nil and type(opts) ~= "table" then
        error("vm:spawn_worker: opts must be a table, got " .. type(opts), 2)
    end
    opts = opts or {}
    for k in pairs(opts) do
        if not flag[k] and k ~= "cwd" and k ~= "env" and k ~= "thread" then
            error(("vm:spawn_worker: unknown option `%s` (known: %s)"):format(tostring(k), known), 2)
        end
    end
    if opts.thread then
        error("vm:spawn_worker: {thread = true} is not supported: a worker is a separate agent process (docs/workers.md)", 2)
    end
    local flags, groups, env = 0, {}, {}
    for k, f in pairs(flag) do
        if opts[k] ~= nil and opts[k] ~= false then flags = flags | f end
    end
    local uid = opts.uid ~= nil and id(opts.uid, "uid") or 0
    -- gid follows uid unless given
    local gid = opts.gid ~= nil and id(opts.gid, "gid") or uid
    if opts.uid ~= nil then flags = flags | flag.gid end
    if opts.groups ~= nil then
        if not P.is_array(opts.groups) then bad("groups must be an array of numeric ids, got %s", type(opts.groups)) end
        for i, g in ipairs(opts.groups) do groups[i] = id(g, "groups[" .. i .. "]") end
    end
    local caps = opts.caps ~= nil and cap_mask(opts.caps) or 0
    if opts.cwd ~= nil and type(opts.cwd) ~= "string" then bad("cwd must be a string, got %s", type(opts.cwd)) end
    if opts.env ~= nil then
        if type(opts.env) ~= "table" then bad("env must be a table of strings, got %s", type(opts.env)) end
        for _, k in ipairs(P.sorted_keys(opts.env)) do
            if type(k) ~= "string" or k == "" or k:find("=", 1, true) then
                bad("env: `%s` is not a variable name", tostring(k))
            end
            env[#env + 1] = k .. "=" .. tostring(opts.env[k])
        end
    end
    local ok, w = pcall(wk.spawn, self, flags, uid, gid, groups, caps, opts.cwd or "", env)
    if not ok then P.rethrow(w, 2) end
    local scope = rawget(_G, "provium")
    if getmetatable(scope) == P.Lab then scope:_register(w, 4) end
    return w
end
V.spawn = V.spawn_worker

local function call(level, fn, ...)
    local ok, r = pcall(fn, ...)
    if not ok then P.rethrow(r, level + 1) end
    return r
end

function W:handle() return (wk.info(self)) end
function W:pid() return (select(2, wk.info(self))) end
function W:vm() return P.vm_of(self) end
function W:name() return P.vm_of(self):name() end
-- "running", "exited" (it died), "closed", or its VM's state when that is
-- not booted
function W:state() return wk.state(self) end

-- The processes this worker runs that nobody has waited for, oldest first.
local function children(w)
    local ps = {}
    for obj, owner in pairs(P.live) do
        if owner == w and getmetatable(obj) == P.Process then ps[#ps + 1] = obj end
    end
    table.sort(ps, function(a, b) return a.h < b.h end)
    return ps
end

-- kill(sig?): to every process the worker runs (SIGTERM by default)
function W:kill(sig)
    local n = P.signo(sig, "worker:kill")
    call(2, C.proc.signal, self, 0, n)
end

-- join() -> the RunResults of the processes it still ran, oldest first,
-- once all have ended
function W:join()
    local out = {}
    for i, p in ipairs(children(self)) do
        local ok, r = pcall(p.wait, p)
        if not ok then P.rethrow(r, 2) end
        out[i] = r
    end
    return out
end

-- close(): SIGTERM to its processes, up to 2 s for them to end, then the
-- worker ends (and SIGKILLs what is left). Runs at scope end; idempotent.
function W:close()
    if P.reachable(self) then
        pcall(C.proc.signal, self, 0, 15)
        local until_ = C.now() + 2
        for _, p in ipairs(children(self)) do
            local ok, r = pcall(C.proc.wait, self, p.h, math.max(until_ - C.now(), 0.01))
            p.result = ok and r or false
            P.live[p] = nil
        end
    end
    return call(2, wk.close, self)
end
wk.mt.__close = W.close
