-- provium kernel check: what it prints and its exit codes (docs/kernels.md),
-- on Debian's own config (tools/deps installs linux-headers-cloud-amd64)
-- and an edited copy of it. No VM boots.
local meta = require("lib.meta")

local function debian_config()
    local p = io.popen("ls /usr/src/linux-headers-*-cloud-amd64/.config 2>/dev/null")
    local path = p:read("l")
    p:close()
    return path
end

test("kernel check: 0 with every required option, 1 naming one that is missing, 2 with nothing to read", function(t)
    local config = debian_config()
    if not config then t:skip("no linux-headers-*-cloud-amd64 (make deps installs it)") end
    local out, code = meta.provium({ "kernel", "check", config })
    t:assert_eq(code, 0, out)
    t:assert_contains(out, config .. ":\n")
    t:assert(out:find("all %d+ required options set"), out)

    local d = meta.tmpdir()
    local text = assert(io.open(config)):read("a")
    local edited, n = text:gsub("\nCONFIG_SIGNALFD=y\n", "\n# CONFIG_SIGNALFD is not set\n")
    t:assert_eq(n, 1, "CONFIG_SIGNALFD=y in " .. config)
    edited = edited:gsub("\nCONFIG_MODULES=y\n", "\n# CONFIG_MODULES is not set\n")
    meta.write(d .. "/config", edited)
    out, code = meta.provium({ "kernel", "check", d .. "/config" })
    t:assert_eq(code, 1, out)
    t:assert_contains(out, "\n  CONFIG_SIGNALFD          the agent waits for its processes with signalfd()\n")
    t:assert_contains(out, ":\nrequired, missing:\n")
    -- without MODULES, a driver that is a module does not count
    t:assert_contains(out, "  CONFIG_VIRTIO_PCI        the PCI transport of every virtio device (is m, but MODULES is off)\n")
    t:assert_contains(out, "of the ")
    t:assert_contains(out, " required options missing: this kernel will not reach the agent")

    out, code = meta.provium({ "kernel", "check", d .. "/missing" })
    t:assert_eq(code, 2, out)
    t:assert_contains(out, "provium: kernel check: " .. d .. "/missing: No such file or directory")
end)

test("kernel options prints the table of docs/kernels.md", function(t)
    local out, code = meta.provium({ "kernel", "options" })
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "| `CONFIG_SIGNALFD` | `y` | required | every VM |")
    local doc = assert(io.open(meta.tests .. "/../docs/kernels.md")):read("a")
    t:assert_contains(doc, out)
end)
