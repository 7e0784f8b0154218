-- What the bench files share: a median, and the time a function takes.
local M = {}

function M.median(t)
    table.sort(t)
    return t[(#t + 1) // 2]
end

function M.timed(f)
    local t0 = _provium_c.now()
    f()
    return _provium_c.now() - t0
end

return M
