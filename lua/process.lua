-- vm:run_async and Process (docs/processes.md), the agent's Tail streams
-- (tail_file, fd_stream, file:tail_stream, process streams),
-- vm:syscall_async and the resource accessors (docs/processes.md,
-- docs/streams.md).
local C = _provium_c
local P = _provium
local V = C.vm_mt.__index
local proc = C.proc

local live = P.live

-- Tail: a stream the agent feeds (a file, a descriptor, a process's output).
local Tail = setmetatable({}, { __index = P.Stream })
Tail.__index = Tail
Tail.__close = P.Stream.close
P.Tail = Tail

function Tail:_recv(t)
    return proc.recv(self.conn, t)
end

function Tail:_close()
    proc.close(self.conn)
end

-- StreamMeta: what the stream follows and where it was opened.
function Tail:meta()
    return { kind = self.kind, detail = self.detail, creation_site = self.site,
             test_name = self.test_name }
end

local function new_tail(vm, kind, detail, level, ...)
    local ok, conn = pcall(proc.tail, vm, ...)
    if not ok then P.rethrow(conn, level + 1) end
    local scope = rawget(_G, "provium")
    local name = getmetatable(scope) == P.Lab and rawget(scope, "_name") or nil
    return P.new_stream(Tail, { kind = kind, detail = detail, closed_msg = "stream closed",
        vm = vm, conn = conn, test_name = name and name:match("^test:(.*)") })
end

-- vm:tail_file(path, {start = "end" | "beginning" | "start" | offset}) -> Tail.
-- A negative offset counts back from the end of the file.
function V:tail_file(path, opts)
    if type(path) ~= "string" then error("tail_file: path must be a string", 2) end
    opts = opts or {}
    for k in pairs(opts) do
        if k ~= "start" then error(("tail_file: unknown option `%s` (known: start)"):format(tostring(k)), 2) end
    end
    local start, offset, from_end = opts.start == nil and "end" or opts.start, 0, false
    if start == "end" then
        from_end = true
    elseif start == "beginning" or start == "start" then
        offset = 0
    elseif type(start) == "number" and start == start and math.abs(start) ~= math.huge then
        offset = math.tointeger(start < 0 and math.ceil(start) or math.floor(start))
        from_end = offset < 0
    else
        error(('tail_file: start must be "end", "beginning", "start" or a finite number of bytes, got %s')
            :format(tostring(start)), 2)
    end
    return new_tail(self, "tail_file", path, 2, "path", path, offset, from_end)
end

-- vm:fd_stream(fd | File) -> Tail over an agent descriptor (a File's fd(), or
-- one a syscall returned), from its current offset
function V:fd_stream(f)
    if getmetatable(f) == P.File then f = f:fd() end
    if math.type(f) ~= "integer" or f < 0 then
        error("fd_stream: expected a File or a descriptor number, got " .. tostring(f), 2)
    end
    return new_tail(self, "fd_stream", f, 2, "fd", f)
end

-- file:tail_stream() -> Tail of the file's path from the file's cursor on
function P.File:tail_stream()
    if not self.path then
        error("file:tail_stream needs the source path; opened via wrap() not wrap_with_path()", 2)
    end
    local pos = self:tell()
    return new_tail(self.vm, "file_tail_stream", self.path, 2, "path", self.path, pos, false)
end

-- Signals by name (case-insensitive, with or without SIG) or number.
local signals = { hup = 1, int = 2, quit = 3, kill = 9, usr1 = 10, usr2 = 12, pipe = 13,
    alrm = 14, term = 15, chld = 17, cont = 18, stop = 19, winch = 28 }

local function signo(sig, what)
    if sig == nil then return 15 end
    if math.type(sig) == "integer" then
        if sig < 1 or sig > 64 then error(("%s: signal %d is out of range"):format(what, sig), 3) end
        return sig
    end
    if type(sig) ~= "string" then
        error(("%s: a signal is a name or a number, got %s"):format(what, type(sig)), 3)
    end
    local n = tonumber(sig)
    if math.type(n) == "integer" then return signo(n, what) end
    local s = signals[sig:lower():gsub("^sig", "")]
    if not s then error(("unknown signal name `%s`"):format(sig), 3) end
    return s
end
P.signo = signo

local Process = {}
Process.__index = Process
P.Process = Process

-- vm:run_async(cmd, opts?) -> Process: vm:run's call shapes and options,
-- except timeout (use proc:wait(timeout))
function V:run_async(cmd, a2)
    local argv, o = P.run_args("vm:run_async", cmd, a2)
    if o.timeout then
        error("vm:run_async: timeout is not supported here; use proc:wait(timeout)", 2)
    end
    local ok, h, pid = pcall(proc.spawn, self, argv, o)
    if not ok then P.rethrow(h, 2) end
    local p = setmetatable({ vm = self, h = h, first_pid = pid, stdin_closed = false }, Process)
    local scope = rawget(_G, "provium")
    if getmetatable(scope) == P.Lab then scope:_register(p, 2) end
    live[p] = self
    return p
end

local function call(level, fn, ...)
    local ok, r = pcall(fn, ...)
    if not ok then P.rethrow(r, level + 1) end
    return r
end

-- wait(timeout?) -> RunResult. At the timeout the agent SIGKILLs the process
-- (status "timed_out"). After a wait the process is consumed.
function Process:wait(timeout)
    if self.result then return self.result end
    if timeout == 0 then
        error("proc:wait: a timeout of 0 would kill the process at once; poll with proc:status() instead", 2)
    end
    local t = timeout == nil and 0 or P.duration(timeout, "proc:wait: timeout", 2)
    self.result = call(2, proc.wait, self.vm, self.h, t)
    live[self] = nil
    return self.result
end

local function send(p, sig, what)
    local n = signo(sig, what)
    if p.result then return end
    call(3, proc.signal, p.vm, p.h, n)
end

-- kill(sig?): to the process group; SIGTERM by default. A no-op once consumed.
function Process:kill(sig)
    send(self, sig, "proc:kill")
end

function Process:signal(sig)
    if sig == nil then error("proc:signal: which signal? (e.g. \"usr1\")", 2) end
    send(self, sig, "proc:signal")
end

-- status() -> {running, pid, status = "running"|"exited"|"signalled"|"timed_out",
-- exit_code, signal, stdout_bytes, stderr_bytes}; never blocks
function Process:status()
    local r = self.result
    if r then
        return { running = false, pid = self.first_pid, status = r.status, exit_code = r.exit_code,
                 signal = r.signal, stdout_bytes = #r.stdout, stderr_bytes = #r.stderr }
    end
    return call(2, proc.status, self.vm, self.h)
end

function Process:pid()
    if self.result then return self.first_pid end
    return call(2, proc.status, self.vm, self.h).pid
end

function Process:handle()
    return self.h
end

-- stdin_write(data) -> bytes accepted (queued by the agent, written as the
-- process reads)
function Process:stdin_write(data)
    if type(data) ~= "string" then error("proc:stdin_write: data must be a string", 2) end
    if self.stdin_closed then error("proc:stdin_write: stdin is closed", 2) end
    if self.result then error("proc:stdin_write: the process has been waited for", 2) end
    return call(2, proc.stdin, self.vm, self.h, data, false)
end

-- resize(rows, cols): the window size of its terminal (opts.pty); the
-- terminal's foreground process group gets SIGWINCH
function Process:resize(rows, cols)
    if self.result then error("proc:resize: the process has been waited for", 2) end
    call(2, proc.resize, self.vm, self.h, rows, cols)
end

function Process:close_stdin()
    if self.stdin_closed or self.result then self.stdin_closed = true return end
    call(2, proc.stdin, self.vm, self.h, "", true)
    self.stdin_closed = true
end

local function output_stream(p, which, kind)
    if p.result then
        error(("proc:%s: the process has been waited for; its output is in the RunResult")
            :format(kind:gsub("^proc_", "")), 3)
    end
    return new_tail(p.vm, kind, p.h, 3, "proc", p.h, which)
end

-- stdout_stream() / stderr_stream() -> Tail: the output so far, then as it comes
function Process:stdout_stream() return output_stream(self, 1, "proc_stdout_stream") end
function Process:stderr_stream() return output_stream(self, 2, "proc_stderr_stream") end

-- close(): SIGTERM, then up to 2 s for it to end before the agent SIGKILLs
-- it. A no-op once consumed; runs at scope end.
function Process:close()
    if self.result then return end
    live[self] = nil
    if not P.reachable(self.vm) then
        self.result = false
        return
    end
    pcall(proc.signal, self.vm, self.h, 15)
    local ok, r = pcall(proc.wait, self.vm, self.h, 2)
    self.result = ok and r or false
end
Process.__close = Process.close

-- vm:syscall_async(nr, spec) -> a pending call; :await(timeout?) gives what
-- vm:syscall gives. The call runs on its own agent thread meanwhile.
local Pending = {}
Pending.__index = Pending

function V:syscall_async(nr, ...)
    local ok, r = pcall(P.syscall_args, nr, ...)
    if not ok then error((r:gsub("^vm:syscall", "vm:syscall_async")), 2) end
    local pend = call(2, C.syscall_start, self, nr, r.args, r.bufs, r.ptrs, r.nested)
    return setmetatable({ pend = pend, vm = self }, Pending)
end

function Pending:await(timeout)
    if self.res then return self.res end
    local t = timeout == nil and 0 or P.duration(timeout, "syscall_async: await timeout", 2)
    local ok, ret, err, out = pcall(C.syscall_await, self.pend, t)
    if not ok then P.rethrow(ret, 2) end
    if ret == nil then
        error(("syscall_async: no result within %gs (the call is still running in the guest; await again)")
            :format(t), 2)
    end
    self.res = { ret = ret, result = ret, errno = err, out_bufs = out }
    return self.res
end

-- Accessors (docs/processes.md): what the test holds open in the agent.
local function count(vm, pred)
    local n = 0
    for obj, owner in pairs(live) do
        if P.vm_of(owner) == vm and pred(obj) then n = n + 1 end
    end
    return n
end

function V:open_file_count()
    return count(self, function(o) return getmetatable(o) == P.File end)
end

-- Tails and console streams
function V:open_stream_count()
    return count(self, function(o) return o.kind ~= nil end)
end

-- Booted, with no process running, stream or file open, or call in flight.
function V:is_quiescent()
    return self:state() == "booted" and count(self, function() return true end) == 0
        and proc.inflight(self) == 0
end
