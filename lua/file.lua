-- File handles and directory operations (reference §7.6, §10; docs/files.md).
local C = _provium_c
local P = _provium
local fs = C.fs
local V = C.vm_mt.__index

local CHUNK = 64 * 1024
local STREAM = 1024 * 1024 -- push_file / pull_file piece size: bounded memory

local File = {}
File.__index = File
P.File = File

local bits = { read = 1, write = 2, create = 4, truncate = 8, append = 16, exclusive = 32 }

-- vm:open_file(path, {read=, write=, create=, truncate=, append=, exclusive=, perm=}) -> File
function V:open_file(path, mode)
    if type(path) ~= "string" then error("open_file: path must be a string", 2) end
    if type(mode) ~= "table" then
        error("open_file: mode must be a table such as {read = true}, got " .. type(mode), 2)
    end
    local b = 0
    for k, v in pairs(mode) do
        if bits[k] then
            if v then b = b | bits[k] end
        elseif k ~= "perm" then
            error(("open_file: unknown mode key `%s` (read, write, create, truncate, append, exclusive, perm)"):format(tostring(k)), 2)
        end
    end
    if b & (1 | 2 | 16) == 0 then
        error("open_file: the mode needs at least one of read, write or append (e.g. {read = true})", 2)
    end
    local perm = mode.perm or 0x1a4
    local ok, h = pcall(fs.open, self, path, b, perm)
    if not ok then error(h, 2) end
    local f = setmetatable({ vm = self, handle = h, path = path }, File)
    P.live[f] = self
    local scope = rawget(_G, "provium")
    if getmetatable(scope) == P.Lab then scope:_register(f, 3) end
    return f
end

local function live(f, level)
    if not f.handle then error("file is closed", level + 1) end
    return f.handle
end

local function op(level, fn, ...)
    local ok, r = pcall(fn, ...)
    if not ok then error(r, level + 1) end
    return r
end

function File:read(n)
    local h = live(self, 2)
    if math.type(n) ~= "integer" or n < 0 then error("file:read: n must be a non-negative integer", 2) end
    return op(2, fs.read, self.vm, h, n)
end

function File:read_all()
    local h = live(self, 2)
    local parts = {}
    while true do
        local s = op(2, fs.read, self.vm, h, CHUNK)
        if s == "" then break end
        parts[#parts + 1] = s
    end
    return table.concat(parts)
end

function File:write(data)
    local h = live(self, 2)
    if type(data) ~= "string" then error("file:write: data must be a string", 2) end
    return op(2, fs.write, self.vm, h, data)
end

local whences = { set = 0, cur = 1, ["end"] = 2 }

function File:seek(offset, whence)
    local h = live(self, 2)
    local w = whences[whence or "set"]
    if not w then error(("seek: whence must be set/cur/end, got `%s`"):format(tostring(whence)), 2) end
    if math.type(offset) ~= "integer" then error("seek: offset must be an integer", 2) end
    return op(2, fs.seek, self.vm, h, offset, w)
end

function File:tell()
    return op(2, fs.seek, self.vm, live(self, 2), 0, 1)
end

function File:fd()
    return self.handle or 0
end

function File:close()
    local h = self.handle
    if not h then return end
    self.handle = nil
    P.live[self] = nil
    -- a VM that is gone took its files with it
    if P.reachable(self.vm) then op(2, fs.close, self.vm, h) end
end

File.__close = File.close
File.__tostring = function(f) return ("File(%s%s)"):format(f.path, f.handle and "" or ", closed") end

-- vm:listdir(path) -> {{name=, entry_type=}, ...}, sorted by name
function V:listdir(path)
    local t = op(2, fs.listdir, self, path)
    table.sort(t, function(a, b) return a.name < b.name end)
    return t
end

-- vm:mkdir(path, {parents=, perm=})
function V:mkdir(path, opts)
    opts = opts or {}
    op(2, fs.path_op, self, "mkdir", path, opts.perm or 0x1ed, opts.parents and true or false)
end

function V:unlink(path) op(2, fs.path_op, self, "unlink", path) end
function V:rename(from, to) op(2, fs.path_op, self, "rename", from, to) end

-- The directory of the Lua file that called (level counted from here).
local function caller_dir(level)
    local src = debug.getinfo(level + 1, "S").source
    local file = src:sub(1, 1) == "@" and src:sub(2) or "."
    return file:match("^(.*)/[^/]*$") or "."
end

-- vm:push_file(host_path, guest_path, opts?): streamed in pieces; a relative
-- host path is relative to the file that makes the call.
function V:push_file(host, guest, opts)
    if type(host) ~= "string" or type(guest) ~= "string" then
        error("push_file: host and guest paths must be strings", 2)
    end
    if host:sub(1, 1) ~= "/" then host = caller_dir(2) .. "/" .. host end
    local f, err = io.open(host, "rb")
    if not f then error("push_file: " .. err, 2) end
    local first = true
    while true do
        local piece = f:read(STREAM)
        if not piece and not first then break end
        local ok, e = pcall(fs.write_chunk, self, guest, piece or "", not first, (opts or {}).mode)
        if not ok then f:close() error(e, 2) end
        first = false
        if not piece then break end
    end
    f:close()
end

-- vm:pull_file(guest_path, host_path): the guest file, streamed to the host.
function V:pull_file(guest, host)
    if type(host) ~= "string" or type(guest) ~= "string" then
        error("pull_file: guest and host paths must be strings", 2)
    end
    if host:sub(1, 1) ~= "/" then host = caller_dir(2) .. "/" .. host end
    local h = op(2, fs.open, self, guest, 1, 0)
    local out, err = io.open(host, "wb")
    if not out then pcall(fs.close, self, h) error("pull_file: " .. err, 2) end
    while true do
        local ok, s = pcall(fs.read, self, h, STREAM)
        if not ok then out:close() pcall(fs.close, self, h) error(s, 2) end
        if s == "" then break end
        out:write(s)
    end
    out:close()
    op(2, fs.close, self, h)
end
