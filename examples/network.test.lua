-- A client and a server on one bridge (docs/networks.md): the switch runs
-- inside provium, so this needs no root and leaves nothing on the host.
provium:claim { memory = "700M" }
local lan = provium:bridge("lan")
local server = provium:vm("server", "default", { memory = "256M" })
local client = provium:vm("client", "default", { memory = "256M" })
lan:attach({ server, client })
provium:boot()

server:run("mkdir -p /srv && echo 'hello from the server' > /srv/index.html"):assert_ok()
server:run("httpd -p 80 -h /srv"):assert_ok()

-- (busybox's own wget -T crashes; the agent's timeout stops a hung fetch)
local function fetch()
    return client:run("wget -q -O - http://server.lan/index.html", { timeout = 3 })
end

test("the client fetches a page from the server by name", function(t)
    local r = fetch()
    r:assert_ok()
    t:assert_eq(r.stdout, "hello from the server\n")
end)

test("a partition cuts the client off, and lifting it heals", function(t)
    lan:partition(client, server)
    t:assert_neq(fetch().exit_code, 0)
    lan:unpartition(client, server)
    fetch():assert_ok()
end)

test("100 ms of latency each way shows in the round trip", function(t)
    lan:add_latency(100)
    local r = client:run("ping -c 2 server")
    lan:reset()
    r:assert_ok()
    for ms in r.stdout:gmatch("time=([%d.]+) ms") do
        t:assert(tonumber(ms) >= 200, "round trip of " .. ms .. " ms, expected at least 200")
    end
end)
