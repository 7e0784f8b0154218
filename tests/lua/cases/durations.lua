-- Durations too long to be meant: each test must fail with a message that
-- says so, never time out at once (a deadline overflowed into the past).
test("huge string timeout", { timeout = "1e300h" }, function() for _ = 1, 1e5 do end end)
test("huge number timeout", { timeout = 1e300 }, function() for _ = 1, 1e5 do end end)
provium.timeout = "2h"
test("a long but sane timeout", { timeout = "277777h" }, function() for _ = 1, 1e5 do end end)
