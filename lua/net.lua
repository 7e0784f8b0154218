-- Bridges and NICs (docs/networks.md): which VM is on which bridge, their
-- addresses and names, and the rules of each bridge, kept here and pushed
-- to the switch (_provium_c.net) whenever they or the ports change.
local C = _provium_c
local P = _provium
local net = C.net
local V = C.vm_mt.__index
local Lab = P.Lab

local Bridge = {}
Bridge.__index = Bridge
P.Bridge = Bridge
local Nic = {}
Nic.__index = Nic
P.Nic = Nic

Bridge.__tostring = function(self) return "Bridge(" .. self._name .. ")" end
Nic.__tostring = function(self) return ("Nic(%s on %s)"):format(self._vm_name, self._bridge._name) end

-- Bridge numbers and host numbers make the addresses: bridge B, its Hth VM
-- -> 10.66.B.H/24, MAC 52:54:00:42:B:H.
local bridges_made = 0
local MAX = 250

local function is_vm(x) return getmetatable(x) == C.vm_mt end
local function vm_name(x) return is_vm(x) and x:name() or x end

-- Every bridge a VM userdata is on, by VM: for boot and restore.
local on_bridges = setmetatable({}, { __mode = "k" })

local function running(vm)
    return is_vm(vm) and (vm:state() == "booted" or vm:state() == "paused")
end

function P.new_bridge(name)
    if type(name) ~= "string" or name == "" or not name:match("^[%w_%-]+$") or #name > 63 then
        error(("provium:bridge: the name must be 1-63 letters, digits, `-` or `_` (got %s)")
            :format(type(name) == "string" and ("`" .. name .. "`") or type(name)), 3)
    end
    if bridges_made == MAX then
        error(("provium:bridge: `%s`: a file has at most %d bridges"):format(name, MAX), 3)
    end
    bridges_made = bridges_made + 1
    return setmetatable({
        _name = name, _num = bridges_made, _sw = net.bridge(name),
        _members = {},      -- names, in attach order
        _vm = {},           -- name -> VM userdata, or false (attached by name only)
        _host = {},         -- name -> H, for as long as the bridge lives
        _mac = {},          -- name -> its MAC when not made of B and H (a restored VM's)
        _ifname = {},       -- name -> the guest's interface name, once configured
        _block = {},        -- "from\0to" -> true: directional partitions
        _isolated = {},     -- name -> true
        _down = {},         -- name -> true: a disconnected NIC
        _whole = { latency = 0, loss = 0, bps = 0 },
        _dir = {},          -- "from\0to" -> {latency=, loss=, bps=}
        _routes = {},
        _closed = false,
    }, Bridge)
end

function Bridge:name() return self._name end

local function check_open(self, what)
    if self._closed then error(("bridge:%s: bridge `%s` is closed"):format(what, self._name), 3) end
end

-- The address parts of a member.
local function mac_of(self, name)
    return self._mac[name] or ("52:54:00:42:%02x:%02x"):format(self._num, self._host[name])
end
local function ip_of(self, name)
    return ("10.66.%d.%d"):format(self._num, self._host[name])
end

local function key(a, b) return a .. "\0" .. b end

local function port_of(self, name)
    local vm = self._vm[name]
    if not is_vm(vm) or not running(vm) then return nil end
    return net.port(vm, self._sw)
end

-- Push every rule of the bridge to the switch, for the ports that exist.
function Bridge:_apply()
    if self._closed then return end
    net.reset(self._sw)
    local w = self._whole
    net.impair(self._sw, nil, nil, w.latency, w.loss, w.bps)
    local ports = {}
    for _, n in ipairs(self._members) do ports[n] = port_of(self, n) end
    for n, vm in pairs(self._vm) do
        if not ports[n] and running(vm) then
            -- a detached VM keeps its NIC, its link down
            local p = net.port(vm, self._sw)
            if p then net.flags(p, net.port_flags.DOWN) end
        end
    end
    for n, p in pairs(ports) do
        local f = 0
        if self._down[n] then f = f | net.port_flags.DOWN end
        if self._isolated[n] then f = f | net.port_flags.ISOLATED end
        net.flags(p, f)
    end
    for k in pairs(self._block) do
        local a, b = k:match("^(.-)%z(.*)$")
        if ports[a] and ports[b] then net.block(ports[a], ports[b], true) end
    end
    for k, im in pairs(self._dir) do
        local a, b = k:match("^(.-)%z(.*)$")
        if ports[a] and ports[b] then net.impair(self._sw, ports[a], ports[b], im.latency, im.loss, im.bps) end
    end
end

local function is_member(self, name)
    for _, m in ipairs(self._members) do if m == name then return true end end
    return false
end

-- The bridges vm is on, sorted by name (the guest's eth<N> order at boot).
local function sorted_bridges(vm)
    local list = {}
    for b in pairs(on_bridges[vm] or {}) do
        if not b._closed and b._vm[vm:name()] == vm and is_member(b, vm:name()) then
            list[#list + 1] = b
        end
    end
    table.sort(list, function(x, y) return x._name < y._name end)
    return list
end

-- /etc/hosts of a running VM: every member of every bridge it is on, as
-- <vm>.<bridge>, and as <vm> from the first bridge (by name) that has it.
local function hosts_file(vm)
    local lines = { "127.0.0.1\tlocalhost", "::1\tlocalhost" }
    local bare = {}
    for _, b in ipairs(sorted_bridges(vm)) do
        for _, m in ipairs(b._members) do
            local names = m .. "." .. b._name
            if not bare[m] then
                bare[m] = true
                names = names .. " " .. m
            end
            lines[#lines + 1] = ip_of(b, m) .. "\t" .. names
        end
    end
    return table.concat(lines, "\n") .. "\n"
end

local function write_hosts(vm)
    if vm:state() == "booted" then
        vm:mkdir("/etc", { parents = true })
        vm:write_file("/etc/hosts", hosts_file(vm))
    end
end

function Bridge:_update_hosts()
    for _, n in ipairs(self._members) do
        local vm = self._vm[n]
        if is_vm(vm) then write_hosts(vm) end
    end
end

local function subnet(self) return ("10.66.%d.0"):format(self._num) end
local function gateway(self) return ("10.66.%d.254"):format(self._num) end

-- The routes a member of self needs: to each routed bridge through the
-- router, and the default one through the uplink.
local function add_routes(self, name)
    local vm = self._vm[name]
    if not is_vm(vm) or vm:state() ~= "booted" then return end
    for _, r in pairs(self._routes) do
        if r.router ~= name then
            net.route(vm, subnet(r.bridge), 24, ip_of(self, r.router))
        end
    end
    if self._uplink then
        net.route(vm, "0.0.0.0", 0, gateway(self))
        vm:mkdir("/etc", { parents = true })
        vm:write_file("/etc/resolv.conf", ("nameserver 10.66.%d.253\n"):format(self._num))
    end
end

-- The guest side of a member's NIC: address, link, routes, once its VM runs.
local function configure(self, name)
    local vm = self._vm[name]
    if not is_vm(vm) or vm:state() ~= "booted" then return end
    local wait = 20 * C.timeout_scale()
    self._ifname[name] = net.config(vm, mac_of(self, name), ip_of(self, name), 24,
        not self._down[name], wait)
    add_routes(self, name)
end

local function check_member(self, x, what, level)
    if not is_vm(x) and type(x) ~= "string" then
        error(("bridge:%s: expected a VM or a VM name, got %s"):format(what, type(x)), level + 1)
    end
end

-- bridge:attach(vm | name | {vm, name, ...})
function Bridge:attach(x)
    check_open(self, "attach")
    local list = (type(x) == "table" and not is_vm(x)) and x or { x }
    for i, v in ipairs(list) do
        if not is_vm(v) and type(v) ~= "string" then
            error(("bridge:attach: item %d: expected a VM or a VM name, got %s"):format(i, type(v)), 2)
        end
    end
    for _, v in ipairs(list) do
        local ok, err = pcall(self._attach_one, self, v)
        if not ok then P.rethrow(err, 2) end
    end
    return self
end

-- A host number for name: h if it is free, else the next unused.
local function number(self, name, h)
    if self._host[name] then return end
    local used = {}
    for _, n in pairs(self._host) do used[n] = true end
    if not h or used[h] or h < 1 or h > MAX then
        h = nil
        for i = 1, MAX do
            if not used[i] then h = i break end
        end
        if not h then
            error(("bridge:attach: bridge `%s` has %d VMs, the most it takes"):format(self._name, MAX))
        end
    end
    self._host[name] = h
end

local function add_member(self, name)
    local member = false
    for _, m in ipairs(self._members) do member = member or m == name end
    if not member then self._members[#self._members + 1] = name end
    self._down[name] = nil
end

function Bridge:_attach_one(v)
    local name = vm_name(v)
    number(self, name)
    if is_vm(v) then
        if self._vm[name] ~= v then
            net.attach(v, self._sw, self._name, mac_of(self, name))
            self._vm[name] = v
            on_bridges[v] = on_bridges[v] or {}
            on_bridges[v][self] = true
        end
    elseif self._vm[name] == nil then
        self._vm[name] = false
    end
    add_member(self, name)
    if running(v) then
        net.link(v, self._sw, true)
        configure(self, name)
    end
    self:_apply()
    self:_update_hosts()
end

-- bridge:detach(vm): off the bridge; the guest sees its link go down
function Bridge:detach(x)
    check_open(self, "detach")
    check_member(self, x, "detach", 2)
    local name = vm_name(x)
    for i, m in ipairs(self._members) do
        if m == name then table.remove(self._members, i) break end
    end
    for k in pairs(self._block) do
        local a, b = k:match("^(.-)%z(.*)$")
        if a == name or b == name then self._block[k] = nil end
    end
    for k in pairs(self._dir) do
        local a, b = k:match("^(.-)%z(.*)$")
        if a == name or b == name then self._dir[k] = nil end
    end
    local vm = self._vm[name]
    if is_vm(vm) and running(vm) then net.link(vm, self._sw, false) end
    self:_apply()
    self:_update_hosts()
    if is_vm(vm) then write_hosts(vm) end
end

function Bridge:members()
    local out = {}
    for i, m in ipairs(self._members) do out[i] = m end
    return out
end


-- The two ends of a directional rule: attached and booted, or an error.
local function ends(self, t, what, level)
    local from, to = t.from, t.to
    if from == nil or to == nil then
        error(("bridge:%s: expected {from=, to=, ...}"):format(what), level + 1)
    end
    check_member(self, from, what, level + 1)
    check_member(self, to, what, level + 1)
    for _, e in ipairs({ from, to }) do
        local n = vm_name(e)
        if not is_member(self, n) then
            error(("bridge:%s: vm `%s` is not attached to bridge `%s`: call bridge:attach first")
                :format(what, n, self._name), level + 1)
        end
    end
    return vm_name(from), vm_name(to)
end

-- bridge:partition(a, b) both ways, or bridge:partition{from=, to=}
function Bridge:partition(a, b)
    check_open(self, "partition")
    if type(a) == "table" and not is_vm(a) then
        local from, to = ends(self, a, "partition", 2)
        self._block[key(from, to)] = true
    else
        check_member(self, a, "partition", 2)
        check_member(self, b, "partition", 2)
        local x, y = vm_name(a), vm_name(b)
        self._block[key(x, y)] = true
        self._block[key(y, x)] = true
    end
    self:_apply()
end

function Bridge:unpartition(a, b)
    check_open(self, "unpartition")
    if type(a) == "table" and not is_vm(a) then
        if a.from == nil or a.to == nil then error("bridge:unpartition: expected {from=, to=}", 2) end
        self._block[key(vm_name(a.from), vm_name(a.to))] = nil
    else
        check_member(self, a, "unpartition", 2)
        check_member(self, b, "unpartition", 2)
        local x, y = vm_name(a), vm_name(b)
        self._block[key(x, y)] = nil
        self._block[key(y, x)] = nil
    end
    self:_apply()
end

function Bridge:partition_all()
    check_open(self, "partition_all")
    for _, x in ipairs(self._members) do
        for _, y in ipairs(self._members) do
            if x ~= y then self._block[key(x, y)] = true end
        end
    end
    self:_apply()
end

function Bridge:restore_all()
    check_open(self, "restore_all")
    self._block = {}
    self:_apply()
end

function Bridge:is_partitioned(a, b)
    if type(a) == "table" and not is_vm(a) then a, b = a.from, a.to end
    check_member(self, a, "is_partitioned", 2)
    check_member(self, b, "is_partitioned", 2)
    return self._block[key(vm_name(a), vm_name(b))] == true
end

-- One impairment, whole-bridge (value) or directional ({from=, to=, [field]=}).
local function impair(self, what, field, x, conv, tkey)
    check_open(self, what)
    if type(x) == "table" then
        local from, to = ends(self, x, what, 3)
        local v = x[tkey]
        if type(v) ~= "number" then
            error(("bridge:%s: `%s` must be a number, got %s"):format(what, tkey, type(v)), 3)
        end
        local k = key(from, to)
        self._dir[k] = self._dir[k] or { latency = 0, loss = 0, bps = 0 }
        self._dir[k][field] = conv(v)
    elseif type(x) == "number" then
        self._whole[field] = conv(x)
    else
        error(("bridge:%s: expected a number or {from=, to=, %s=}, got %s"):format(what, tkey, type(x)), 3)
    end
    self:_apply()
end

local function ms(v)
    if v < 0 or v ~= v or v >= 3600e3 then error("latency must be 0 to 3600000 ms, got " .. tostring(v), 4) end
    return v / 1000
end
local function pct(v)
    if v < 0 or v > 100 or v ~= v then error("drop rate must be 0 to 100 (percent), got " .. tostring(v), 4) end
    return v / 100
end
local function bps(v)
    if v < 0 or v ~= v or v == math.huge then error("bandwidth must be >= 0 bits per second, got " .. tostring(v), 4) end
    return math.floor(v)
end

function Bridge:add_latency(x) impair(self, "add_latency", "latency", x, ms, "ms") end
function Bridge:drop_rate(x) impair(self, "drop_rate", "loss", x, pct, "p") end
function Bridge:bandwidth_limit(x) impair(self, "bandwidth_limit", "bps", x, bps, "bps") end
function Bridge:add_directional_latency(t)
    if type(t) ~= "table" then error("bridge:add_directional_latency: expected {from=, to=, ms=}", 2) end
    impair(self, "add_directional_latency", "latency", t, ms, "ms")
end
function Bridge:directional_drop_rate(t)
    if type(t) ~= "table" then error("bridge:directional_drop_rate: expected {from=, to=, p=}", 2) end
    impair(self, "directional_drop_rate", "loss", t, pct, "p")
end

function Bridge:latency_ms() return self._whole.latency * 1000 end
function Bridge:drop_rate_pct() return self._whole.loss * 100 end
function Bridge:bandwidth_bps() return self._whole.bps end

-- bridge:reset(): no impairment and no partition left
function Bridge:reset()
    check_open(self, "reset")
    self._whole = { latency = 0, loss = 0, bps = 0 }
    self._dir = {}
    self._block = {}
    self:_apply()
end

function Bridge:isolate(x)
    check_open(self, "isolate")
    check_member(self, x, "isolate", 2)
    self._isolated[vm_name(x)] = true
    self:_apply()
end
function Bridge:unisolate(x)
    check_open(self, "unisolate")
    check_member(self, x, "unisolate", 2)
    self._isolated[vm_name(x)] = nil
    self:_apply()
end
function Bridge:is_isolated(x)
    check_member(self, x, "is_isolated", 2)
    return self._isolated[vm_name(x)] == true
end

-- bridge:route(other | {other, ...}): traffic between the two bridges'
-- subnets flows through a VM that is on both (the first by name), which
-- forwards; every member gets a route through it
function Bridge:route(x)
    check_open(self, "route")
    local list = getmetatable(x) == Bridge and { x } or x
    if type(list) ~= "table" then error("bridge:route: expected a bridge or an array of bridges", 2) end
    for i, o in ipairs(list) do
        if getmetatable(o) ~= Bridge then
            error(("bridge:route: item %d: expected a bridge, got %s"):format(i, type(o)), 2)
        end
    end
    for _, o in ipairs(list) do
        local routers = {}
        for _, m in ipairs(self._members) do
            if is_member(o, m) and is_vm(self._vm[m]) and self._vm[m] == o._vm[m] then
                routers[#routers + 1] = m
            end
        end
        table.sort(routers)
        if #routers == 0 then
            error(("bridge:route: no VM is on both `%s` and `%s` to route between them: attach one to both (it forwards)")
                :format(self._name, o._name), 2)
        end
        local router = routers[1]
        local ok, err = pcall(function()
            local vm = self._vm[router]
            self._routes[o._name] = { bridge = o, router = router }
            o._routes[self._name] = { bridge = self, router = router }
            if vm:state() == "booted" then vm:write_file("/proc/sys/net/ipv4/ip_forward", "1\n") end
            for _, b in ipairs({ self, o }) do
                for _, m in ipairs(b._members) do add_routes(b, m) end
            end
        end)
        if not ok then P.rethrow(err, 2) end
    end
end

-- bridge:routes() -> the names of the bridges routed to
function Bridge:routes()
    local out = {}
    for n in pairs(self._routes) do out[#out + 1] = n end
    table.sort(out)
    return out
end

-- bridge:enable_uplink(): the members reach the outside through QEMU's user
-- networking (NAT in an unprivileged process), their default route at .254
-- and their DNS at .253; the host's own services are at .254 too
function Bridge:enable_uplink()
    check_open(self, "enable_uplink")
    if self._uplink then return end
    local ok, u = pcall(net.uplink, self._sw, self._name, self._num)
    if not ok then P.rethrow("bridge:enable_uplink: " .. tostring(u), 2) end
    self._uplink = u
    for _, m in ipairs(self._members) do
        local rok, err = pcall(add_routes, self, m)
        if not rok then P.rethrow(err, 2) end
    end
end

-- bridge:disable_uplink(): the way out is gone (the routes stay, leading nowhere)
function Bridge:disable_uplink()
    if not self._uplink then return end
    net.uplink_close(self._uplink)
    self._uplink = nil
end

-- bridge:nic(vm) -> the Nic of vm on this bridge
function Bridge:nic(x)
    check_member(self, x, "nic", 2)
    local name = vm_name(x)
    if not is_member(self, name) then
        error(("bridge:nic: vm `%s` is not attached to bridge `%s`"):format(name, self._name), 2)
    end
    return setmetatable({ _bridge = self, _vm_name = name, _vm = is_vm(x) and x or self._vm[name] }, Nic)
end

function Bridge:close()
    if self._closed then return end
    self:disable_uplink()
    self._closed = true
    net.close(self._sw)
    for vm in pairs(self._vm) do
        if on_bridges[vm] then on_bridges[vm][self] = nil end
    end
end

-- Capture: the switch's pcap of a bridge or of one NIC (docs/streams.md).
-- Net is loaded after console, which defines P.Stream.
local Capture = setmetatable({}, { __index = P.Stream })
Capture.__index = Capture
Capture.__close = P.Stream.close

function Capture:_recv(t) return net.capture_recv(self.conn, t) end
function Capture:_close() net.capture_close(self.conn) end

-- capture:save(path): the bytes captured so far, as a pcap file at path;
-- the capture goes on (what it saved is not returned by next/drain again)
function Capture:save(path)
    if type(path) ~= "string" then error("capture:save: path must be a string", 2) end
    if self.closed then error("capture closed", 2) end
    local chunks = self:drain(0.05)
    self.saved = (self.saved or "") .. table.concat(chunks)
    local f, err = io.open(path, "wb")
    if not f then error("capture:save: " .. tostring(err), 2) end
    local ok, werr = f:write(self.saved)
    f:close()
    if not ok then error("capture:save: " .. path .. ": " .. tostring(werr), 2) end
end

-- capture:lost() -> records the switch dropped because the capture was not read fast enough
function Capture:lost() return net.capture_lost(self.conn) end

local function new_capture(self, port, what)
    local ok, conn = pcall(net.capture, self._sw, port)
    if not ok then error(what .. ": " .. tostring(conn), 3) end
    local c = P.new_stream(Capture, { kind = "capture", closed_msg = "capture closed", conn = conn,
        bridge = self, detail = self._name })
    P.live[c] = self -- a snapshot of a VM on the bridge waits for its close
    return c
end

-- Whether vm is on the bridge (a capture there holds its snapshots).
function Bridge:_carries(vm)
    return is_vm(vm) and self._vm[vm:name()] == vm and is_member(self, vm:name())
end

-- bridge:capture() -> a Capture of every frame the bridge forwards
function Bridge:capture()
    check_open(self, "capture")
    return new_capture(self, nil, "bridge:capture")
end

-- Nic
function Nic:vm_name() return self._vm_name end
function Nic:bridge() return self._bridge._name end

-- nic:counters() -> {rx_bytes, tx_bytes, rx_packets, tx_packets, errors}, the guest's view
function Nic:counters()
    local p = port_of(self._bridge, self._vm_name)
    if not p then
        return { rx_bytes = 0, tx_bytes = 0, rx_packets = 0, tx_packets = 0, errors = 0, dropped = 0 }
    end
    return net.counters(p)
end

-- nic:capture() -> a Capture of the frames to and from this NIC
function Nic:capture()
    local p = port_of(self._bridge, self._vm_name)
    if not p then
        error(("nic:capture: vm `%s` has no NIC on bridge `%s` running (not booted?). Call lab:boot() / vm:boot() first.")
            :format(self._vm_name, self._bridge._name), 2)
    end
    return new_capture(self._bridge, p, "nic:capture")
end

function Nic:disconnect()
    local b = self._bridge
    check_open(b, "nic:disconnect")
    b._down[self._vm_name] = true
    if is_vm(self._vm) and running(self._vm) then net.link(self._vm, b._sw, false) end
    b:_apply()
end

function Nic:reconnect()
    local b = self._bridge
    check_open(b, "nic:reconnect")
    b._down[self._vm_name] = nil
    if is_vm(self._vm) and running(self._vm) then net.link(self._vm, b._sw, true) end
    b:_apply()
end

-- vm:nic(bridge name | eth<N> | enp0s<N> | ens<N>)
function V:nic(name)
    if type(name) ~= "string" then error("vm:nic: expected a bridge or interface name, got " .. type(name), 2) end
    local list = sorted_bridges(self)
    for _, b in ipairs(list) do
        if b._name == name or b._ifname[self:name()] == name then return b:nic(self) end
    end
    local n = name:match("^eth(%d+)$") or name:match("^enp0s(%d+)$") or name:match("^ens(%d+)$")
    if n and list[tonumber(n) + 1] then return list[tonumber(n) + 1]:nic(self) end
    error(("vm:nic: vm `%s` has no NIC `%s` (bridges: %s)"):format(self:name(), name,
        #list > 0 and table.concat((function()
            local t = {}
            for i, b in ipairs(list) do t[i] = b._name end
            return t
        end)(), ", ") or "none"), 2)
end

-- vm:ip(bridge) -> its IPv4 address there
function V:ip(bridge)
    local name = type(bridge) == "table" and bridge._name or bridge
    for _, b in ipairs(sorted_bridges(self)) do
        if b._name == name then return ip_of(b, self:name()) end
    end
    error(("vm:ip: vm `%s` is not on bridge `%s`"):format(self:name(), tostring(name)), 2)
end

-- After a boot or a restore: each NIC configured, the rules on its new
-- ports, every member's /etc/hosts.
function P.net_up(vm)
    local list = sorted_bridges(vm)
    for _, b in ipairs(list) do configure(b, vm:name()) end
    for _, b in ipairs(list) do
        b:_apply()
        b:_update_hosts()
    end
end

-- Before a restore: vm's NICs become the snapshot's, each on the bridge of
-- its name (the one vm is on, else found or made from vm's lab), with the
-- snapshot's MAC; vm leaves the bridges the snapshot was not on.
local function join(vm, nics)
    local name = vm:name()
    local list, keep = {}, {}
    for i, n in ipairs(nics) do
        local b
        for x in pairs(on_bridges[vm] or {}) do
            if x._name == n.bridge and not x._closed then b = x end
        end
        b = b or (P.home[vm] or P.root):bridge(n.bridge)
        for _, m in ipairs(b._members) do
            if m ~= name and mac_of(b, m) == n.mac then
                error(("vm `%s`: restore: bridge `%s` already has vm `%s` with the snapshot's MAC %s; shut it down or detach it first")
                    :format(name, b._name, m, n.mac))
            end
        end
        number(b, name, tonumber(n.mac:sub(-2), 16))
        b._mac[name] = n.mac
        b._vm[name] = vm
        add_member(b, name)
        on_bridges[vm] = on_bridges[vm] or {}
        on_bridges[vm][b] = true
        keep[b] = true
        list[i] = { b._sw, b._name, n.mac }
    end
    for b in pairs(on_bridges[vm] or {}) do
        if not keep[b] then
            for i, m in ipairs(b._members) do
                if m == name then table.remove(b._members, i) break end
            end
            b._vm[name] = nil
            on_bridges[vm][b] = nil
        end
    end
    net.set_nics(vm, list)
end

local restore = V.restore
function V:restore(snap)
    local path = getmetatable(snap) == P.Snapshot and snap._path or snap
    local st = self:state()
    local ok, nics = pcall(net.snapshot_nics, type(path) == "string" and path or "")
    -- else the restore says what is wrong with the snapshot, or with the VM
    if ok and st ~= "booted" and st ~= "paused" then
        local jok, err = pcall(join, self, nics)
        if not jok then P.rethrow(err, 2) end
    end
    local rok, err = pcall(restore, self, snap)
    if not rok then P.rethrow(err, 2) end
    if on_bridges[self] then
        local nok, nerr = pcall(P.net_up, self)
        if not nok then P.rethrow(nerr, 2) end
    end
    return self
end

local boot = V.boot
function V:boot(...)
    local ok, r = pcall(boot, self, ...)
    if not ok then P.rethrow(r, 2) end
    if on_bridges[self] then
        local ok, err = pcall(P.net_up, self)
        if not ok then P.rethrow(err, 2) end
    end
    return r
end

-- The rules of a bridge, to put back (reset_between_tests).
local RULES = { "_block", "_isolated", "_down", "_whole", "_dir" }
local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = type(v) == "table" and copy(v) or v end
    return c
end
function Bridge:_save()
    local s = {}
    for _, k in ipairs(RULES) do s[k] = copy(self[k]) end
    return s
end
function Bridge:_load(s)
    if self._closed then return end
    for _, k in ipairs(RULES) do self[k] = copy(s[k]) end
    self:_apply()
end

-- Every bridge of a lab and its sub-labs.
function Lab:_all_bridges(out)
    out = out or {}
    for _, n in ipairs(self:bridge_names()) do out[#out + 1] = rawget(self, "_bridges")[n] end
    for _, sub in pairs(rawget(self, "_labs")) do sub:_all_bridges(out) end
    return out
end

-- Labs hold bridges too.
function Lab:bridge(name, opts)
    if getmetatable(self) ~= Lab then error("provium:bridge: call it with a colon (provium:bridge(...))", 2) end
    if opts ~= nil and type(opts) ~= "table" then
        error("provium:bridge: opts must be a table, got " .. type(opts), 2)
    end
    local l = self
    while l do
        local b = rawget(l, "_bridges")[name]
        if b then return b end
        l = rawget(l, "_parent")
    end
    if rawget(self, "_vms")[name] or rawget(self, "_labs")[name] then
        error(("provium:bridge: `%s` already exists in lab `%s`"):format(tostring(name), rawget(self, "_name")), 2)
    end
    local b = P.new_bridge(name)
    rawget(self, "_bridges")[name] = b
    local order = rawget(self, "_order")
    order[#order + 1] = { kind = "bridge", name = name }
    self:_register(b, 5)
    return b
end
