-- Not a *.test.lua file: tests/lua/outcomes.test.lua runs it. Messages that
-- hold a NUL, as a console excerpt or a program's output can.
test("fails with a NUL", function(t) t:fail("before\0after") end)
test("errors with a NUL", function(t) error("one\0two", 0) end)
test("sends an event with a NUL", function(t)
    _provium_c.event("test_note", { path = _provium_c.display, text = "x\0y" })
end)
