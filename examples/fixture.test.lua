-- Starts from the prepared machine of fixtures/prepared.fixture.lua instead
-- of booting and preparing one (docs/fixtures.md).
local vm = provium:vm_fixture("fixtures/prepared")

test("the fixture's files are there", function(t)
    t:assert_eq(#vm:listdir("/srv/data"), 3)
    t:assert_eq(vm:read_file("/srv/data/item2"), "item 2\n")
end)

test("and the machine is ours to change", function(t)
    vm:unlink("/srv/data/item1")
    t:assert_eq(vm:exists("/srv/data/item1"), false)
end)
