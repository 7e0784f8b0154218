-- Not a *.test.lua file: tests/lua/labs.test.lua runs it and reads its events.
local function unused() return provium:vm_fixture("fixtures/one"), provium.lab_fixture "fixtures/pair" end
-- provium:vm_fixture("fixtures/in-a-comment") is not a reference
local s = 'vm_fixture("fixtures/in-a-string")'
test("passes with logs", function(t) t:log("one"); t:log(2) end)
test("fails with a log", function(t) t:log("before"); t:fail("boom") end)
test("no log", function(t) end)
test("depends_on_file runs", function(t)
    provium:depends_on_file("data/whatever.bin")
    t:assert_contains(t:assert_raises(function() provium:depends_on_file(3) end),
        "depends_on_file: path must be a non-empty string, got number")
end)
local again = 'x'; local function twice() return provium:vm_fixture("fixtures/one") end
