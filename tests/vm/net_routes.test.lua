-- Beyond one bridge (docs/networks.md): a router VM between two bridges,
-- and the uplink through QEMU's user networking to the host.
local meta = require("lib.meta")
provium:claim { memory = "1100M" }
local opts = { memory = "256M" }
local lan = provium:bridge("lan")
local dmz = provium:bridge("dmz")
local a = provium:vm("a", "default", opts)
local r = provium:vm("r", "default", opts)
local c = provium:vm("c", "default", opts)
lan:attach({ a, r })
dmz:attach({ r, c })
provium:boot()

test("a VM on two bridges routes between them", function(t)
    t:assert_neq(a:run("ping -c 1 -W 1 " .. c:ip("dmz")).exit_code, 0, "no route yet")
    lan:route(dmz)
    t:assert_eq(table.concat(lan:routes(), ","), "dmz")
    t:assert_eq(table.concat(dmz:routes(), ","), "lan")
    a:run("ping -c 1 -W 5 " .. c:ip("dmz")):assert_ok()
    c:run("ping -c 1 -W 5 " .. a:ip("lan")):assert_ok()
    -- the router's own bridges name it; r's NICs are eth0 (dmz) and eth1 (lan), by bridge name
    t:assert_eq(r:nic("eth0"):bridge(), "dmz")
    t:assert_eq(r:nic("eth1"):bridge(), "lan")
    local trace = a:run("traceroute -n -m 3 -w 2 " .. c:ip("dmz"))
    t:assert_contains(trace.stdout, r:ip("lan"))
end)

test("route without a VM on both bridges says what to do", function(t)
    local other = provium:bridge("other")
    local err = t:assert_raises(function() lan:route(other) end)
    t:assert_contains(tostring(err),
        "bridge:route: no VM is on both `lan` and `other` to route between them: attach one to both (it forwards)")
end)

test("the uplink reaches the host's own services, without root on the host", function(t)
    local d = meta.tmpdir()
    meta.write(d .. "/hello", "hello from the host\n")
    -- a server on the host's loopback only: reached through QEMU's user networking
    local server = "import http.server as h; s = h.ThreadingHTTPServer(('127.0.0.1', 0), " ..
        "h.SimpleHTTPRequestHandler); print(s.server_address[1], flush=True); s.serve_forever()"
    local pid = meta.sh(("cd %s && { /usr/bin/python3 -c %s >port 2>/dev/null & echo $!; }")
        :format(meta.quote(d), meta.quote(server))):match("%d+")
    provium:_register({ close = function() os.execute("kill " .. pid .. " 2>/dev/null") end }, 9)
    local port
    wait_until(function()
        local f = io.open(d .. "/port")
        port = f and f:read("l")
        if f then f:close() end
        return port
    end, { desc = "the host's server listening" })
    lan:enable_uplink()
    local res = a:run("wget -q -O - http://10.66.1.254:" .. port .. "/hello", { timeout = 20 })
    lan:disable_uplink()
    res:assert_ok()
    t:assert_eq(res.stdout, "hello from the host\n")
    t:assert_contains(a:run("ip route").stdout, "default via 10.66.1.254")
    t:assert_eq(a:read_file("/etc/resolv.conf"), "nameserver 10.66.1.253\n")
end)
