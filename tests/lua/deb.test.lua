-- The Debian package (make deb, tools/mkdeb): built from the binary under
-- test, its control fields, its contents, and the provium it installs runs.
local meta = require("lib.meta")

local root = meta.tests .. "/.."

local function field(deb, name)
    local out, code = meta.sh(("dpkg-deb -f %s %s"):format(meta.quote(deb), name))
    return code == 0 and out:gsub("\n$", "") or nil
end

test("make deb's package installs a provium that runs", function(t)
    local d = meta.tmpdir()
    local out, code = meta.sh(("%s/tools/mkdeb %s %s"):format(meta.quote(root), meta.quote(meta.bin),
        meta.quote(d)))
    t:assert_eq(code, 0, out)
    local deb = out:match("[^\n]+")
    local version = meta.sh(meta.quote(meta.bin) .. " --version"):match("^provium (%S+)")
    local debver = version:match("^%d") and version or "0~git" .. version
    debver = debver:gsub("[-_]", "+")
    t:assert_eq(deb, ("%s/provium_%s_amd64.deb"):format(d, debver))

    t:assert_eq(field(deb, "Package"), "provium")
    t:assert_eq(field(deb, "Version"), debver)
    t:assert_eq(field(deb, "Architecture"), "amd64")
    t:assert_eq(field(deb, "Section"), "devel")
    t:assert_eq(field(deb, "Priority"), "optional")
    local maint = field(deb, "Maintainer")
    t:assert(maint and maint:match("^.+ <.+@.+>$"), "Maintainer: " .. tostring(maint))
    t:assert_contains(field(deb, "Description"), "test operating-system kernels in QEMU VMs")
    local depends = field(deb, "Depends")
    for _, pkg in ipairs({ "qemu-system-x86", "busybox-static", "kmod", "libc6", "libjansson4" }) do
        t:assert((", " .. depends .. ","):find(", " .. pkg .. ",", 1, true), pkg .. " in Depends: " .. depends)
    end

    local x = d .. "/root"
    out, code = meta.sh(("dpkg-deb -x %s %s"):format(meta.quote(deb), meta.quote(x)))
    t:assert_eq(code, 0, out)
    out, code = meta.sh(meta.quote(x .. "/usr/bin/provium") .. " --version")
    t:assert_eq(code, 0, out)
    t:assert_eq(out, meta.sh(meta.quote(meta.bin) .. " --version"))
    t:assert_eq(meta.sh("readlink " .. meta.quote(x .. "/usr/bin/provium-coverage")), "provium\n")
    for _, f in ipairs({ "/usr/share/man/man1/provium.1.gz", "/usr/share/doc/provium/README.md",
        "/usr/share/doc/provium/docs/cli.md", "/usr/share/doc/provium/examples/smoke.test.lua",
        "/usr/share/doc/provium/examples/ci/gitlab-ci.yml" }) do
        t:assert_eq(meta.sh("test -s " .. meta.quote(x .. f) .. " && echo yes"), "yes\n", f)
    end
    -- what a build leaves in examples/ stays out: only the tracked files go in
    t:assert_eq(meta.sh("find " .. meta.quote(x) .. " -name '*.ko' -o -name '*.o'"), "")
    out = meta.sh("zcat " .. meta.quote(x .. "/usr/share/man/man1/provium.1.gz") .. " | head -c 200")
    t:assert_contains(out, "provium")
end)

test("mkdeb refuses a binary that gives no version", function(t)
    local d = meta.tmpdir()
    local out, code = meta.sh(("%s/tools/mkdeb /bin/true %s"):format(meta.quote(root), meta.quote(d)))
    t:assert_eq(code, 1, out)
    t:assert_contains(out, "mkdeb: /bin/true --version: no version in its answer")
    t:assert_eq(meta.sh("ls " .. meta.quote(d)), "")
end)
