-- Run by bench/boot: two VMs on a bridge of provium's switch against the same
-- two VMs on a direct cable (one socketpair between their QEMUs, no switch),
-- as -netdev dgram (what the switch uses) and as -netdev stream, in the same
-- run, interleaved: TCP throughput (busybox wget of a file from
-- busybox httpd, to /dev/null) and ping's round trip. The ratio is the
-- switch's cost; docs/networks.md holds the figures.
local N = tonumber(os.getenv("BENCH_N") or "5")
local MIB = 32

local C = _provium_c
local stats = require("stats")
local median = stats.median

provium:claim { memory = "1200M" }

test("TCP throughput and round trip, switch against a direct cable", function(t)
    local lan = provium:bridge("lan")
    local a = provium:vm("a", "default", { memory = "512M" })
    local b = provium:vm("b", "default", { memory = "512M" })
    lan:attach({ a, b })
    provium:boot()
    C.direct_link(a, "52:54:00:77:00:01", b, "52:54:00:77:00:02", "dgram")
    C.net.config(a, "52:54:00:77:00:01", "10.77.0.1", 24, true, 60)
    C.net.config(b, "52:54:00:77:00:02", "10.77.0.2", 24, true, 60)
    C.direct_link(a, "52:54:00:78:00:01", b, "52:54:00:78:00:02", "stream")
    C.net.config(a, "52:54:00:78:00:01", "10.78.0.1", 24, true, 60)
    C.net.config(b, "52:54:00:78:00:02", "10.78.0.2", 24, true, 60)
    b:run(("mkdir -p /srv && dd if=/dev/zero of=/srv/f bs=1M count=%d 2>/dev/null"):format(MIB))
        :assert_ok()
    b:run("httpd -p 80 -h /srv"):assert_ok()
    local paths = { switch = "10.66.1.2", cable = "10.77.0.2", stream = "10.78.0.2" }
    local kinds = { "switch", "cable", "stream" }
    local mbps, rtt = {}, {}
    for _, k in ipairs(kinds) do mbps[k], rtt[k] = {}, {} end
    for _ = 1, N do
        for _, k in ipairs(kinds) do
            local s = stats.timed(function()
                a:run("wget -q -O /dev/null http://" .. paths[k] .. "/f", { timeout = 300 }):assert_ok()
            end)
            mbps[k][#mbps[k] + 1] = MIB * 8 * 1.048576 / s
            local r = a:run("ping -q -c 20 -i 0.05 " .. paths[k])
            r:assert_ok()
            rtt[k][#rtt[k] + 1] = tonumber(r.stdout:match("= [%d.]+/([%d.]+)/"))
        end
    end
    local sw, ca = median(mbps.switch), median(mbps.cable)
    print(("network: TCP through the switch %.0f Mbit/s, direct cable %.0f Mbit/s: switch overhead %.2fx (the transfer's time through the switch over its time on the cable; median of %d, %d MiB each)")
        :format(sw, ca, ca / sw, N, MIB))
    print(("network: ping round trip through the switch %.3f ms, direct cable %.3f ms (median of %d averages of 20)")
        :format(median(rtt.switch), median(rtt.cable), N))
    print(("network: the two QEMU transports on a direct cable: -netdev dgram %.0f Mbit/s, %.3f ms; -netdev stream %.0f Mbit/s, %.3f ms")
        :format(ca, median(rtt.cable), median(mbps.stream), median(rtt.stream)))
end)
