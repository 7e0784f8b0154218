-- RunResult methods and vm:run's call shapes.
local C = _provium_c
local P = _provium

local R = {}
C.runresult_mt.__index = R

function R:ok()
    return self.status == "exited" and self.exit_code == 0
end

local signames = { [1] = "SIGHUP", [2] = "SIGINT", [3] = "SIGQUIT", [4] = "SIGILL",
    [6] = "SIGABRT", [7] = "SIGBUS", [8] = "SIGFPE", [9] = "SIGKILL", [10] = "SIGUSR1",
    [11] = "SIGSEGV", [12] = "SIGUSR2", [13] = "SIGPIPE", [14] = "SIGALRM", [15] = "SIGTERM",
    [17] = "SIGCHLD", [18] = "SIGCONT", [19] = "SIGSTOP", [28] = "SIGWINCH" }
P.signames = signames

local function describe(r)
    if r.status == "signalled" then
        return ("killed by signal %d (%s)"):format(r.signal or 0, signames[r.signal] or "?")
    elseif r.status == "timed_out" then
        return "timed out (killed)"
    end
    return "exit code " .. tostring(r.exit_code)
end

local function clip(s)
    s = s or ""
    if #s > 4096 then s = "..." .. s:sub(-4096) end
    return s
end

function R:assert_ok(msg)
    if self:ok() then return self end
    local text = ("%scommand failed: %s\n--- stdout ---\n%s\n--- stderr ---\n%s"):format(
        msg and (msg .. ": ") or "", describe(self), clip(self.stdout), clip(self.stderr))
    error(text, 2)
end

-- The first line of stdout, trimmed (a single-value query).
function R:row()
    local line = (self.stdout or ""):match("^[^\n]*") or ""
    return (line:gsub("^%s+", ""):gsub("%s+$", ""))
end

R.__tostring = nil
C.runresult_mt.__tostring = function(r)
    return ("RunResult(%s)"):format(describe(r))
end

local V = C.vm_mt.__index

-- The call shapes of vm:run and vm:run_async -> argv, opts for C.run:
-- ("sh string", opts?) | ("prog", {"arg", ...}) |
-- ("prog", {args = {...}, env =, cwd =, stdin =, timeout =}) | ({"prog", ...}, opts?)
function P.run_args(what, cmd, a2)
    local argv, opts
    if type(cmd) == "table" then
        if not P.is_array(cmd) or #cmd == 0 then
            error(what .. ": an argv table must be a non-empty array of strings", 3)
        end
        argv, opts = { table.unpack(cmd) }, a2 or {}
    elseif type(cmd) == "string" then
        if a2 == nil then
            argv, opts = { "/bin/sh", "-c", cmd }, {}
        elseif type(a2) ~= "table" then
            error(what .. ": second argument must be a table (args array or opts), got " .. type(a2), 3)
        elseif P.is_array(a2) and next(a2) ~= nil then
            argv, opts = { cmd, table.unpack(a2) }, {}
        else
            opts = a2
            if opts[1] ~= nil then
                error(what .. ": do not mix positional arguments with opts; use args = {...}", 3)
            end
            if opts.args ~= nil then
                if type(opts.args) ~= "table" or not P.is_array(opts.args) then
                    error(what .. ": opts.args must be an array of strings", 3)
                end
                argv = { cmd, table.unpack(opts.args) }
            else
                argv = { "/bin/sh", "-c", cmd }
            end
        end
    else
        error(what .. ": command must be a string or an argv table, got " .. type(cmd), 3)
    end
    local o = {}
    for k, v in pairs(opts) do
        if k == "timeout" then
            o.timeout = P.duration(v, what .. ": opts.timeout", 3)
        elseif k == "timeout_ms" then
            if math.type(v) ~= "integer" or v < 0 then
                error(what .. ": opts.timeout_ms must be a non-negative integer", 3)
            end
            o.timeout = v / 1000
        elseif k == "env" or k == "cwd" or k == "stdin" or k == "env_clear" then
            o[k] = v
        elseif k == "pty" then
            o.pty = P.pty_size(v, what, 4)
        elseif k ~= "args" then
            error(("%s: unknown option `%s` (known: args, env, env_clear, cwd, stdin, pty, timeout, timeout_ms)"):format(what, tostring(k)), 3)
        end
    end
    return argv, o
end

-- opts.pty: true (24 rows of 80 columns) or {rows =, cols =} -> {rows, cols};
-- false or nil -> nil
function P.pty_size(v, what, level)
    if v == true then return { rows = 24, cols = 80 } end
    if not v then return nil end
    if type(v) ~= "table" then
        error(("%s: opts.pty must be true or {rows = N, cols = N}, got %s"):format(what, type(v)), level)
    end
    for k in pairs(v) do
        if k ~= "rows" and k ~= "cols" then
            error(("%s: opts.pty: unknown key `%s` (rows, cols)"):format(what, tostring(k)), level)
        end
    end
    local size = { rows = v.rows or 24, cols = v.cols or 80 }
    for _, k in ipairs({ "rows", "cols" }) do
        local n = size[k]
        if math.type(n) ~= "integer" or n < 1 or n > 65535 then
            error(("%s: opts.pty.%s must be an integer from 1 to 65535, got %s"):format(what, k, tostring(n)), level)
        end
    end
    return size
end

-- An error raised by a C primitive, reported at the caller's line.
function P.rethrow(err, level)
    error((tostring(err):gsub("^%[provium%]/%w+%.lua:%d+: ", "")), level + 1)
end

function V:run(cmd, a2)
    local argv, o = P.run_args("vm:run", cmd, a2)
    local ok, r = pcall(C.run, self, argv, o)
    if not ok then P.rethrow(r, 2) end
    return r
end
