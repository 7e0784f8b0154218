-- QEMU's gdbstub under --gdb (docs/vms.md#debugging-with-gdb): each VM's on
-- a port of 127.0.0.1 that vm:gdb_port() names, printed as a gdb command
-- line when the VM boots.
local meta = require("lib.meta")

provium:claim { memory = "400M", cpus = 1 }

-- A minimal exchange of GDB's remote protocol on 127.0.0.1:port: `?` (why
-- the target stopped), `qSupported`, then `D` (detach, which lets the guest
-- run on). Prints each reply on a line.
local PY = [[
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=60)
def ask(packet, want=b"$"):
    # the stub may send another stop reply first: read until the answer
    s.sendall(packet)
    d = b""
    while True:
        c = s.recv(4096)
        if not c:
            return d.decode()
        d += c
        i = d.find(want)
        j = d.find(b"#", i)
        if i >= 0 and j >= 0 and len(d) >= j + 3:
            return d.decode()
for p, want in ((b"+$?#3f", b"$"), (b"+$qSupported#37", b"PacketSize="), (b"+$D#44", b"$OK")):
    print(ask(p, want))
s.sendall(b"+")
]]

-- The file the nested run (with --gdb) runs: it talks to its VM's stub.
local INNER = ([[
local PY = %q
test("the stub answers", function(t)
    local vm = provium:vm("a", "default", { memory = "256M" }):boot()
    local port = vm:gdb_port()
    t:assert(math.type(port) == "integer" and port > 0, "a port: " .. tostring(port))
    local p = io.popen("/usr/bin/python3 -c '" .. PY:gsub("'", "'\\''") .. "' " .. port .. " 2>&1")
    local out = p:read("a")
    p:close()
    local stop, supported, detached = out:match("^([^\n]*)\n([^\n]*)\n([^\n]*)\n")
    t:assert(stop and (stop:match("^%%+?%%$S") or stop:match("^%%+?%%$T")), "a stop reply to ?: " .. out)
    t:assert_contains(supported, "PacketSize=", "qSupported: " .. out)
    t:assert_contains(detached, "$OK", "detached: " .. out)
    -- detached, the guest runs on
    t:assert_eq(vm:run("echo up").stdout, "up\n")
    print("PORT=" .. port)
    vm:shutdown()
    t:assert_eq(vm:gdb_port(), nil, "no port once QEMU is gone")
end)
]]):format(PY)

test("--gdb: a stub per VM, its port and the gdb command line", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/gdb.test.lua", INNER)
    local out, code = meta.provium({ "-v", "--gdb", "gdb.test.lua" }, { cwd = d })
    t:assert_eq(code, 0, out)
    local port, path = out:match("provium: vm `a`: gdb %-ex 'target remote :(%d+)' (%S+)")
    t:assert(port, "the command line is printed: " .. out)
    t:assert(path:match("/vmlinux$") or out:match("symbols need a vmlinux"),
        "gdb gets the vmlinux, or is told it needs one: " .. out)
end)

test("without --gdb, no stub", function(t)
    local vm = provium:vm("b", "default", { memory = "256M" }):boot()
    t:assert_eq(vm:gdb_port(), nil)
    t:assert_eq(vm:run("echo up").stdout, "up\n")
end)
