-- What a hostile guest could make a test print or fail with: OSC 52 (a
-- clipboard write), a window title, colours, a lone CR, NUL, DEL, a C1 CSI
-- and bytes that are not UTF-8. tests/lua/guest_bytes.test.lua runs it.
print("printed \27]0;pwned title\7 and \27[2J clear \0 nul \155 raw csi \255")
test("osc 52 in a failure message", function(t)
    t:fail("clipboard \27]52;c;cHduZWQ=\7 after\rover \127 del \194\155 csi \255 bad")
end)
test("\27]0;a title\7 in a name", function() end)
