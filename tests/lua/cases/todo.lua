todo("not written yet")
test("a", function(t) error("must not run") end)
test("b", function(t) error("must not run") end)
