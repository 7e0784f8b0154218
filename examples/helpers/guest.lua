-- A helper module: tests load it with require("helpers.guest") because
-- provium puts the roots of provium.toml on package.path.
local M = {}

-- The guest's memory in KiB, from /proc/meminfo.
function M.mem_total_kib(vm)
    local info = vm:read_file("/proc/meminfo")
    return tonumber(info:match("MemTotal:%s+(%d+) kB"))
end

-- Mounted filesystems as { [mountpoint] = fstype }.
function M.mounts(vm)
    local t = {}
    for line in vm:read_file("/proc/mounts"):gmatch("[^\n]+") do
        local _, dir, fstype = line:match("^(%S+) (%S+) (%S+)")
        t[dir] = fstype
    end
    return t
end

return M
