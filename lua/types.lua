---@meta
-- Type stubs for lua-language-server, written by `provium lsp-setup` into
-- .provium-meta/types.lua (docs/cli.md). Not loaded by provium itself.

---@class RunResult
---@field exit_code integer
---@field stdout string
---@field stderr string
---@field status "exited"|"signalled"|"timed_out"
---@field timed_out boolean
---@field signal integer?
local RunResult = {}
---@return boolean
function RunResult:ok() end
---@param msg string?
---@return RunResult
function RunResult:assert_ok(msg) end
---@return string the first line of stdout
function RunResult:row() end

---@alias Duration number|string seconds, or "500ms", "5s", "2m", "1h"
---@alias RunOpts {args: string[]?, env: table<string, string>?, env_clear: boolean?, cwd: string?, stdin: string?, pty: (boolean|{rows: integer?, cols: integer?})?, timeout: Duration?, timeout_ms: integer?}

---@class Stream
local Stream = {}
---@param timeout Duration?
---@return string? chunk nil at the end
function Stream:next(timeout) end
---@param pattern string
---@param timeout Duration?
---@return string
function Stream:read_until(pattern, timeout) end
---@param pattern string
---@param timeout Duration?
---@return string
function Stream:expect(pattern, timeout) end
---@param timeout Duration?
---@return string
function Stream:drain(timeout) end
---@return boolean
function Stream:eof() end
---@return string
function Stream:creation_site() end
function Stream:close() end
---@return {kind: string, detail: any, creation_site: string, test_name: string?}
function Stream:meta() end

---@class Process
local Process = {}
---@param timeout Duration?
---@return RunResult
function Process:wait(timeout) end
---@param sig (string|integer)?
function Process:kill(sig) end
---@param sig string|integer
function Process:signal(sig) end
---@return integer
function Process:pid() end
---@return integer
function Process:handle() end
---@return {running: boolean, pid: integer, status: string, exit_code: integer, signal: integer?, stdout_bytes: integer, stderr_bytes: integer}
function Process:status() end
---@param data string
---@return integer
function Process:stdin_write(data) end
function Process:close_stdin() end
---@param rows integer
---@param cols integer
function Process:resize(rows, cols) end
---@return Stream
function Process:stdout_stream() end
---@return Stream
function Process:stderr_stream() end
function Process:close() end

---@class File
local File = {}
---@param n integer
---@return string
function File:read(n) end
---@param opts {max_size: integer?}?
---@return string
function File:read_all(opts) end
---@param data string
---@return integer
function File:write(data) end
---@param offset integer
---@param whence ("set"|"cur"|"end")?
---@return integer
function File:seek(offset, whence) end
---@return integer
function File:tell() end
---@return integer
function File:fd() end
---@return Stream
function File:tail_stream() end
function File:close() end

---@alias SyscallSpec {args: integer[]?, bufs: string[]?, ptrs: integer[]?, nested: {parent: integer, child: integer, offset: integer}[]?}
---@alias SyscallResult {ret: integer, result: integer, errno: integer, out_bufs: string[]}

---@class Pending
local Pending = {}
---@param timeout Duration?
---@return SyscallResult
function Pending:await(timeout) end

---@class GuestOps
local GuestOps = {}
---@param cmd string|string[]
---@param opts (RunOpts|string[])?
---@return RunResult
function GuestOps:run(cmd, opts) end
---@param cmd string|string[]
---@param opts (RunOpts|string[])?
---@return Process
function GuestOps:run_async(cmd, opts) end
---@param path string
---@param opts {max_size: integer?}?
---@return string
function GuestOps:read_file(path, opts) end
---@param path string
---@param data string
---@param mode integer?
function GuestOps:write_file(path, data, mode) end
---@param host string
---@param guest string
function GuestOps:push_file(host, guest) end
---@param guest string
---@param host string
---@param opts {max_size: integer?}?
function GuestOps:pull_file(guest, host, opts) end
---@param path string
---@return {size: integer, mtime: number, mtime_ns: integer, perm: integer, entry_type: string, uid: integer, gid: integer}
function GuestOps:stat(path) end
---@param path string
---@return boolean
function GuestOps:exists(path) end
---@param path string
---@param mode {read: boolean?, write: boolean?, create: boolean?, truncate: boolean?, append: boolean?, exclusive: boolean?, perm: integer?}
---@return File
function GuestOps:open_file(path, mode) end
---@param path string
---@return {name: string, entry_type: string}[]
function GuestOps:listdir(path) end
---@param path string
---@param opts {parents: boolean?, perm: integer?}?
function GuestOps:mkdir(path, opts) end
---@param path string
function GuestOps:unlink(path) end
---@param from string
---@param to string
function GuestOps:rename(from, to) end
---@param nr integer
---@param ... integer|SyscallSpec
---@return SyscallResult
function GuestOps:syscall(nr, ...) end
---@param nr integer
---@param ... integer|SyscallSpec
---@return Pending
function GuestOps:syscall_async(nr, ...) end
---@param fd integer
---@param cmd integer
---@param data string?
---@param opts {bufs: string[]?, ptr_offsets: integer[]?}?
---@return {ret: integer, result: integer, out_data: string?, out_bufs: string[]}
function GuestOps:ioctl(fd, cmd, data, opts) end
---@param addr integer
---@param len integer
---@return string
function GuestOps:read_mem(addr, len) end
---@param addr integer
---@param data string
function GuestOps:write_mem(addr, data) end
---@param path string
---@param opts {start: "end"|"beginning"|"start"|number}?
---@return Stream
function GuestOps:tail_file(path, opts) end
---@param fd integer|File
---@return Stream
function GuestOps:fd_stream(fd) end
---@param fn fun(b: any)
---@return {ok: any, err: string}[]
function GuestOps:batch(fn) end

---@class Worker: GuestOps
local Worker = {}
---@param sig (string|integer)?
function Worker:kill(sig) end
---@return RunResult[]
function Worker:join() end
---@return string?
function Worker:close() end
---@return "running"|"exited"|"closed"|string
function Worker:state() end
---@return integer
function Worker:handle() end
---@return integer
function Worker:pid() end
---@return VM
function Worker:vm() end

---@class Console
local Console = {}
---@return string
function Console:read_log() end
---@param pattern string
---@param timeout Duration?
---@return string
function Console:expect(pattern, timeout) end
---@return Stream
function Console:read() end
---@param data string
function Console:write(data) end

---@class Clock
local Clock = {}
---@return number
function Clock:get() end
---@return integer
function Clock:get_ns() end
---@param seconds number
function Clock:set(seconds) end
---@param ns integer
function Clock:set_ns(ns) end
---@param seconds number
function Clock:advance(seconds) end
---@param duration Duration
function Clock:sleep(duration) end

---@alias BootOpts {memory: string|integer?, cpus: integer?, kernel_cmdline: string?, kernel_cmdline_append: string?, rng_seed: integer?, initial_time: number?, cold: boolean?, pvh: boolean?, files: {path: string, content: string, mode: integer?}[]?, agent_timeout: number?}

---@class VM: GuestOps
local VM = {}
---@param opts BootOpts?
---@return VM
function VM:boot(opts) end
function VM:shutdown() end
function VM:kill() end
function VM:reset() end
function VM:pause() end
function VM:resume() end
function VM:power_button() end
function VM:close() end
function VM:ping() end
---@return "created"|"booted"|"paused"|"shutdown"|"dead"
function VM:state() end
---@return string
function VM:name() end
---@return string
function VM:profile() end
---@return integer?
function VM:cid() end
---@return string
function VM:kernel_release() end
---@return number
function VM:boot_seconds() end
---@return boolean
function VM:boot_cached() end
---The port of QEMU's gdbstub on 127.0.0.1 while QEMU runs under `--gdb`, else nil.
---@return integer?
function VM:gdb_port() end
---@return Console
function VM:console() end
---@return Clock
function VM:clock() end
---@return {title: string, excerpt: string, vm: string}[]
function VM:splats() end
---@param opts {uid: integer?, gid: integer?, groups: integer[]?, caps: (string|integer)[]?, no_new_privs: boolean?, cwd: string?, env: table<string, string>?, env_clear: boolean?}?
---@return Worker
function VM:spawn_worker(opts) end
---@param name string
---@param params string|table?
function VM:modprobe(name, params) end
---@param path string
---@param params string|table?
function VM:insmod(path, params) end
---@param name string
function VM:rmmod(name) end
---@return integer
function VM:open_file_count() end
---@return integer
function VM:open_stream_count() end
---@return boolean
function VM:is_quiescent() end
---@return string?
function VM:console_socket_path() end
---@param path string?
---@return Snapshot
function VM:snapshot(path) end
---@param snap Snapshot|string
---@return VM
function VM:restore(snap) end

---@param name string a bridge's name, or eth<N> / enp0s<N> / ens<N>
---@return Nic
function VM:nic(name) end
---@param bridge string|Bridge
---@return string the VM's IPv4 address there
function VM:ip(bridge) end

---@alias Member VM|string
---@alias Direction {from: Member, to: Member}

---@class Bridge docs/networks.md
local Bridge = {}
---@param x Member|Member[]
---@return Bridge
function Bridge:attach(x) end
---@param x Member
function Bridge:detach(x) end
---@return string[]
function Bridge:members() end
---@param a Member|Direction
---@param b Member?
function Bridge:partition(a, b) end
---@param a Member|Direction
---@param b Member?
function Bridge:unpartition(a, b) end
function Bridge:partition_all() end
function Bridge:restore_all() end
---@param a Member|Direction
---@param b Member?
---@return boolean
function Bridge:is_partitioned(a, b) end
---@param x number|{from: Member, to: Member, ms: number}
function Bridge:add_latency(x) end
---@param x number|{from: Member, to: Member, p: number}
function Bridge:drop_rate(x) end
---@param x integer|{from: Member, to: Member, bps: integer}
function Bridge:bandwidth_limit(x) end
---@param t {from: Member, to: Member, ms: number}
function Bridge:add_directional_latency(t) end
---@param t {from: Member, to: Member, p: number}
function Bridge:directional_drop_rate(t) end
function Bridge:reset() end
---@return number
function Bridge:latency_ms() end
---@return number
function Bridge:drop_rate_pct() end
---@return integer
function Bridge:bandwidth_bps() end
---@param x Member
function Bridge:isolate(x) end
---@param x Member
function Bridge:unisolate(x) end
---@param x Member
---@return boolean
function Bridge:is_isolated(x) end
---@param other Bridge|Bridge[]
function Bridge:route(other) end
---@return string[]
function Bridge:routes() end
function Bridge:enable_uplink() end
function Bridge:disable_uplink() end
---@param x Member
---@return Nic
function Bridge:nic(x) end
---@return Capture
function Bridge:capture() end
---@return string
function Bridge:name() end
function Bridge:close() end

---@class Nic docs/networks.md#nics
local Nic = {}
---@return {rx_packets: integer, rx_bytes: integer, tx_packets: integer, tx_bytes: integer, dropped: integer, errors: integer}
function Nic:counters() end
---@return Capture
function Nic:capture() end
function Nic:disconnect() end
function Nic:reconnect() end
---@return string
function Nic:vm_name() end
---@return string
function Nic:bridge() end

---@class Capture: Stream classic pcap bytes, written by the switch
local Capture = {}
---@param path string
function Capture:save(path) end
---@return integer records dropped because the capture was not read fast enough
function Capture:lost() end

---@param opts {id: string?, size: string|integer?, image: string?, format: string?, readonly: boolean?, mediated: boolean?}
---@return Disk
function VM:attach_disk(opts) end
---@param id string
---@return Disk
function VM:disk(id) end

---@class Disk docs/disks.md
local Disk = {}
---@return string
function Disk:id() end
---@return integer bytes
function Disk:size() end
---@param offset integer sector (512 bytes)
---@param n integer sectors
---@return string
function Disk:read_sectors(offset, n) end
---@param offset integer sector (512 bytes)
---@param data string
function Disk:write_sectors(offset, data) end
---@param mode "eio_read"|"eio_write"|"eio_flush"|"slow"|"torn_write"
---@param opts {ms: integer?, sectors: integer[]?}?
function Disk:fault_inject(mode, opts) end
function Disk:clear_faults() end
---@return string[]
function Disk:active_faults() end
function Disk:detach() end
---@return boolean
function Disk:is_detached() end
---@return string? the guest's /dev/vdX
function Disk:device() end
---@return {count: integer, bytes: integer, overflows: integer} a mediated disk's unflushed writes
function Disk:pending_writes() end
---@param opts {reorder: integer?}?
---@return {applied: integer, dropped: integer}
function Disk:power_cut(opts) end

---@class Snapshot
local Snapshot = {}
---@return string
function Snapshot:path() end
---@return integer
function Snapshot:size() end
function Snapshot:delete() end

---@class Lab
---@field sys table<string, integer> syscall numbers by name
---@field errno table<string, integer> errno values by name
---@field caps table<string, integer> capability numbers by name
---@field timeout Duration? the default per-test timeout of the file
---@field allow_kernel_warnings boolean?
---@field reset_between_tests boolean? every test starts from the machine as the top level left it
local Lab = {}
---@param name string
---@param profile string?
---@param opts BootOpts?
---@return VM
function Lab:vm(name, profile, opts) end
---@param name string
---@return Lab
function Lab:lab(name) end
---@return Lab
function Lab:boot() end
function Lab:shutdown() end
function Lab:pause() end
function Lab:resume() end
---@param t {memory: string|integer, cpus: integer?}
function Lab:claim(t) end
---@param x VM|Bridge|Lab|(VM|Bridge|Lab)[]
function Lab:include(x) end
---@param name string
---@param count integer files of the run that must arrive
---@param timeout Duration? default 60 s
function Lab:barrier(name, count, timeout) end
---@param path string a host file the fixture's key follows (literal)
function Lab:depends_on_file(path) end
---@param name string a fixture's path without .fixture.lua, such as "fixtures/base"
---@return VM
function Lab:vm_fixture(name) end
---@param name string a lab fixture's path without .fixture.lua
---@return Lab
function Lab:lab_fixture(name) end
---@param name string
---@param opts table?
---@return Bridge
function Lab:bridge(name, opts) end
---@return string[]
function Lab:bridge_names() end
---@param dir string?
---@return LabSnapshot|string
function Lab:snapshot(dir) end
---@param snap LabSnapshot|string
---@return Lab
function Lab:restore(snap) end

---@class LabSnapshot
local LabSnapshot = {}
---@return string
function LabSnapshot:path() end
---@return integer
function LabSnapshot:size() end
function LabSnapshot:delete() end
---@return string
function Lab:name() end
---@return string[]
function Lab:vm_names() end
---@param fmt string
---@return string
function Lab.pack(fmt, ...) end
---@param fmt string
---@param s string
---@return any ...
function Lab.unpack(fmt, s, pos) end

---@type Lab
provium = {}

---@class TestContext
---@field name string
---@field meta table
local TestContext = {}
---@param cond any
---@param msg string?
function TestContext:assert(cond, msg) end
---@param a any
---@param b any
---@param msg string?
function TestContext:assert_eq(a, b, msg) end
---@param a any
---@param b any
---@param msg string?
function TestContext:assert_neq(a, b, msg) end
---@param haystack string
---@param needle string
---@param msg string?
function TestContext:assert_contains(haystack, needle, msg) end
---@param fn function
---@param msg string?
---@return string the error
function TestContext:assert_raises(fn, msg) end
---@param msg string?
function TestContext:fail(msg) end
---@param reason string?
function TestContext:skip(reason) end
---@param msg any
function TestContext:log(msg) end

---@param name string
---@param meta_or_fn table|fun(t: TestContext)
---@param fn fun(t: TestContext)?
function test(name, meta_or_fn, fn) end

---@param reason string?
function todo(reason) end

---@param predicate fun(): any
---@param opts {timeout: Duration?, interval: Duration?, desc: string?}?
---@return any
function wait_until(predicate, opts) end

json = {}
---@param value any
---@return string
function json.encode(value) end
---@param text string
---@return any
function json.decode(text) end
json.array_mt = {}

-- Seed-compatible names (docs/legacy.md).

---@param expected any
---@param actual any
---@param msg string?
function assert_eq(expected, actual, msg) end
---@param haystack string
---@param needle string
---@param msg string?
function assert_contains(haystack, needle, msg) end
---@param profile string?
---@return VM
function Lab.create(profile) end
---@param name string
---@return VM
function Lab.fixture(name) end
function Lab.shutdown_all() end
---@param cmd string|string[]
---@return {ok: boolean, exit_code: integer?, stdout: string, stderr: string}
function GuestOps:exec(cmd) end
---@param cmd string|string[]
---@return any
function GuestOps:json(cmd) end
---@param pattern string?
---@return string
function GuestOps:dmesg(pattern) end
function GuestOps:mount_vfs() end
---@param fn fun(vm: VM|Worker): any
---@param opts {timeout: Duration?, interval: Duration?, desc: string?}?
---@return any
function GuestOps:wait_until(fn, opts) end
---@return integer ret, string buf
function GuestOps:syscall_buf(nr, arg_index, data, ...) end
---@param bufs table<integer, string>
---@return integer ret, string ...
function GuestOps:syscall_bufs(nr, bufs, ...) end
---@param bufs table<integer, string>
---@param ptrs {buf_idx: integer, ptr_offset: integer, data_len: integer, output: boolean?, data: string?}[]
---@return integer ret, string ...
function GuestOps:syscall_ptr(nr, bufs, ptrs, ...) end
---@param ptrs {ptr_offset: integer, buf_len: integer, output: boolean?, data: string?}[]
---@return integer ret, string struct, string ...
function GuestOps:ioctl_buf(fd, cmd, struct, ptrs) end
---@param cmd string
---@return {id: integer, pid: integer}
function GuestOps:background(cmd) end
---@param timeout Duration? 0 polls
---@return {running: boolean, ok: boolean?, exit_code: integer?, signal: integer?, stdout: string, stderr: string}
function GuestOps:job_wait(job, timeout) end
function GuestOps:job_kill(job) end
