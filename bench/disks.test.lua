-- Run by bench/boot: guest sequential read and write throughput of an
-- attached disk (dd, 64 MiB by 1 MiB, direct I/O; the write ends with an
-- fsync) on three disks of one VM, in the same run, interleaved: a plain
-- disk (QEMU opens the raw image itself), a faultable one (served by
-- provium's NBD server, no fault set) and a mediated one (writes held until
-- the fsync). The ratios to plain are the cost of provium in the path;
-- docs/disks.md#throughput holds the figures.
local N = tonumber(os.getenv("BENCH_N") or "5")
local MIB = 64

local C = _provium_c
local stats = require("stats")
local median = stats.median

provium:claim { memory = "700M" }

-- An image of 128 MiB whose first 64 hold data (reads read the file, not holes).
local function image(dir, name)
    local path = dir .. "/" .. name .. ".img"
    local f = assert(io.open(path, "wb"))
    local chunk = ("provium!"):rep(128 * 1024)
    for _ = 1, MIB do f:write(chunk) end
    f:close()
    os.execute(("truncate -s 128M '%s'"):format(path))
    return path
end

test("disk throughput: plain, faultable, mediated", function(t)
    local dir = C.tempdir()
    local vm = provium:vm("d", "default", { memory = "512M" })
    local kinds = { "plain", "faultable", "mediated" }
    local dev = {}
    vm:attach_disk { id = "plain", image = image(dir, "plain"), plain = true }
    vm:attach_disk { id = "faultable", image = image(dir, "faultable") }
    vm:attach_disk { id = "mediated", image = image(dir, "mediated"), mediated = true }
    vm:boot()
    for _, k in ipairs(kinds) do dev[k] = vm:disk(k):device() end
    -- MiB/s of one dd, timed from the host (busybox's dd does not time
    -- itself; the agent's round trip is a millisecond of it)
    local function dd(args)
        local s = stats.timed(function()
            vm:run({ "dd", table.unpack(args) }, { timeout = 600 }):assert_ok()
        end)
        return MIB / s
    end
    local rd, wr = {}, {}
    for _, k in ipairs(kinds) do rd[k], wr[k] = {}, {} end
    for _ = 1, N do
        for _, k in ipairs(kinds) do
            rd[k][#rd[k] + 1] = dd { "if=" .. dev[k], "of=/dev/null", "bs=1M", "count=" .. MIB, "iflag=direct" }
            wr[k][#wr[k] + 1] = dd { "if=/dev/zero", "of=" .. dev[k], "bs=1M", "count=" .. MIB, "oflag=direct", "conv=fsync" }
        end
    end
    for _, what in ipairs { { "read", rd }, { "write+fsync", wr } } do
        local m = what[2]
        local p, f, md = median(m.plain), median(m.faultable), median(m.mediated)
        print(("disks: guest %s, %d MiB by 1 MiB, direct I/O: plain %.0f MiB/s, faultable %.0f MiB/s (%.2fx plain), mediated %.0f MiB/s (%.2fx plain) (median of %d)")
            :format(what[1], MIB, p, f, f / p, md, md / p, N))
    end
    vm:kill()
    C.remove_tree(dir)
end)
