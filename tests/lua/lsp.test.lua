-- provium lsp-setup (docs/cli.md): stubs for lua-language-server.
local meta = require("lib.meta")

test("lsp-setup writes the stubs and .luarc.json, and never overwrites it silently", function(t)
    local d = meta.tmpdir()
    local out, code = meta.provium({ "lsp-setup", d })
    t:assert_eq(code, 0, out)
    local f = assert(io.open(d .. "/.provium-meta/types.lua"))
    local stubs = f:read("a")
    f:close()
    t:assert_eq(stubs:sub(1, 9), "---@meta\n")
    t:assert(load(stubs, "=types.lua"), "the stubs are Lua")
    for _, class in ipairs { "VM", "Worker", "Lab", "TestContext", "Process", "File", "Stream",
        "Console", "Clock", "RunResult" } do
        t:assert_contains(stubs, "---@class " .. class)
    end
    f = assert(io.open(d .. "/.luarc.json"))
    local rc = json.decode(f:read("a"))
    f:close()
    t:assert_eq(rc["workspace.library"][1], ".provium-meta")
    t:assert_eq(rc["runtime.version"], "Lua 5.4")
    -- an existing .luarc.json is kept, with the settings to merge printed
    meta.write(d .. "/.luarc.json", "{}\n")
    out, code = meta.provium({ "lsp-setup", d })
    t:assert_eq(code, 1)
    t:assert_contains(out, ".luarc.json exists; not overwritten (--force replaces it)")
    t:assert_contains(out, '"workspace.library": [".provium-meta"]')
    f = assert(io.open(d .. "/.luarc.json"))
    t:assert_eq(f:read("a"), "{}\n")
    f:close()
    out, code = meta.provium({ "lsp-setup", "--force", d })
    meta.rmdir(d)
    t:assert_eq(code, 0, out)
end)
