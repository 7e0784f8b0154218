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

-- A stand-in kernel tree: its Makefile and scripts/config do what the real
-- ones do to .config for the targets provium runs (the real tree is the
-- slow kernel_build.test.lua's).
local function fake_tree(olddefconfig)
    local d = meta.tmpdir()
    os.execute("mkdir -p " .. meta.quote(d .. "/scripts"))
    meta.write(d .. "/Makefile", ([[
defconfig:
	printf 'CONFIG_64BIT=y\nCONFIG_OTHER=y\n' > .config
tinyconfig:
	printf '# CONFIG_64BIT is not set\nCONFIG_KERNEL_XZ=y\n' > .config
olddefconfig:
	%s
]]):format(olddefconfig or "@true"))
    meta.write(d .. "/scripts/config", [[#!/bin/sh
[ "$1" = --file ] || exit 9
f=$2; shift 2
while [ $# -gt 0 ]; do
    case $1 in
    -e) echo "CONFIG_$2=y" >> "$f" ;;
    -d) echo "# CONFIG_$2 is not set" >> "$f" ;;
    *) exit 9 ;;
    esac
    shift 2
done
]])
    os.execute("chmod +x " .. meta.quote(d .. "/scripts/config"))
    return d
end

test("kernel config: the tree's own scripts/config and make, what changed, what Kconfig dropped", function(t)
    local d = fake_tree()
    local out, code = meta.provium({ "kernel", "config", d })
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "provium: make defconfig\n")
    t:assert_contains(out, "  CONFIG_SIGNALFD: unset -> y\n")
    t:assert(not out:find("CONFIG_64BIT: "), "64BIT was set already: " .. out)
    local config = assert(io.open(d .. "/.config")):read("a")
    t:assert_contains(config, "CONFIG_VIRTIO_CONSOLE=y\n")
    t:assert_contains(config, "CONFIG_VIRTIO_NET=y\n")
    out, code = meta.provium({ "kernel", "check", d .. "/.config" })
    t:assert_eq(code, 0, out)

    d = fake_tree()
    out, code = meta.provium({ "kernel", "config", "--minimal", d })
    t:assert_eq(code, 0, out)
    t:assert_contains(out, "provium: make tinyconfig\n")
    t:assert_contains(out, "  CONFIG_64BIT: unset -> y\n")
    t:assert_contains(out, "  left out (--minimal): CONFIG_VIRTIO_NET, for networks\n")
    config = assert(io.open(d .. "/.config")):read("a")
    t:assert_contains(config, "CONFIG_KERNEL_GZIP=y\n# CONFIG_KERNEL_XZ is not set\n")
    t:assert(not config:find("CONFIG_VIRTIO_NET=y"), config)

    -- a dependency the tree lacks: olddefconfig turns the option off again
    d = fake_tree("sed -i '/CONFIG_SIGNALFD=/d' .config")
    out, code = meta.provium({ "kernel", "config", d })
    t:assert_eq(code, 2, out)
    t:assert_contains(out, "`make olddefconfig` turned off CONFIG_SIGNALFD (a dependency this tree lacks")

    out, code = meta.provium({ "kernel", "build", meta.tmpdir() })
    t:assert_eq(code, 2, out)
    t:assert_contains(out, "is not a kernel source tree (no executable ")
end)
