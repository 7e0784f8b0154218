-- File handles and directory operations (docs/files.md).
local C = _provium_c
local P = _provium
local fs = C.fs
local V = C.vm_mt.__index

local CHUNK = 64 * 1024
local STREAM = 1024 * 1024 -- push_file / pull_file piece size: bounded memory

local File = {}
File.__index = File
P.File = File

local bits = fs.open_bits -- the wire's OpenMode bits, from C

-- The most bytes read_all and pull_file take unless opts.max_size says
-- otherwise (docs/files.md): a guest cannot make the host hold or store
-- more than asked.
local READ_MAX = fs.read_max_default

local function max_size(opts, what, level)
    if opts == nil then return READ_MAX end
    if type(opts) ~= "table" then error(("%s: opts must be a table"):format(what), level + 1) end
    local m = opts.max_size
    if m == nil then return READ_MAX end
    if math.type(m) ~= "integer" or m < 0 then
        error(("%s: max_size must be a non-negative integer number of bytes, got %s"):format(what, tostring(opts.max_size)), level + 1)
    end
    return m
end

local function too_big(what, path, max)
    return ("%s: %s: larger than max_size (%d bytes); pass {max_size = N} to read more"):format(what, path, max)
end

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
    if b & (bits.read | bits.write | bits.append) == 0 then
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

-- file:read_all({max_size=}?) -> the rest of the file
function File:read_all(opts)
    local h = live(self, 2)
    local max = max_size(opts, "file:read_all", 2)
    local parts, n = {}, 0
    while true do
        local s = op(2, fs.read, self.vm, h, math.min(CHUNK, max - n + 1))
        if s == "" then break end
        n = n + #s
        if n > max then error(too_big("file:read_all", self.path, max), 2) end
        parts[#parts + 1] = s
    end
    return table.concat(parts)
end

function File:write(data)
    local h = live(self, 2)
    if type(data) ~= "string" then error("file:write: data must be a string", 2) end
    return op(2, fs.write, self.vm, h, data)
end

local whences = fs.whence

function File:seek(offset, whence)
    local h = live(self, 2)
    local w = whences[whence or "set"]
    if not w then error(("seek: whence must be set/cur/end, got `%s`"):format(tostring(whence)), 2) end
    if math.type(offset) ~= "integer" then error("seek: offset must be an integer", 2) end
    return op(2, fs.seek, self.vm, h, offset, w)
end

function File:tell()
    return op(2, fs.seek, self.vm, live(self, 2), 0, whences.cur)
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
    op(2, fs.mkdir, self, path, opts.perm or 0x1ed, opts.parents and true or false)
end

function V:unlink(path) op(2, fs.unlink, self, path) end
function V:rename(from, to) op(2, fs.rename, self, from, to) end

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

-- vm:pull_file(guest_path, host_path, {max_size=}?): the guest file,
-- streamed to the host; past max_size the host file is removed and the call
-- fails.
function V:pull_file(guest, host, opts)
    if type(host) ~= "string" or type(guest) ~= "string" then
        error("pull_file: guest and host paths must be strings", 2)
    end
    local max = max_size(opts, "pull_file", 2)
    if host:sub(1, 1) ~= "/" then host = caller_dir(2) .. "/" .. host end
    local h = op(2, fs.open, self, guest, bits.read, 0)
    local out, err = io.open(host, "wb")
    if not out then pcall(fs.close, self, h) error("pull_file: " .. err, 2) end
    local n = 0
    while true do
        local ok, s = pcall(fs.read, self, h, math.min(STREAM, max - n + 1))
        if ok and n + #s > max then ok, s = false, too_big("pull_file", guest, max) end
        if not ok then out:close() os.remove(host) pcall(fs.close, self, h) error(s, 2) end
        if s == "" then break end
        n = n + #s
        out:write(s)
    end
    out:close()
    op(2, fs.close, self, h)
end
