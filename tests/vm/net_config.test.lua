-- The agent's NetConfig and NetRoute operations (docs/architecture.md, "Network interfaces"),
-- on one VM: a NIC hot-plugged through QMP (the test-only _provium_c.qmp) is found by its MAC,
-- addressed and brought up; its driver loads from the overlay's modules.net on first use;
-- routes through a gateway of its subnet are added, replaced and deleted.
local meta = require("lib.meta")
local C = _provium_c
local vm = provium:vm("n", "default"):boot()
local MAC = "52:54:00:12:34:56"

local function qmp(cmd, args)
    return C.qmp(vm, json.encode({ execute = cmd, arguments = args }))
end

test("a VM without a NIC loads no network module at boot", function(t)
    t:assert(vm:exists("/.provium/modules.net"), "the list is in the overlay")
    t:assert(not vm:exists("/sys/module/virtio_net"), "virtio_net is not loaded")
end)

test("a hot-plugged NIC is found by its MAC, addressed and brought up", function(t)
    qmp("netdev_add", { type = "user", id = "n0" })
    -- behind the VM's hot-plug bridge: q35's root bus cannot hot-plug
    qmp("device_add", { driver = "virtio-net-pci", netdev = "n0", mac = MAC, id = "nic0", bus = "hp" })
    local ifname = C.net.config(vm, MAC, "10.0.2.15", 24, true, 20)
    t:assert(ifname:match("^e[nt]"), "an Ethernet name: " .. ifname)
    t:assert_eq(vm:read_file("/sys/class/net/" .. ifname .. "/address"), MAC .. "\n")
    local v4 = vm:run({ "ip", "-4", "addr", "show", ifname }).stdout
    t:assert_contains(v4, "inet 10.0.2.15/24")
    t:assert_contains(v4, "brd 10.0.2.255")
    t:assert_contains(vm:run({ "ip", "link", "show", ifname }).stdout, ",UP")
    t:assert_contains(vm:run({ "ip", "link", "show", "lo" }).stdout, ",UP")
    wait_until(function()
        return vm:run({ "ip", "-6", "addr", "show", ifname }).stdout:match("inet6 fe80::")
    end, { timeout = 30, desc = "an IPv6 link-local address on " .. ifname })
    -- QEMU's user network answers ICMP to its gateway itself (no host socket):
    -- frames really flow through the NIC
    wait_until(function()
        return vm:run({ "ping", "-c1", "-W2", "10.0.2.2" }).exit_code == 0
    end, { timeout = 30, desc = "a ping of QEMU's gateway 10.0.2.2" })
end)

test("a second call replaces the address; down and up again", function(t)
    local ifname = C.net.config(vm, MAC, "10.0.3.7", 16, true, 5)
    local v4 = vm:run({ "ip", "-4", "addr", "show", ifname }).stdout
    t:assert_contains(v4, "inet 10.0.3.7/16")
    t:assert(not v4:find("10.0.2.15", 1, true), "the old address is gone:\n" .. v4)
    t:assert_eq(C.net.config(vm, MAC:upper(), nil, nil, false, 5), ifname)
    local link = vm:run({ "ip", "link", "show", ifname }).stdout
    t:assert(not link:find(",UP", 1, true), "down:\n" .. link)
    t:assert_eq(vm:run({ "ip", "-4", "addr", "show", ifname }).stdout, "", "no address left")
    C.net.config(vm, MAC, "10.0.2.15", 24, true, 5)
    t:assert_contains(vm:run({ "ip", "-4", "addr", "show", ifname }).stdout, "inet 10.0.2.15/24")
end)

-- The guest's IPv4 routes through gateway gw ("default via 10.0.2.2 dev eth0 ..."), one a line.
local function routes_via(gw)
    local out = {}
    for line in vm:run({ "ip", "-4", "route", "show" }).stdout:gmatch("[^\n]+") do
        if line:find(" via " .. gw .. " ", 1, true) then out[#out + 1] = line end
    end
    return out
end

local function defaults()
    local out = {}
    for line in vm:run({ "ip", "-4", "route", "show" }).stdout:gmatch("[^\n]+") do
        if line:match("^default ") then out[#out + 1] = line end
    end
    return out
end

test("routes through a gateway are added, replaced and deleted", function(t)
    local ifname = C.net.config(vm, MAC, "10.0.2.15", 24, true, 5)
    t:assert_eq(#defaults(), 0, "no default route yet")
    C.net.route(vm, "0.0.0.0", 0, "10.0.2.2")
    local d = defaults()
    t:assert_eq(#d, 1, table.concat(d, "\n"))
    t:assert_contains(d[1], "default via 10.0.2.2 dev " .. ifname)
    -- again with another gateway: the route is replaced, not doubled
    C.net.route(vm, "0.0.0.0", 0, "10.0.2.3")
    d = defaults()
    t:assert_eq(#d, 1, "exactly one default route:\n" .. table.concat(d, "\n"))
    t:assert_contains(d[1], "default via 10.0.2.3 dev " .. ifname)
    -- a subnet's route
    C.net.route(vm, "10.99.0.0", 16, "10.0.2.2", false)
    local r = routes_via("10.0.2.2")
    t:assert_eq(#r, 1, table.concat(r, "\n"))
    t:assert_contains(r[1], "10.99.0.0/16 via 10.0.2.2 dev " .. ifname)
    t:assert_contains(vm:run({ "ip", "-4", "route", "get", "10.99.7.7" }).stdout, "via 10.0.2.2")
    -- deleted; deleting it again, or through another gateway, is ESRCH
    C.net.route(vm, "10.99.0.0", 16, "10.0.2.2", true)
    t:assert_eq(#routes_via("10.0.2.2"), 0, "the route is gone")
    local err = t:assert_raises(function() C.net.route(vm, "10.99.0.0", 16, "10.0.2.2", true) end)
    t:assert_contains(err, "vm `n`: net_route: ESRCH: delete route 10.99.0.0/16 via 10.0.2.2: "
        .. "no such route")
    err = t:assert_raises(function() C.net.route(vm, "0.0.0.0", 0, "10.0.2.2", true) end)
    t:assert_contains(err, "ESRCH: delete default route via 10.0.2.2: no such route")
    t:assert_eq(#defaults(), 1, "the default route via 10.0.2.3 stays")
    -- a gateway outside every subnet: refused, the default route left as it was
    err = t:assert_raises(function() C.net.route(vm, "0.0.0.0", 0, "192.168.7.1") end)
    t:assert_contains(err, "vm `n`: net_route: ENETUNREACH: add default route via 192.168.7.1: ")
    t:assert_contains(err, "(no interface that is up has 192.168.7.1 in its subnet)")
    d = defaults()
    t:assert_eq(#d, 1, table.concat(d, "\n"))
    t:assert_contains(d[1], "default via 10.0.2.3")
    C.net.route(vm, "0.0.0.0", 0, "10.0.2.3", true)
    t:assert_eq(#defaults(), 0, "the default route is gone")
end)

test("route arguments are checked before anything is sent", function(t)
    local function raises(...)
        local args = table.pack(...)
        return t:assert_raises(function() C.net.route(vm, table.unpack(args, 1, args.n)) end)
    end
    t:assert_contains(raises("10.99.0", 16, "10.0.2.2"),
        "destination must be like 10.99.2.0, got \"10.99.0\"")
    t:assert_contains(raises("10.99.0.0", 33, "10.0.2.2"), "prefix must be 0..32")
    t:assert_contains(raises("10.99.0.0", -1, "10.0.2.2"), "prefix must be 0..32")
    t:assert_contains(raises("10.99.0.0", nil, "10.0.2.2"), "number expected")
    t:assert_contains(raises("10.99.1.0", 16, "10.0.2.2"),
        "10.99.1.0 has bits set past the prefix /16 (the network is 10.99.0.0)")
    t:assert_contains(raises("10.0.2.2", 0, "10.0.2.2"),
        "10.0.2.2 has bits set past the prefix /0 (the network is 0.0.0.0)")
    t:assert_contains(raises("10.99.0.0", 16, "10.0.2.256"),
        "gateway must be like 10.99.1.254, got \"10.0.2.256\"")
    t:assert_contains(raises("10.99.0.0", 16, nil), "string expected")
    t:assert_contains(raises("10.99.0.0", 16, "0.0.0.0"), "0.0.0.0 is no gateway")
    t:assert_contains(raises("10.99.0.0", 16, "10.0.2.2", "yes"), "boolean expected")
    t:assert_eq(#routes_via("10.0.2.2"), 0, "nothing was added")
end)

test("an unknown MAC fails after the wait, naming the MAC", function(t)
    local t0 = C.now()
    local err = t:assert_raises(function()
        C.net.config(vm, "52:54:00:00:00:99", "10.0.9.9", 24, true, 0.5)
    end)
    t:assert_contains(err, "vm `n`: no network interface with MAC 52:54:00:00:00:99 appeared in "
        .. "500 ms (is virtio_net in the kernel or in the modules?)")
    local took = C.now() - t0
    t:assert(took >= 0.5 and took < 10, "failed after the wait: " .. took .. " s")
    vm:ping() -- the agent still answers
end)

test("arguments are checked before anything is sent", function(t)
    local function raises(...)
        local args = table.pack(...)
        return t:assert_raises(function() C.net.config(vm, table.unpack(args, 1, args.n)) end)
    end
    t:assert_contains(raises("52:54:00:12:34", "10.0.0.1", 24, true, 1),
        "MAC must be six hex bytes like 52:54:00:12:34:56, got \"52:54:00:12:34\"")
    t:assert_contains(raises("52-54-00-12-34-56", "10.0.0.1", 24, true, 1), "MAC must be")
    t:assert_contains(raises("52:54:00:12:34:5g", "10.0.0.1", 24, true, 1), "MAC must be")
    t:assert_contains(raises("01:00:5e:00:00:01", "10.0.0.1", 24, true, 1), "multicast")
    t:assert_contains(raises(MAC, "10.0.0.256", 24, true, 1),
        "IPv4 address must be like 10.99.1.2, got \"10.0.0.256\"")
    t:assert_contains(raises(MAC, "10.0.0.1", 33, true, 1), "prefix must be 0..32")
    t:assert_contains(raises(MAC, "10.0.0.1", nil, true, 1), "number expected")
    t:assert_contains(raises(MAC, nil, 24, true, 1), "a prefix without an address")
    t:assert_contains(raises(MAC, "10.0.0.1", 24, "yes", 1), "boolean expected")
    t:assert_contains(raises(MAC, "10.0.0.1", 24, true, -1), "wait must be 0..3600 seconds")
end)

test("a modules tree without virtio_net boots; NetConfig then says what is missing", function(t)
    local modules = vm:modules_dir()
    if not modules then t:skip("the default kernel has no modules directory") end
    local kernel = meta.provium({ "kernel", "path" }):match("^([^\n]*)\n")
    -- the same tree, its modules.dep without virtio_net (a kernel built without it)
    local d = meta.tmpdir()
    local m = d .. "/modules"
    os.execute(("mkdir %s && ln -s %s/* %s/ && rm %s/modules.dep"):format(meta.quote(m),
        meta.quote(modules), meta.quote(m), meta.quote(m)))
    local dep = assert(io.open(modules .. "/modules.dep")):read("a")
    meta.write(m .. "/modules.dep", (dep:gsub("[^\n]*virtio_net%.ko:[^\n]*\n", "")))
    meta.write(d .. "/k.test.lua", [[
test("no virtio_net", function(t)
    local vm = provium:vm("a", "default", { cold = true }):boot()
    t:assert_eq(vm:read_file("/.provium/modules.net"), "")
    _provium_c.qmp(vm, '{"execute": "netdev_add", "arguments": {"type": "user", "id": "n0"}}')
    _provium_c.qmp(vm, '{"execute": "device_add", "arguments": {"driver": "virtio-net-pci", ' ..
        '"netdev": "n0", "mac": "52:54:00:12:34:57", "bus": "hp"}}')
    local err = t:assert_raises(function()
        _provium_c.net.config(vm, "52:54:00:12:34:57", "10.0.2.15", 24, true, 1)
    end)
    t:assert_contains(err, "vm `a`: no network interface with MAC 52:54:00:12:34:57 appeared " ..
        "in 1000 ms (is virtio_net in the kernel or in the modules?)")
end)
]])
    local out, code = meta.provium({ "k.test.lua" }, { cwd = d,
        env = { PROVIUM_KERNEL = kernel, PROVIUM_MODULES = m, PROVIUM_CACHE = d .. "/cache" } })
    t:assert_eq(code, 0, out)
    meta.rmdir(d)
end)
