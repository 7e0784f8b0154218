-- A rootfs profile: the root filesystem is a disk image; the injected
-- initramfs holds only the agent, which mounts the disk, makes it /, and
-- execs the profile's init so that it keeps PID 1.
local meta = require("lib.meta")

test("rootfs profile: the disk becomes /, the profile's init is PID 1", function(t)
    local p = io.popen(meta.quote(meta.bin) .. " kernel path")
    local kernel, modules = p:read("l"), p:read("l")
    p:close()
    local d = meta.tmpdir()
    local script = ([[
set -e
PATH="$PATH:/usr/sbin:/sbin" # mkfs.ext4, for users whose PATH has no sbin
cd %s
mkdir -p root/bin root/sbin root/etc root/proc root/sys root/dev root/run root/tmp
cp "$(command -v busybox)" root/bin/busybox
for a in sh cat sleep echo; do ln -s busybox root/bin/$a; done
printf '#!/bin/busybox sh\necho ran > /run/myinit\nwhile :; do /bin/busybox sleep 3600; done\n' > root/sbin/myinit
chmod 755 root/sbin/myinit
echo on-the-disk > root/etc/rootfs-marker
mkfs.ext4 -q -F -d root root.img 32M
]]):format(meta.quote(d))
    t:assert(os.execute(script), "building the image")
    meta.write(d .. "/provium.toml", ([[
[profile.disk]
kernel = "%s"
rootfs = "root.img"
init = "/sbin/myinit"
modules = "%s"
]]):format(kernel, modules))
    meta.write(d .. "/r.test.lua", [[
test("boot", function(t)
    local vm = provium:vm("d", "disk"):boot()
    t:assert_eq(vm:read_file("/etc/rootfs-marker"), "on-the-disk\n")
    -- the agent may answer before PID 1 has finished exec'ing the init
    wait_until(function() return vm:exists("/run/myinit") end, { timeout = 30 })
    t:assert_eq(vm:read_file("/run/myinit"), "ran\n")
    t:assert_contains(vm:read_file("/proc/1/cmdline"), "/sbin/myinit")
    t:assert_eq(vm:run("echo via the shell on the disk").stdout, "via the shell on the disk\n")
end)
]])
    local out, code = meta.provium({ "r.test.lua" }, { cwd = d })
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
end)
