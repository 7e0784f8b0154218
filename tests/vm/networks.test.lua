-- Networks of VMs on provium's own switch (docs/networks.md): names,
-- partitions, impairments, isolation, hot-plug, counters and captures, with
-- real guests talking through real NICs.
provium:claim { memory = "1400M", cpus = 1 }
local opts = { memory = "256M" }
local root = provium -- inside a test, provium is the test's own lab
local lan = provium:bridge("lan")
local a = provium:vm("a", "default", opts)
local b = provium:vm("b", "default", opts)
lan:attach({ a, b })
provium:boot()

local function ping(from, to, args)
    return from:run("ping -c 1 -W 5 " .. (args or "") .. to)
end

local function within(t, v, lo, hi, what)
    t:assert(v and v >= lo and v <= hi, ("%s: %s not in [%s, %s]"):format(what, tostring(v), lo, hi))
end

-- The RTTs of a ping's replies, in ms.
local function rtts(out)
    local t = {}
    for v in out:gmatch("time=([%d%.]+) ms") do t[#t + 1] = tonumber(v) end
    return t
end

test("two VMs reach each other by <vm>.<bridge>, by bare name and by address", function(t)
    ping(a, "b.lan"):assert_ok()
    ping(b, "a.lan"):assert_ok()
    ping(a, "b"):assert_ok()
    ping(b, a:ip("lan")):assert_ok()
    t:assert_eq(a:ip("lan"), "10.66.1.1")
    t:assert_eq(b:ip("lan"), "10.66.1.2")
    t:assert_contains(a:read_file("/etc/hosts"), "10.66.1.2\tb.lan b")
    t:assert_eq(table.concat(lan:members(), ","), "a,b")
    t:assert_eq(table.concat(root:bridge_names(), ","), "lan")
    t:assert_eq(#provium:bridge_names(), 0) -- the test's lab has none of its own
    t:assert_eq(provium.lan, lan)
end)

test("httpd on one VM, wget from the other", function(t)
    a:run("mkdir -p /srv && echo hello-from-a > /srv/index.html")
    a:run("httpd -p 8080 -h /srv"):assert_ok()
    local r = b:run("wget -q -O - http://a.lan:8080/index.html")
    r:assert_ok()
    t:assert_eq(r.stdout, "hello-from-a\n")
end)

test("a symmetric partition blocks both ways, unpartition restores", function(t)
    lan:partition(a, b)
    t:assert(lan:is_partitioned(a, b))
    t:assert(lan:is_partitioned("b", "a"))
    t:assert_neq(ping(a, "b.lan", "-W 1 ").exit_code, 0)
    t:assert_neq(ping(b, "a.lan", "-W 1 ").exit_code, 0)
    lan:unpartition(a, b)
    t:assert(not lan:is_partitioned(a, b))
    ping(a, "b.lan"):assert_ok()
    ping(b, "a.lan"):assert_ok()
end)

test("a directional partition blocks one way only", function(t)
    ping(a, "b.lan"):assert_ok() -- both neighbour caches are warm
    lan:partition({ from = a, to = b })
    t:assert(lan:is_partitioned({ from = a, to = b }))
    t:assert(not lan:is_partitioned({ from = b, to = a }))
    local na, nb = a:nic("lan"):counters(), lan:nic(b):counters()
    t:assert_neq(ping(b, "a.lan", "-c 3 -W 1 ").exit_code, 0) -- requests arrive, replies do not
    local na2, nb2 = a:nic("lan"):counters(), lan:nic(b):counters()
    within(t, na2.rx_packets - na.rx_packets, 3, math.huge, "requests a received")
    within(t, na2.tx_packets - na.tx_packets, 3, math.huge, "replies a sent")
    t:assert_eq(nb2.rx_packets - nb.rx_packets, 0, "frames b received")
    within(t, nb2.dropped - nb.dropped, 3, math.huge, "frames to b dropped")
    lan:unpartition({ from = a, to = b })
    ping(b, "a.lan"):assert_ok()
end)

test("partition of a VM that is not attached names the fix", function(t)
    local ok, err = pcall(lan.partition, lan, { from = a, to = "nobody" })
    t:assert(not ok)
    t:assert_contains(tostring(err), "vm `nobody` is not attached to bridge `lan`: call bridge:attach first")
end)

test("200 ms of latency shows in ping's round trip", function(t)
    lan:add_latency(200)
    t:assert_eq(lan:latency_ms(), 200)
    local r = ping(a, "b.lan", "-c 3 ")
    lan:reset()
    r:assert_ok()
    for _, ms in ipairs(rtts(r.stdout)) do
        within(t, ms, 400, 1400, "round trip (ms)") -- 200 ms each way
    end
    t:assert_eq(lan:latency_ms(), 0)
    local fast = rtts(ping(a, "b.lan", "-c 2 ").stdout)
    within(t, fast[#fast], 0, 300, "round trip after reset (ms)")
end)

test("directional latency delays one direction", function(t)
    lan:add_latency({ from = b, to = a, ms = 150 })
    local r = ping(a, "b.lan", "-c 2 ")
    lan:reset()
    r:assert_ok()
    for _, ms in ipairs(rtts(r.stdout)) do
        within(t, ms, 150, 1000, "round trip (ms)")
    end
end)

test("30 % loss over 200 pings stays within a binomial bound", function(t)
    ping(a, "b.lan"):assert_ok()
    lan:drop_rate({ from = a, to = b, p = 30 })
    t:assert_eq(lan:drop_rate_pct(), 0) -- directional values are not the bridge's
    local r = a:run("ping -q -c 200 -i 0.01 -W 2 b.lan")
    lan:reset()
    local got = tonumber(r.stdout:match("(%d+) packets received"))
    -- replies come back unless the request was lost: 140 expected, sd 6.5
    within(t, got, 140 - 30, 140 + 30, "replies")
end)

test("a bandwidth limit bounds a transfer", function(t)
    a:run("dd if=/dev/zero of=/srv/big bs=1k count=256"):assert_ok()
    lan:bandwidth_limit(1000000) -- 1 Mbit/s: 256 KiB take 2.1 s at least
    t:assert_eq(lan:bandwidth_bps(), 1000000)
    local t0 = _provium_c.now()
    local r = b:run("wget -q -O /dev/null http://a.lan:8080/big")
    local took = _provium_c.now() - t0
    lan:reset()
    r:assert_ok()
    within(t, took, 2.0, 30, "seconds for 256 KiB")
end)

test("a VM booted alone gets its NIC plugged in, and isolation keeps the bridge up for the others", function(t)
    local c = provium:vm("c", "default", opts):boot()
    lan:attach(c)
    ping(c, "a.lan"):assert_ok()
    ping(a, "c"):assert_ok()
    t:assert_eq(table.concat(lan:members(), ","), "a,b,c")
    lan:isolate(c)
    t:assert(lan:is_isolated(c))
    t:assert_neq(ping(c, "a.lan", "-W 1 ").exit_code, 0)
    ping(a, "b.lan"):assert_ok()
    lan:unisolate(c)
    ping(c, "b.lan"):assert_ok()
    lan:detach(c)
    t:assert_eq(table.concat(lan:members(), ","), "a,b")
    t:assert_neq(ping(c, "a.lan", "-W 1 ").exit_code, 0)
end)

test("a nic disconnects and reconnects", function(t)
    local nic = b:nic("lan")
    t:assert_eq(nic:vm_name(), "b")
    t:assert_eq(nic:bridge(), "lan")
    t:assert_eq(b:nic("eth0"):bridge(), "lan")
    nic:disconnect()
    t:assert_neq(ping(a, "b.lan", "-W 1 ").exit_code, 0)
    t:assert_contains(b:run("cat /sys/class/net/eth0/operstate").stdout, "down")
    nic:reconnect()
    wait_until(function() return ping(a, "b.lan").exit_code == 0 end, { timeout = 30 })
end)

test("a NIC's capture saved to a file holds what crossed it", function(t)
    local cap = b:nic("lan"):capture()
    ping(a, "b.lan"):assert_ok()
    local path = _provium_c.tempdir() .. "/b.pcap"
    cap:save(path)
    t:assert_eq(cap:lost(), 0)
    cap:close()
    local f = assert(io.open(path, "rb"))
    local bytes = f:read("a")
    f:close()
    t:assert_eq(string.unpack("<I4", bytes), 0xa1b2c3d4)
    t:assert(#bytes >= 24 + 2 * (16 + 98), ("a request and a reply at least: %d bytes"):format(#bytes))
end)

test("a capture holds the ICMP frames, as a classic pcap", function(t)
    local cap = lan:capture()
    ping(a, "b.lan", "-c 2 "):assert_ok()
    local bytes = table.concat(cap:drain(1))
    cap:close()
    local magic, major, minor, _, _, snap, link = string.unpack("<I4I2I2i4I4I4I4", bytes)
    t:assert_eq(magic, 0xa1b2c3d4)
    t:assert_eq(major, 2)
    t:assert_eq(minor, 4)
    t:assert_eq(link, 1)
    within(t, snap, 1514, math.huge, "snap")
    local pos, icmp = 25, 0
    while pos + 16 <= #bytes do
        local _, _, incl, _, nxt = string.unpack("<I4I4I4I4", bytes, pos)
        local frame = bytes:sub(nxt, nxt + incl - 1)
        if #frame < incl then break end
        if #frame >= 34 and frame:byte(13) == 8 and frame:byte(14) == 0 and frame:byte(24) == 1 then
            icmp = icmp + 1
        end
        pos = nxt + incl
    end
    within(t, icmp, 4, math.huge, "icmp") -- two requests, two replies
end)
