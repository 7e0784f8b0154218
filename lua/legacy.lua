-- The seed-compatible VM and Worker methods (docs/legacy.md): vm:exec with
-- its string helpers, vm:json, vm:dmesg, vm:mount_vfs, vm:wait_until, the
-- buffer forms of syscall and ioctl with their raw return, background jobs,
-- and boot's `files = {[guest] = host}` map. Each is a thin layer over the
-- methods of today, so it works wherever those do (a Worker too).
local C = _provium_c
local P = _provium
local V = C.vm_mt.__index
local W = C.worker.mt.__index

local L = {}

local function call(level, fn, ...)
    local ok, r, r2 = pcall(fn, ...)
    if not ok then P.rethrow(r, level + 1) end
    return r, r2
end

-- exec results: stdout.value, stdout.contains(s), stdout.starts_with(s),
-- stdout.trim(). The outputs stay real strings (so every HEAD function and
-- operator takes them); the helpers come from the string metatable, which
-- all strings share. It is installed the first time a seed-compatible
-- method returns output, so a file that never calls one keeps the plain
-- string library (and its speed). Called with a colon, s:contains(x) works
-- too.
local helpers = {
    value = function(s) return s end,
    contains = function(s, x) return s:find(tostring(x), 1, true) ~= nil end,
    starts_with = function(s, x) x = tostring(x) return s:sub(1, #x) == x end,
    trim = function(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end,
}
local installed = false
function P.legacy_strings()
    if installed then return end
    installed = true
    local lib = string
    getmetatable("").__index = function(s, k)
        local f = lib[k]
        if f ~= nil then return f end
        local h = helpers[k]
        if h == nil then return nil end
        if k == "value" then return s end
        return function(a, b)
            -- s.contains(x) or s:contains(x)
            if a == s and b ~= nil then return h(s, b) end
            return h(s, a)
        end
    end
end

-- vm:exec(cmd) -> {ok, exit_code, stdout, stderr}
function L:exec(cmd)
    P.legacy_strings()
    local r = call(2, self.run, self, cmd)
    return { ok = r:ok(), exit_code = r.exit_code, stdout = r.stdout, stderr = r.stderr }
end

-- vm:json(cmd) -> the command's stdout, decoded as JSON
function L:json(cmd)
    local r = call(2, self.run, self, cmd)
    if not r:ok() then
        error(("vm:json: `%s` failed (%s): %s"):format(tostring(cmd), tostring(r),
            (r.stderr or ""):sub(1, 400)), 2)
    end
    local ok, v = pcall(json.decode, r.stdout)
    if not ok then
        error(("vm:json: `%s` did not print JSON: %s"):format(tostring(cmd), tostring(v)), 2)
    end
    return v
end

-- vm:dmesg(pattern?) -> the kernel log, or its lines that contain pattern
-- (a plain substring). Read from the log the agent streams to the host, so
-- the guest needs no dmesg or grep.
function L:dmesg(pattern)
    if pattern ~= nil and type(pattern) ~= "string" then
        error("vm:dmesg: pattern must be a string, got " .. type(pattern), 2)
    end
    P.legacy_strings()
    local log = call(2, P.vm_of(self).kernel_log, P.vm_of(self))
    if pattern == nil then return log end
    local out = {}
    for line in log:gmatch("[^\n]+") do
        if line:find(pattern, 1, true) then out[#out + 1] = line .. "\n" end
    end
    return table.concat(out)
end

-- vm:mount_vfs(): proc, sysfs, securityfs and devtmpfs where they belong,
-- each mounted only if nothing is mounted there yet. A kernel without
-- securityfs is not an error.
local vfs = {
    { "proc", "/proc" }, { "sysfs", "/sys" }, { "devtmpfs", "/dev" },
    { "securityfs", "/sys/kernel/security", optional = true },
}
local function mounted(vm)
    local ok, text = pcall(vm.read_file, vm, "/proc/self/mounts")
    local set = {}
    for target in (ok and text or ""):gmatch("%S+ (%S+) [^\n]*") do set[target] = true end
    return set
end
function L:mount_vfs()
    local sys = P.sys
    local have = mounted(self)
    for _, m in ipairs(vfs) do
        local fstype, target = m[1], m[2]
        if not have[target] then
            if not call(2, self.exists, self, target) then call(2, self.mkdir, self, target, { parents = true }) end
            local r = call(2, self.syscall, self, sys.mount, { args = { 0, 0, 0, 0, 0 },
                bufs = { fstype .. "\0", target .. "\0", fstype .. "\0" }, ptrs = { 0, 1, 2 } })
            if r.ret ~= 0 and not (m.optional and (r.errno == P.errno.ENODEV or r.errno == P.errno.ENOENT)) then
                error(("vm:mount_vfs: mounting %s on %s: errno %d"):format(fstype, target, r.errno), 2)
            end
            if target == "/proc" then have = mounted(self) end
        end
    end
end

-- vm:wait_until(fn, {timeout = 10, interval = 0.5, desc =}) -> fn's value;
-- fn gets the VM
function L:wait_until(fn, opts)
    if type(fn) ~= "function" then
        error("vm:wait_until: predicate must be a function, got " .. type(fn), 2)
    end
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    if o.interval == nil then o.interval = 0.5 end
    return call(2, wait_until, function() return fn(self) end, o)
end

-- The raw return of the seeds' syscall forms: the result, or -errno.
local function raw(r)
    if r.errno ~= 0 then return -r.errno end
    return r.ret
end

-- {[arg index] = data} -> the sorted indices, the buffers in that order
local function buffers(what, map, level)
    if type(map) ~= "table" then
        error(("%s: buffers must be a table {[arg index] = data}, got %s"):format(what, type(map)), level + 1)
    end
    local idx = {}
    for k, v in pairs(map) do
        if math.type(k) ~= "integer" or k < 0 or k > 5 then
            error(("%s: buffer key `%s` is not an argument index 0 to 5"):format(what, tostring(k)), level + 1)
        end
        if type(v) ~= "string" then
            error(("%s: buffer %d must be a string, got %s"):format(what, k, type(v)), level + 1)
        end
        idx[#idx + 1] = k
    end
    table.sort(idx)
    local bufs, pos = {}, {}
    for i, k in ipairs(idx) do bufs[i], pos[k] = map[k], i end
    return idx, bufs, pos
end

-- The arguments after the buffers: the syscall's, with a placeholder where
-- a buffer's address goes (filled with 0 up to the highest buffer index).
local function arguments(what, idx, level, ...)
    local args = { ... }
    if #args > 6 then error(what .. ": at most 6 arguments", level + 1) end
    for i = #args + 1, (idx[#idx] or -1) + 1 do args[i] = 0 end
    for i = 1, #args do
        if math.type(args[i]) ~= "integer" then
            error(("%s: argument %d must be an integer, got %s"):format(what, i - 1, tostring(args[i])), level + 1)
        end
    end
    return args
end

-- One pointer spec: {buf_idx, ptr_offset, data_len, output, data}, by name
-- or by position (ioctl_buf's have no buf_idx).
local function spec(what, s, i, with_buf, level)
    if type(s) ~= "table" then error(("%s: pointer spec %d must be a table"):format(what, i), level + 1) end
    local n = with_buf and 0 or -1
    local f = {
        buf_idx = with_buf and (s.buf_idx or s[1]) or nil,
        ptr_offset = s.ptr_offset or s[n + 2],
        data_len = s.data_len or s.buf_len or s[n + 3],
        output = s.output, data = s.data,
    }
    if f.output == nil then f.output = s[n + 4] end
    if f.data == nil then f.data = s[n + 5] end
    if f.data ~= nil and type(f.data) ~= "string" then
        error(("%s: pointer spec %d: data must be a string"):format(what, i), level + 1)
    end
    if f.data_len == nil and f.data then f.data_len = #f.data end
    if math.type(f.ptr_offset) ~= "integer" or math.type(f.data_len) ~= "integer" or f.data_len < 0 then
        error(("%s: pointer spec %d needs integer ptr_offset and data_len"):format(what, i), level + 1)
    end
    if f.data and #f.data > f.data_len then
        error(("%s: pointer spec %d: %d bytes of data do not fit in data_len %d"):format(what, i, #f.data, f.data_len), level + 1)
    end
    return f
end

-- The seeds' syscall_ptr over vm:syscall's table form -> raw return, the
-- buffers in index order, then the output sub-buffers in spec order.
local function syscall_ptr(self, what, level, nr, map, ptrs, ...)
    if math.type(nr) ~= "integer" then
        error(("%s: the syscall number must be an integer, got %s"):format(what, tostring(nr)), level + 1)
    end
    local idx, bufs, pos = buffers(what, map, level + 1)
    local args = arguments(what, idx, level + 1, ...)
    local nested, outs = {}, {}
    if ptrs ~= nil and type(ptrs) ~= "table" then
        error(("%s: pointer specs must be an array of tables, got %s"):format(what, type(ptrs)), level + 1)
    end
    for i, s in ipairs(ptrs or {}) do
        local f = spec(what, s, i, true, level + 1)
        local parent = pos[f.buf_idx]
        if not parent then
            error(("%s: pointer spec %d: buf_idx %s is not one of the buffers"):format(what, i, tostring(f.buf_idx)), level + 1)
        end
        bufs[#bufs + 1] = (f.data or "") .. ("\0"):rep(f.data_len - #(f.data or ""))
        nested[#nested + 1] = { parent = parent, child = #bufs, offset = f.ptr_offset }
        if f.output then outs[#outs + 1] = #bufs end
    end
    local r = call(level + 1, self.syscall, self, nr, { args = args, bufs = bufs, ptrs = idx, nested = nested })
    local ret = { raw(r) }
    for i = 1, #idx do ret[#ret + 1] = r.out_bufs[i] end
    for _, b in ipairs(outs) do ret[#ret + 1] = r.out_bufs[b] end
    return table.unpack(ret)
end

-- The methods below tail-call this, so its caller is the user's code: the
-- errors of syscall_ptr are raised there.
local function run_ptr(self, what, nr, map, ptrs, ...)
    local out = table.pack(syscall_ptr(self, what, 2, nr, map, ptrs, ...))
    return table.unpack(out, 1, out.n)
end

-- vm:syscall_buf(nr, arg_index, data, args...) -> raw return, the buffer after
function L:syscall_buf(nr, i, data, ...)
    if math.type(i) ~= "integer" then
        error("vm:syscall_buf: the buffer's argument index must be an integer 0 to 5, got " .. tostring(i), 2)
    end
    return run_ptr(self, "vm:syscall_buf", nr, { [i] = data }, nil, ...)
end

-- vm:syscall_bufs(nr, {[arg index] = data}, args...) -> raw return, buffers...
function L:syscall_bufs(nr, map, ...)
    return run_ptr(self, "vm:syscall_bufs", nr, map, nil, ...)
end

-- vm:syscall_ptr(nr, bufs, {{buf_idx=, ptr_offset=, data_len=, output=, data=}}, args...)
function L:syscall_ptr(nr, map, ptrs, ...)
    return run_ptr(self, "vm:syscall_ptr", nr, map, ptrs, ...)
end

-- vm:ioctl_buf(fd, cmd, struct, {{ptr_offset=, buf_len=, output=, data=}})
-- -> raw return, the struct after, the output sub-buffers
function L:ioctl_buf(fd, cmd, struct, specs)
    if math.type(fd) ~= "integer" or math.type(cmd) ~= "integer" then
        error("vm:ioctl_buf: fd and cmd must be integers", 2)
    end
    if type(struct) ~= "string" then error("vm:ioctl_buf: struct must be a string, got " .. type(struct), 2) end
    if specs ~= nil and type(specs) ~= "table" then
        error("vm:ioctl_buf: pointer specs must be an array of tables, got " .. type(specs), 2)
    end
    local ptrs = {}
    for i, s in ipairs(specs or {}) do
        local f = spec("vm:ioctl_buf", s, i, false, 2)
        f.buf_idx = 2
        ptrs[i] = f
    end
    return run_ptr(self, "vm:ioctl_buf", P.sys.ioctl, { [2] = struct }, ptrs, fd, cmd, 0)
end

-- Background jobs: vm:run_async underneath, by id per VM or Worker.
local jobs = setmetatable({}, { __mode = "k" })

-- vm:background(cmd) -> {id, pid}
function L:background(cmd)
    local p = call(2, self.run_async, self, cmd)
    jobs[self] = jobs[self] or {}
    jobs[self][p.h] = p
    return { id = p.h, pid = p.first_pid }
end

local function job(self, j, what)
    local id = type(j) == "table" and j.id or j
    local p = jobs[self] and jobs[self][id]
    if not p then error(("%s: no background job %s on this VM"):format(what, tostring(id)), 3) end
    return p
end

-- vm:job_wait(job, timeout?) -> {exit_code, stdout, stderr, running, ok}.
-- Timeout 0 polls; none waits for the end. A job still running at the
-- timeout is left running ({running = true}), not killed.
function L:job_wait(j, timeout)
    local p = job(self, j, "vm:job_wait")
    P.legacy_strings()
    if timeout ~= nil then
        local limit = P.duration(timeout, "vm:job_wait: timeout", 2)
        local deadline = C.now() + limit
        while call(2, p.status, p).running do
            if C.now() >= deadline then
                return { running = true, stdout = "", stderr = "" }
            end
            C.sleep(math.min(0.05, math.max(deadline - C.now(), 0.001)))
        end
    end
    local r = call(2, p.wait, p)
    return { running = false, ok = r:ok(), exit_code = r.exit_code, signal = r.signal,
             stdout = r.stdout, stderr = r.stderr }
end

-- vm:job_kill(job): SIGKILL to the job's process group; job_wait then
-- gives its end
function L:job_kill(j)
    local p = job(self, j, "vm:job_kill")
    call(2, p.kill, p, "KILL")
end

for k, f in pairs(L) do
    V[k], W[k] = f, f
end

-- The seeds' boot option files = {[guest path] = host path}: each host file
-- is read (a relative path from the directory of the file that boots) and
-- goes to the guest with mode 0755, so a program is runnable.
function P.legacy_boot_opts(opts, level)
    if type(opts) ~= "table" or type(opts.files) ~= "table" or P.is_array(opts.files) then
        return opts
    end
    local info = debug.getinfo(level + 1, "S")
    local src = info and info.source or ""
    local dir = (src:sub(1, 1) == "@" and src:sub(2) or "."):match("^(.*)/[^/]*$") or "."
    local o, files = {}, {}
    for k, v in pairs(opts) do o[k] = v end
    for _, guest in ipairs(P.sorted_keys(opts.files)) do
        local host = opts.files[guest]
        if type(guest) ~= "string" or type(host) ~= "string" then
            error("boot opts: files must map guest paths to host paths (strings)", level + 1)
        end
        local path = host:sub(1, 1) == "/" and host or dir .. "/" .. host
        local f, err = io.open(path, "rb")
        if not f then error(("boot opts: files[%q]: %s"):format(guest, err), level + 1) end
        files[#files + 1] = { path = guest, content = f:read("a"), mode = tonumber("755", 8) }
        f:close()
    end
    o.files = files
    return o
end

local boot = V.boot
function V:boot(opts, ...)
    return boot(self, P.legacy_boot_opts(opts, 2), ...)
end
