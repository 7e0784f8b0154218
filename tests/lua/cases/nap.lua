-- Not a *.test.lua file: tests/lua/runner.test.lua runs it.
test("naps", function(t) _provium_c.sleep(2) end)
