-- A file that sends an event line too long to keep (docs/events.md), then
-- an ordinary one: the first is dropped, the second arrives.
test("a huge event", function(t)
    _provium_c.event("test_note", { text = ("x"):rep(20 * 1024 * 1024) })
end)

test("then a small one", function(t)
    _provium_c.event("test_note", { text = "small" })
end)
