-- Durations (docs/writing-tests.md#timeouts): forms, and the longest one
-- (1e9 s); a longer one is refused with a message that says why.
local meta = require("lib.meta")

test("a huge per-test timeout fails the test with a reason, not a timeout", function(t)
    local files, code, out = meta.json_run({ "lua/cases/durations.lua" })
    local _, f = next(files)
    t:assert(f, "a json line for the file: " .. out)
    t:assert_eq(code, 1, out)
    local s = meta.by_name(f)
    t:assert_eq(s["huge string timeout"].status, "failed")
    t:assert_eq(s["huge string timeout"].message,
        "timeout: `1e300h` is longer than the longest duration, 1e9 s (about 31 years)")
    t:assert_eq(s["huge number timeout"].message,
        "timeout: 1e+300 s is longer than the longest duration, 1e9 s (about 31 years)")
    t:assert_eq(s["a long but sane timeout"].status, "passed")
end)

test("durations: the longest, and one past it", function(t)
    t:assert_eq(_provium.duration("1e9", "x"), 1e9)
    t:assert_eq(_provium.duration(1e9, "x"), 1e9)
    t:assert_contains(t:assert_raises(function() _provium.duration("1000000001", "x") end),
        "x: `1000000001` is longer than the longest duration")
    t:assert_contains(t:assert_raises(function() _provium.duration("16666667m", "x") end),
        "is longer than the longest duration")
    local err = t:assert_raises(function()
        wait_until(function() return true end, { timeout = "1e300h" })
    end)
    t:assert_contains(err, "wait_until: timeout: `1e300h` is longer than the longest duration")
    -- malformed strings keep their own message
    t:assert_contains(t:assert_raises(function() _provium.duration("1e300x", "x") end),
        "x: bad timeout string `1e300x`")
    t:assert_contains(t:assert_raises(function() _provium.duration("nan", "x") end),
        "x: bad timeout string `nan`")
end)
