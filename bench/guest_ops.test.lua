-- Run by bench/boot: guest operations of issue 4. vm:syscall(getpid) against
-- the baseline a shell-driven harness gets, a busybox shell echoing one line
-- on hvc0 (a virtconsole port of the virtio-serial device that also carries
-- the agent's port), interleaved in one VM; then file throughput.
local MiB = 1024 * 1024

local stats = require("stats")
local median = stats.median
local timed = stats.timed

local vm = provium:vm("ops", "default"):boot({ kernel_cmdline = "console=hvc0 panic=-1" })

test("syscall against a shell echo", function(t)
    -- Quiet the kernel's console output; unique markers guard against what remains.
    vm:run("dmesg -n 1"):assert_ok()
    -- stty inside the shell: hvc resets its termios when the last holder closes it.
    -- The reply is "=" and the line, so the tty's own echo can never pass for it.
    vm:run("setsid sh -c 'exec </dev/hvc0 >/dev/hvc0; stty raw -echo; " ..
        "while read -r l; do echo \"=$l\"; done' >/dev/null 2>&1 &"):assert_ok()
    local con = vm:console()
    local s <close> = con:read()
    -- Input to a tty nobody holds open is dropped: knock until the shell answers.
    wait_until(function()
        local m = ("w%d\n"):format(_provium_c.now() * 1e6 // 1)
        con:write(m)
        return pcall(s.read_until, s, "=" .. m, 0.5)
    end, { timeout = 20, desc = "the shell on hvc0" })
    local sys, sh = {}, {}
    for i = 1, 200 do
        sys[i] = timed(function() vm:syscall(provium.sys.getpid) end)
        local m = ("p%d\n"):format(i)
        sh[i] = timed(function()
            con:write(m)
            s:read_until("=" .. m)
        end)
    end
    local a, b = median(sys), median(sh)
    print(("syscall(getpid), interleaved:   median %.3f ms (200 runs, alternating with the echo)")
        :format(a * 1000))
    print(("shell echo over hvc0:           median %.3f ms (200 runs; busybox sh on the same "
        .. "virtio-serial device)"):format(b * 1000))
    print(("ratio syscall/shell:            %.2f   (target <= 1.0)"):format(a / b))
end)

test("file throughput", function(t)
    vm:run(("head -c %d /dev/urandom > /tmp/r1m"):format(MiB)):assert_ok()
    local reads, data = {}, nil
    for i = 1, 7 do
        reads[i] = 1 / timed(function() data = vm:read_file("/tmp/r1m") end)
    end
    t:assert_eq(#data, MiB)
    -- os.tmpname() creates the file, so it is the host file itself.
    local host = os.tmpname()
    local ok, err = pcall(function()
        assert(os.execute(("head -c %d /dev/urandom > %s"):format(64 * MiB, host)))
        local pushes = {}
        for i = 1, 5 do
            pushes[i] = 64 / timed(function() vm:push_file(host, "/tmp/p64m") end)
            t:assert_eq(vm:stat("/tmp/p64m").size, 64 * MiB)
            vm:unlink("/tmp/p64m") -- the guest's / lives in its 512 MiB of RAM
        end
        print(("vm:read_file of 1 MiB:          median %.1f MiB/s (7 runs)"):format(median(reads)))
        print(("vm:push_file of 64 MiB:         median %.1f MiB/s (5 runs)"):format(median(pushes)))
    end)
    os.remove(host)
    if not ok then error(err, 0) end
end)
