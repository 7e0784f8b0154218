-- The hang watchdog's settings (docs/debugging.md#hangs): --hang-timeout,
-- provium.hang_timeout and meta.hang_timeout take durations, and a bad one
-- is refused with an error naming the setting. No VM boots here: the hang
-- itself is tests/vm/hang.test.lua's.
local meta = require("lib.meta")

test("--hang-timeout takes a duration", function(t)
    meta.assert_refused(t, {
        { { "--hang-timeout", "soon", "lua/cases/pass.lua" },
            "provium: --hang-timeout: bad duration `soon` (e.g. 30, 45s, 2m; 0: never)" },
        { { "--hang-timeout", "-3", "lua/cases/pass.lua" }, "provium: --hang-timeout: bad duration `-3`" },
        { { "--hang-timeout", "", "lua/cases/pass.lua" }, "provium: --hang-timeout: bad duration ``" },
    })
    for _, ok in ipairs({ "45s", "2m", "0", "7" }) do
        local out, code = meta.provium({ "-q", "--hang-timeout", ok, "lua/cases/pass.lua" })
        t:assert_eq(code, 0, out)
    end
end)

test("provium.hang_timeout and meta.hang_timeout name themselves when bad", function(t)
    local dir = meta.tmpdir()
    meta.write(dir .. "/provium.toml", "")
    meta.write(dir .. "/top.test.lua", 'provium.hang_timeout = "later"\ntest("x", function() end)\n')
    meta.write(dir .. "/tests.test.lua", [[
test("a string", { hang_timeout = "never" }, function() end)
test("negative", { hang_timeout = -1 }, function() end)
test("a table", { hang_timeout = {} }, function() end)
test("good", { hang_timeout = "2m" }, function() end)
test("off", { hang_timeout = 0 }, function() end)
]])
    local files, code, out = meta.json_run({ "--no-preflight", "." }, { cwd = dir })
    t:assert_eq(code, 1, out)
    t:assert_contains(files["top.test.lua"].chunk_error,
        "top.test.lua:1: provium.hang_timeout: bad timeout string `later`")
    local s = meta.by_name(files["tests.test.lua"])
    t:assert_eq(s["a string"].message,
        'meta.hang_timeout: bad timeout string `never` (use e.g. "30s", "500ms", "5m", "2h")')
    t:assert_eq(s["negative"].message, "meta.hang_timeout: must not be negative (got -1)")
    t:assert_contains(s["a table"].message, "meta.hang_timeout: expected a number of seconds")
    t:assert_eq(s["good"].status, "passed")
    t:assert_eq(s["off"].status, "passed")
end)
