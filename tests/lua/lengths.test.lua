-- Lengths of Lua tables reach C through lua_rawlen, bounded: a __len cannot
-- size an allocation (docs/architecture.md#errors).
test("a huge __len cannot size an allocation", function(t)
    local vm = provium:vm("lenvm", "default")
    local argv = setmetatable({ "true" }, { __len = function() return 1 << 61 end })
    -- the length is the raw one (1): the call gets as far as the VM's state
    t:assert_contains(t:assert_raises(function() _provium_c.run(vm, argv, {}) end),
        "needs a booted VM")
    local neg = setmetatable({ "true" }, { __len = function() return -5 end })
    t:assert_contains(t:assert_raises(function() _provium_c.run(vm, neg, {}) end),
        "needs a booted VM")
end)
