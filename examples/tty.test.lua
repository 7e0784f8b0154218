-- A program on a terminal of its own (docs/processes.md#a-terminal-pty): the
-- kernel's tty layer between the keys you send and what the program sees.
local vm = provium:vm("tty", "default"):boot()

test("an interactive shell: its window size, and ^C from the line discipline", function(t)
    local sh = vm:run_async("sh", { pty = { rows = 30, cols = 100 } })
    local out = sh:stdout_stream()
    sh:stdin_write("stty size\n")
    out:read_until("30 100", 10)
    sh:resize(50, 132) -- TIOCSWINSZ on the terminal (its foreground group gets SIGWINCH)
    sh:stdin_write("stty size\n")
    out:read_until("50 132", 10)
    sh:stdin_write("sleep 60\n")
    wait_until(function() return vm:run("pidof sleep").exit_code == 0 end, { timeout = 10 })
    sh:stdin_write("\3") -- ^C: SIGINT to the foreground job, sleep, not to the shell
    sh:stdin_write("echo $((40 + 2))\n")
    out:read_until("42", 10) -- the shell's answer (the echoed keys hold no 42)
    t:assert_eq(vm:run("pidof sleep").exit_code, 1, "sleep was interrupted")
    sh:stdin_write("exit 4\n")
    t:assert_eq(sh:wait("10s").exit_code, 4)
end)
