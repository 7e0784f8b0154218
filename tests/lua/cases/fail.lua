test("split-brain", function(t)
    t:assert(false, "client A could not reach client B after partition")
end)
test("fine", function(t) end)
