test("one", function(t) end)
