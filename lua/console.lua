-- The console (docs/vms.md#the-console) and the stream methods of docs/streams.md.
local C = _provium_c
local P = _provium
local V = C.vm_mt.__index
local con = C.console

-- Stream: a source of chunks with pending bytes. Subtypes give :_recv(t),
-- returning a chunk, nil on timeout, or false at the end.
local Stream = {}
Stream.__index = Stream
P.Stream = Stream

local function timeout_of(t, default, what)
    if t == nil then return default end
    return P.duration(t, what, 3)
end

-- The first *.test.lua / *.fixture.lua frame on the stack.
local function site()
    for level = 3, 40 do
        local info = debug.getinfo(level, "Sl")
        if not info then break end
        local src = info.source or ""
        if src:match("%.test%.lua$") or src:match("%.fixture%.lua$") then
            return { file = src:gsub("^@", ""), line = info.currentline }
        end
    end
end

function P.new_stream(mt, fields)
    fields.pending = ""
    fields.closed = false
    fields.ended = false
    fields.site = site()
    local s = setmetatable(fields, mt)
    P.live[s] = fields.vm
    local scope = rawget(_G, "provium")
    if getmetatable(scope) == P.Lab then scope:_register(s, 1) end
    return s
end

-- next(timeout?) -> the next chunk, or nil at the end or on timeout
function Stream:next(timeout)
    if self.closed then return nil end
    if #self.pending > 0 then
        local p = self.pending
        self.pending = ""
        return p
    end
    if self.ended then return nil end
    local chunk = self:_recv(timeout_of(timeout, 10, self.kind .. ":next"))
    if chunk == false then
        self.ended = true
        return nil
    end
    return chunk
end

-- read_until(pattern, timeout?) -> everything up to and including the plain
-- substring; the rest stays pending
function Stream:read_until(pattern, timeout)
    if self.closed then error(self.closed_msg, 2) end
    local limit = timeout_of(timeout, 10, self.kind .. ":read_until")
    local deadline = C.now() + limit
    while true do
        local s, e = self.pending:find(pattern, 1, true)
        if s then
            local out = self.pending:sub(1, e)
            self.pending = self.pending:sub(e + 1)
            return out
        end
        if self.ended then error("stream EOF", 2) end
        local left = deadline - C.now()
        if left <= 0 then error(("read_until timed out waiting for `%s`"):format(pattern), 2) end
        local chunk = self:_recv(left)
        if chunk == false then
            self.ended = true
        elseif chunk then
            self.pending = self.pending .. chunk
        end
    end
end

function Stream:expect(pattern, timeout)
    local ok, err = pcall(self.read_until, self, pattern, timeout)
    if not ok then error(err, 2) end
end

-- drain(timeout?) -> the chunks that arrive until the stream is quiet for timeout
-- A guest that never stops printing cannot hold it: it also ends after
-- DRAIN_MAX bytes or DRAIN_SECONDS (docs/vms.md#the-console).
local DRAIN_MAX, DRAIN_SECONDS = 64 * 1024 * 1024, 60

function Stream:drain(timeout)
    local quiet = timeout_of(timeout, 0.5, self.kind .. ":drain")
    local out, n, until_ = {}, 0, C.now() + DRAIN_SECONDS
    if #self.pending > 0 then
        out[1] = self.pending
        n = #self.pending
        self.pending = ""
    end
    while not self.closed and not self.ended and n < DRAIN_MAX and C.now() < until_ do
        local chunk = self:_recv(math.min(quiet, math.max(until_ - C.now(), 0)))
        if chunk == false then self.ended = true
        elseif chunk == nil then break
        else
            out[#out + 1] = chunk
            n = n + #chunk
        end
    end
    return out
end

function Stream:eof()
    return self.ended and #self.pending == 0
end

function Stream:creation_site()
    return self.site
end

function Stream:close()
    if self.closed then return end
    self.closed = true
    self.pending = ""
    P.live[self] = nil
    if self._close then self:_close() end
end
Stream.__close = Stream.close

-- ConsoleStream: the bytes the guest prints from now on.
local ConsoleStream = setmetatable({}, { __index = Stream })
ConsoleStream.__index = ConsoleStream
ConsoleStream.__close = Stream.close

local streams = setmetatable({}, { __mode = "k" }) -- vm -> its open ConsoleStream

function ConsoleStream:_recv(t)
    return con.recv(self.conn, t)
end

function ConsoleStream:_close()
    con.close(self.conn)
    streams[self.vm] = nil
end

local Console = {}
Console.__index = Console

function V:console()
    return setmetatable({ vm = self, cursor = 0 }, Console)
end

function Console:read_log()
    return self.vm:console_log()
end

-- expect(pattern, timeout?): waits in the log for the plain substring after
-- the last match (so after a reset it waits for the new boot's output)
function Console:expect(pattern, timeout)
    local limit = P.duration(timeout or 30, "console:expect: timeout", 2)
    local deadline = C.now() + limit
    while true do
        local log = self.vm:console_log()
        local s, e = log:find(pattern, self.cursor + 1, true)
        if s then
            self.cursor = e
            return log:sub(s, e)
        end
        if C.now() >= deadline then
            error(("console:expect: `%s` did not appear within %gs"):format(pattern, limit), 2)
        end
        C.sleep(0.05)
    end
end

-- read() -> ConsoleStream. Read it or close it: while it is open, what the
-- guest prints waits in the socket for you (the log keeps everything anyway).
function Console:read()
    if streams[self.vm] then
        error("console:read: this VM's console already has an open stream (close it first)", 2)
    end
    local ok, conn = pcall(con.connect, self.vm)
    if not ok then error(conn, 2) end
    local s = P.new_stream(ConsoleStream, { kind = "console", closed_msg = "console closed",
        vm = self.vm, conn = conn })
    streams[self.vm] = s
    return s
end

-- write(data, {timeout = seconds | "500ms" | 0}): to the guest's console input
function Console:write(data, opts)
    if type(data) ~= "string" then error("console:write: data must be a string", 2) end
    opts = opts or {}
    if opts.timeout_ms ~= nil then
        error('opts.timeout_ms is not supported (use timeout = "500ms" or timeout = 0.5)', 2)
    end
    local t = opts.timeout == nil and 10 or P.duration(opts.timeout, "console:write: timeout", 2)
    local s = streams[self.vm]
    local conn = s and s.conn
    local own = not conn
    if own then
        local ok, c = pcall(con.connect, self.vm)
        if not ok then error(c, 2) end
        conn = c
    end
    local ok, n = pcall(con.send, conn, data, t, own)
    if own then con.close(conn) end
    if not ok then error(n, 2) end
    return n
end

function Console:close() end
