-- The console: its log, a stream of what the guest prints, and writing to it.
local vm = provium:vm("con", "default"):boot()

test("write reaches a reader of the guest's console tty", function(t)
    vm:run("sh -c 'exec 3</dev/ttyS0; touch /tmp/ready; read l <&3; echo \"got:$l\" > /tmp/got.part; mv /tmp/got.part /tmp/got' " ..
        ">/dev/null 2>&1 &"):assert_ok()
    -- input to a tty nobody holds open is dropped: wait for the reader
    wait_until(function() return vm:exists("/tmp/ready") end, { timeout = 20, desc = "the reader" })
    t:assert_eq(vm:console():write("hello-console\n"), 14)
    wait_until(function() return vm:exists("/tmp/got") end, { timeout = 20, desc = "the line" })
    t:assert_eq(vm:read_file("/tmp/got"), "got:hello-console\n")
end)

test("read: a stream of what the guest prints from now on", function(t)
    local s = vm:console():read()
    vm:run("echo provium-marker-1 > /dev/kmsg"):assert_ok()
    local text = s:read_until("provium-marker-1", 20)
    t:assert_contains(text, "provium-marker-1")
    vm:run("echo provium-marker-2 > /dev/kmsg"):assert_ok()
    s:expect("provium-marker-2", 20)
    t:assert_eq(s:eof(), false)
    local site = s:creation_site()
    t:assert_eq(site.file, "vm/console.test.lua")
    s:close()
    s:close()
    t:assert_eq(s:next(), nil, "a closed stream gives nil")
    t:assert_contains(t:assert_raises(function() s:read_until("x", 1) end), "console closed")
end)

test("stream errors and timeouts", function(t)
    local s = vm:console():read()
    t:assert_contains(t:assert_raises(function() vm:console():read() end), "already has an open stream")
    t:assert_contains(t:assert_raises(function() s:read_until("never-printed", 0.3) end),
        "read_until timed out waiting for `never-printed`")
    t:assert_eq(#s:drain(0.2) >= 0, true)
    t:assert_contains(t:assert_raises(function() vm:console():write("x", { timeout_ms = 5 }) end),
        'opts.timeout_ms is not supported (use timeout = "500ms" or timeout = 0.5)')
end)

test("... the stream a test opened is closed when it ends", function(t)
    local s = vm:console():read() -- would raise if the last test's stream were still open
    s:close()
end)
