-- Not a *.test.lua file: tests/lua/labs.test.lua runs it. One claim in the
-- source (the runner reads it), made at run time from a helper: at the
-- top level, twice, and once in each of two tests.
local function claim() provium:claim { memory = "600M" } end
claim()
local ok, err = pcall(claim)
test("a second claim in the same scope", function(t)
    t:assert_eq(ok, false)
    t:assert_contains(err, "provium:claim: claim already taken")
end)
test("a claim in a test is the test's", function(t) claim() end)
test("and the next test may claim again", function(t)
    claim()
    t:assert_contains(t:assert_raises(claim), "claim already taken")
end)
