-- Helpers for tests that run provium itself on small case files and look
-- at what it printed and how it exited. (Test code may use the shell; the
-- provium binary never does.)
local M = {}

-- The tests directory (this file is tests/lib/meta.lua); provium runs there
-- unless told otherwise, so displayed paths are relative to it.
M.tests = (debug.getinfo(1, "S").source:match("^@(.*)/lib/meta%.lua$")) or "."

M.bin = os.getenv("PROVIUM_BIN") or _provium_c.exe

function M.quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Run a shell command line; returns its output (stdout+stderr) and exit code.
function M.sh(cmd)
    local p = io.popen(cmd .. " 2>&1; echo \"@@EXIT=$?\"")
    local out = p:read("a")
    p:close()
    local code = tonumber(out:match("@@EXIT=(%d+)%s*$"))
    return out:gsub("@@EXIT=%d+%s*$", ""), code
end

-- Run provium with args (a list) in opts.cwd, with opts.env added to its
-- environment; returns output (stdout+stderr) and the exit code.
function M.provium(args, opts)
    opts = opts or {}
    local parts = { M.quote(M.bin) }
    for _, a in ipairs(args) do parts[#parts + 1] = M.quote(a) end
    local cmd = table.concat(parts, " ")
    for k, v in pairs(opts.env or {}) do cmd = k .. "=" .. M.quote(v) .. " " .. cmd end
    return M.sh("cd " .. M.quote(opts.cwd or M.tests) .. " && " .. cmd)
end

-- Each case {args, text}: provium refuses args with exit 2, saying text.
function M.assert_refused(t, cases)
    for _, case in ipairs(cases) do
        local out, code = M.provium(case[1])
        t:assert_eq(code, 2, out)
        t:assert_contains(out, case[2])
    end
end

-- The --json lines in a run's output, decoded, keyed by path.
function M.json_lines(out)
    local files = {}
    for line in out:gmatch("[^\n]+") do
        if line:sub(1, 1) == "{" then
            local f = json.decode(line)
            files[f.path] = f
        end
    end
    return files
end

-- The --json lines of a run, decoded, keyed by path.
function M.json_run(args, opts)
    local a = { "--json" }
    for _, x in ipairs(args) do a[#a + 1] = x end
    local out, code = M.provium(a, opts)
    return M.json_lines(out), code, out
end

-- <name>.ko for the guest's kernel release kver, built in a temporary copy
-- of the module's source directory src (<name>.c and its Makefile; the tree
-- stays clean). The test skips without the kernel's headers (as
-- examples/module does) and fails when the build does.
function M.build_module(t, src, name, kver)
    local headers = "/usr/src/linux-headers-" .. kver
    if not io.open(headers .. "/Makefile") then
        t:skip("no headers for " .. kver .. " in " .. headers ..
            " (make deps installs linux-headers-cloud-amd64)")
    end
    local dir = M.tmpdir()
    local out, code = M.sh(("cp %s/%s.c %s/Makefile %s && make -s -C %s KVER=%s")
        :format(M.quote(src), name, M.quote(src), M.quote(dir), M.quote(dir), M.quote(kver)))
    if code ~= 0 then t:fail(("building %s.ko failed:\n%s"):format(name, out)) end
    return ("%s/%s.ko"):format(dir, name)
end

-- A temporary directory, removed when the test (or file) that made it ends,
-- even if it fails before its own rmdir.
function M.tmpdir()
    local p = io.popen("mktemp -d /tmp/provium-test.XXXXXX")
    local d = p:read("l")
    p:close()
    local scope = rawget(_G, "provium")
    if getmetatable(scope) == _provium.Lab then
        scope:_register({ close = function() M.rmdir(d) end }, 9)
    end
    return d
end

function M.rmdir(d)
    assert(d:match("^/tmp/provium%-test%."))
    os.execute("rm -rf " .. M.quote(d))
end

function M.write(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
end

function M.by_name(file)
    local t = {}
    for _, x in ipairs(file.tests) do t[x.name] = x end
    return t
end

return M
