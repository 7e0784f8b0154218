-- Snapshots, fixtures and reset_between_tests keep the network
-- (docs/networks.md#snapshots): a restored VM is back on its bridges, with
-- its address, and talks at once.
local meta = require("lib.meta")
provium:claim { memory = "700M" }
provium.reset_between_tests = true -- each test starts from the network below
local opts = { memory = "256M" }
local lan = provium:bridge("lan")
local a = provium:vm("a", "default", opts)
local b = provium:vm("b", "default", opts)
lan:attach({ a, b })
provium:boot()

local function ping(from, to) return from:run("ping -c 1 -W 5 " .. to) end

test("a VM restored from its snapshot is back on its bridge and talks at once", function(t)
    local snap = a:snapshot()
    a:write_file("/tmp/after", "x")
    a:kill()
    a:restore(snap)
    t:assert(not a:exists("/tmp/after"))
    t:assert_eq(table.concat(lan:members(), ","), "a,b")
    ping(a, "b.lan"):assert_ok()
    ping(b, "a.lan"):assert_ok()
    t:assert_contains(a:run("ip -4 addr show eth0").stdout, "10.66.1.1/24")
end)

test("an open capture refuses a snapshot of a VM on its bridge, naming it", function(t)
    local cap = lan:capture()
    local err = t:assert_raises(function() a:snapshot() end)
    cap:close()
    t:assert_contains(tostring(err), "vm:snapshot() refused")
    t:assert_contains(tostring(err), "capture(\"lan\") at vm/net_snapshots.test.lua:")
    a:snapshot():delete()
end)

test("a twin restored beside its original on the same bridge is refused", function(t)
    local snap = a:snapshot()
    local twin = provium:vm("twin", "default", opts)
    local err = t:assert_raises(function() twin:restore(snap) end)
    t:assert_contains(tostring(err), "bridge `lan` already has vm `a` with the snapshot's MAC 52:54:00:42:01:01")
    snap:delete()
end)

test("a lab fixture of two networked VMs restores talking", function(t)
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. meta.quote(d .. "/fixtures"))
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\ncache_dir = "cache"\n')
    meta.write(d .. "/fixtures/net.fixture.lua", [[
provium:claim { memory = "700M" }
local lan = provium:bridge("lan")
local x = provium:vm("x", "default", { memory = "256M" })
local y = provium:vm("y", "default", { memory = "256M" })
lan:attach({ x, y })
provium:boot()
y:run("mkdir -p /srv && echo served-by-y > /srv/index.html && httpd -p 80 -h /srv"):assert_ok()
return provium:snapshot()
]])
    meta.write(d .. "/use.test.lua", [[
provium:claim { memory = "700M" }
local c = provium:lab_fixture("fixtures/net")
test("talks", function(t)
    local r = c.x:run("wget -q -O - http://y.lan/index.html", { timeout = 10 })
    r:assert_ok()
    t:assert_eq(r.stdout, "served-by-y\n")
    c.x:run("ping -c 1 -W 5 y"):assert_ok()
    t:assert_eq(table.concat(c.lan:members(), ","), "x,y")
    t:assert_eq(c.x:ip("lan"), "10.66.1.1")
end)
]])
    for round = 1, 2 do -- built, then from the cache
        local out, code = meta.provium({ "use.test.lua" }, { cwd = d })
        t:assert_eq(code, 0, ("round %d:\n%s"):format(round, out))
    end
end)

test("a test that partitions and detaches", function(t)
    lan:partition(a, b)
    lan:add_latency(300)
    lan:detach(b)
    t:assert_neq(a:run("ping -c 1 -W 1 b.lan").exit_code, 0)
end)

test("the next test finds the network of the baseline", function(t)
    t:assert(not lan:is_partitioned(a, b))
    t:assert_eq(lan:latency_ms(), 0)
    t:assert_eq(table.concat(lan:members(), ","), "a,b")
    local r = ping(a, "b.lan")
    r:assert_ok()
    t:assert(tonumber(r.stdout:match("time=([%d.]+) ms")) < 300, r.stdout)
end)
