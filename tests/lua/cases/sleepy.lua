test("sleeps", function(t) _provium_c.sleep(30) end)
