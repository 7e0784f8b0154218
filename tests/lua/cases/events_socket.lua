-- Run by tests/lua/events_socket.test.lua with --events-socket
-- $PROVIUM_TEST_SOCK: while the run lasts, its socket is there, mode 0600
-- whatever the umask, and a second run refuses to take it over.
local meta = require("lib.meta")
local sock = os.getenv("PROVIUM_TEST_SOCK")

local function sh(cmd)
    local p = io.popen(cmd .. " 2>&1; echo \"@@EXIT=$?\"")
    local out = p:read("a")
    p:close()
    return out
end

test("the socket is a socket, mode 0600", function(t)
    t:assert_eq(sh("stat -c '%a %F' " .. meta.quote(sock)), "600 socket\n@@EXIT=0\n")
end)

test("a second run refuses it while this one listens", function(t)
    local out = sh(("cd %s && %s --events-socket %s lua/cases/pass.lua"):format(
        meta.quote(meta.tests), meta.quote(meta.bin), meta.quote(sock)))
    t:assert_contains(out, "--events-socket " .. sock .. ": another process listens on it")
    t:assert_contains(out, "@@EXIT=2\n")
end)
