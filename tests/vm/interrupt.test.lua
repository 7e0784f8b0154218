-- Ctrl-C and SIGTERM in the middle of a boot leave no QEMU and no run dir.
local meta = require("lib.meta")

-- Boot a VM in a file, send sig after 2 s; check(d) looks at the
-- directory before it goes.
local function interrupt(sig, args, check)
    local d = meta.tmpdir()
    meta.write(d .. "/boot.test.lua", [[
test("slow boot", function(t)
    provium:vm("a", "default"):boot()
    _provium_c.sleep(120)
end)
]])
    local script = ([[
cd %s
%s %s boot.test.lua >out 2>&1 &
pid=$!
sleep 2
kill -%s $pid
wait $pid
echo "EXIT=$?"
sleep 0.5
echo "QEMU=$(pgrep -f "provium-$pid-" | wc -l)"
echo "DIRS=$(ls -d /tmp/provium-$pid-* 2>/dev/null | wc -l)"
]]):format(meta.quote(d), meta.quote(meta.bin), args or "", sig)
    local p = io.popen("sh -c " .. meta.quote(script))
    local res = p:read("a")
    p:close()
    local f = io.open(d .. "/out")
    local out = f and f:read("a") or ""
    if f then f:close() end
    if check then check(d) end
    meta.rmdir(d)
    return tonumber(res:match("EXIT=(%d+)")), tonumber(res:match("QEMU=(%d+)")),
        tonumber(res:match("DIRS=(%d+)")), out
end

test("Ctrl-C (SIGINT) during a boot", function(t)
    local code, qemus, dirs, out = interrupt("INT")
    t:assert_eq(qemus, 0, "QEMU processes left")
    t:assert_eq(dirs, 0, "run directories left")
    t:assert_eq(code, 130, out)
    t:assert_contains(out, "interrupted")
    t:assert_contains(out, "STOP boot.test.lua (interrupted)")
    t:assert(out:match("\n1 file%(s%); 0 passed, 0 failed, 0 skipped; [%d.]+s\n$"),
        "the summary of what ran is the last line: " .. out)
end)

test("SIGTERM during a boot", function(t)
    local code, qemus, dirs = interrupt("TERM")
    t:assert_eq(qemus, 0, "QEMU processes left")
    t:assert_eq(dirs, 0, "run directories left")
    t:assert_neq(code, 0)
end)

test("Ctrl-C with every output on: each is complete, nothing is left", function(t)
    local code, qemus, dirs = interrupt("INT",
        "--junit j.xml --save-events ev.bin --events-socket ev.sock --tap", function(d)
            local lint = os.execute("xmllint --noout " .. meta.quote(d .. "/j.xml"))
            t:assert(lint, "the JUnit file is whole")
            local ev = io.popen("/usr/bin/python3 " .. meta.quote(meta.tests .. "/lib/events_dump.py") ..
                " " .. meta.quote(d .. "/ev.bin")):read("a")
            t:assert_contains(ev, '"status": "interrupted"')
            t:assert_eq(io.open(d .. "/ev.sock"), nil, "the socket is gone")
            local left = io.popen("ls -A " .. meta.quote(d)):read("a")
            t:assert_eq(left, "boot.test.lua\nev.bin\nj.xml\nout\n", "no temporary files")
        end)
    t:assert_eq(qemus, 0, "QEMU processes left")
    t:assert_eq(dirs, 0, "run directories left")
    t:assert_eq(code, 130)
end)
