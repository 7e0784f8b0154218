-- --events-socket PATH (docs/events.md#channels): a stale socket is
-- replaced, anything else at PATH is left alone, the socket is 0600 under
-- any umask and is removed at the end only if it is still ours.
local meta = require("lib.meta")

local sh = meta.sh

-- provium with umask 000, so that only provium's own care makes the socket 0600
local function run(sock, case)
    return sh(("cd %s && umask 000 && PROVIUM_TEST_SOCK=%s %s --events-socket %s %s"):format(
        meta.quote(meta.tests), meta.quote(sock), meta.quote(meta.bin), meta.quote(sock), case))
end

local function kind(path)
    return (sh("stat -c %F " .. meta.quote(path)))
end

test("a stale socket is replaced; the run's socket is 0600 and goes at the end", function(t)
    local d = meta.tmpdir()
    local sock = d .. "/ev.sock"
    -- a socket nobody listens on: what a killed run leaves
    sh(("/usr/bin/python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' %s")
        :format(meta.quote(sock)))
    t:assert_eq(kind(sock), "socket\n")
    local out, code = run(sock, "lua/cases/events_socket.lua")
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "PASS lua/cases/events_socket.lua (2 passed")
    t:assert_eq(io.open(sock), nil, "the socket is removed at the end")
end)

test("a file, a directory or a symbolic link at the path is refused and kept", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/notes", "precious\n")
    os.execute("mkdir " .. meta.quote(d .. "/dir") .. " && ln -s notes " .. meta.quote(d .. "/link"))
    for _, name in ipairs({ "notes", "dir", "link" }) do
        local out, code = run(d .. "/" .. name, "lua/cases/pass.lua")
        t:assert_eq(code, 2, out)
        t:assert_contains(out, "--events-socket " .. d .. "/" .. name ..
            ": exists and is not a socket; not replacing it")
    end
    local f = assert(io.open(d .. "/notes"))
    t:assert_eq(f:read("a"), "precious\n")
    f:close()
    t:assert_eq(kind(d .. "/dir"), "directory\n")
    t:assert_eq(kind(d .. "/link"), "symbolic link\n")
end)
