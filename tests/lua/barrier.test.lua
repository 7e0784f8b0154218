-- lab:barrier (docs/labs.md): files of one run, running at once, meet at a
-- named barrier that the runner keeps.
local meta = require("lib.meta")

-- A project of files {name = source}; their --json results by file name.
local function run(files, args)
    local d = meta.tmpdir()
    meta.write(d .. "/provium.toml", '[provium]\nroots = ["."]\n')
    local a = {}
    for _, x in ipairs(args or { "-j", "4" }) do a[#a + 1] = x end
    for name, src in pairs(files) do
        meta.write(d .. "/" .. name, src)
        a[#a + 1] = name
    end
    -- the files must run at once: no waiting for the host's CPU pressure
    -- (other runs share this machine)
    local res, code, out = meta.json_run(a, { cwd = d, env = { PROVIUM_PSI_THRESHOLD = "off" } })
    local by = {}
    for path, f in pairs(res) do by[path] = f.tests[1] or { status = "chunk", message = f.chunk_error } end
    return by, code, out
end

test("two files meet: the first waits for the second", function(t)
    local by, code, out = run({
        ["a.test.lua"] = [[test("a", function(t)
            provium:barrier("meet", 2, 30)
            t:log(_provium_c.now())
        end)]],
        ["b.test.lua"] = [[test("b", function(t)
            _provium_c.sleep(1)
            t:log(_provium_c.now())
            provium:barrier("meet", 2, 30)
        end)]],
    })
    t:assert_eq(code, 0, out)
    local released, arrived = tonumber(by["a.test.lua"].log[1]), tonumber(by["b.test.lua"].log[1])
    t:assert(released >= arrived, ("a went on at %s, before b arrived at %s"):format(released, arrived))
end)

test("alone at a barrier for two: no other file can come", function(t)
    local by, code = run({ ["a.test.lua"] = [[test("a", function() provium:barrier("meet", 2) end)]] })
    t:assert_eq(code, 1)
    t:assert_contains(by["a.test.lua"].message, "a.test.lua:1: barrier `meet` cannot complete: " ..
        "it wants 2 files, 1 arrived (a.test.lua), and no other file of the run is left to arrive")
end)

test("the timeout names the barrier and who arrived", function(t)
    local by, code = run({
        ["a.test.lua"] = [[test("a", function() provium:barrier("x", 2, 0.5) end)]],
        ["b.test.lua"] = [[test("b", function() _provium_c.sleep(2) end)]],
    })
    t:assert_eq(code, 1)
    t:assert_contains(by["a.test.lua"].message, "barrier `x` timed out after 0.5s: 1 of 2 arrived (a.test.lua)")
    t:assert_eq(by["b.test.lua"].status, "passed")
end)

test("a file that ends releases the waiters; counts must agree", function(t)
    local started = _provium_c.now()
    local by, code = run({
        ["a.test.lua"] = [[test("a", function() provium:barrier("y", 2, 30) end)]],
        ["b.test.lua"] = [[test("b", function()
            _provium_c.sleep(0.5)
            provium:barrier("y", 3, 30)
        end)]],
    })
    t:assert_eq(code, 1)
    t:assert_contains(by["b.test.lua"].message, "barrier `y`: count 3 differs from the 2 of the files waiting (a.test.lua)")
    t:assert_contains(by["a.test.lua"].message, "barrier `y` cannot complete")
    t:assert(_provium_c.now() - started < 20, "released when b ended, not at its 30 s timeout")
end)

test("arguments, and a count of 1", function(t)
    provium:barrier("solo", 1)
    t:assert_contains(t:assert_raises(function() provium:barrier("", 2) end), "name must be a non-empty string")
    t:assert_contains(t:assert_raises(function() provium:barrier("n", 0) end), "count must be a whole number of files from 1 to 64, got 0")
    t:assert_contains(t:assert_raises(function() provium:barrier("n", 2, "soon") end), "bad timeout string `soon`")
end)
