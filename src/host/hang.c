/* The hang watchdog (docs/debugging.md#hangs). A guest operation's wait
 * wakes once a second (vm.c's wait_reply); at each wake hang_check looks
 * for a sign of life: a byte from the agent (any reply, chunk or kernel log
 * record) or growth of the serial and hvc logs QEMU writes. A guest that is
 * merely idle (a `sleep 60` under vm:run) prints nothing either, so after a
 * quarter of the timeout without a sign the agent is pinged: its event loop
 * answers while the call it serves goes on, and the answer is the sign. A
 * guest whose vCPUs are stuck (a module spinning with interrupts off, a
 * vCPU halted) answers nothing, and at the timeout its vCPUs' instruction
 * pointers are read through QMP, named from a System.map beside the kernel
 * or its vmlinux, and the VM is killed. */
#include "hang.h"

#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <sys/stat.h>

#include "spawn.h"
#include "symbolize.h"
#include "vm.h"
#include "vm_priv.h"

double hang_timeout_s(void)
{
    if (vm_globals.hang_timeout < 0)
        return 0; /* off */
    if (vm_globals.hang_timeout > 0)
        return vm_globals.hang_timeout;
    return HANG_DEFAULT_S * (vm_globals.timeout_scale > 0 ? vm_globals.timeout_scale : 1);
}

/* What rotation dropped is counted in. */
uint64_t hang_console_bytes(struct vm *vm)
{
    static const char *const names[] = {"serial.log", "hvc.log"};
    static const enum vm_log which[] = {VM_LOG_SERIAL, VM_LOG_HVC};
    uint64_t n = 0;
    for (size_t i = 0; vm->dir && i < ARRAY_SIZE(names); i++) {
        _cleanup_free_ char *p = xasprintf("%s/%s", vm->dir, names[i]);
        struct stat st;
        n += vm->log_dropped[which[i]] + (stat(p, &st) == 0 ? (uint64_t)st.st_size : 0);
    }
    return n;
}

/* Forget the probe once answered (or gone with its channel). */
static void collect_ping(struct vm *vm)
{
    struct chan_req *q = vm->hang.ping ? chan_find(&vm->chan, vm->hang.ping) : NULL;
    if (q && q->done)
        chan_drop(&vm->chan, q->id);
    if (!q || q->done)
        vm->hang.ping = 0;
}

void hang_start(struct vm *vm)
{
    collect_ping(vm);
    vm->hang.alive_ns = now_ns();
    vm->hang.console = hang_console_bytes(vm);
}

int hang_parse_rips(const char *regs, uint64_t *ret, int max)
{
    int n = 0;
    for (const char *p = regs; n < max && (p = strstr(p, "RIP=")); p += 4) {
        char *end;
        unsigned long long v = strtoull(p + 4, &end, 16);
        if (end != p + 4)
            ret[n++] = (uint64_t)v;
    }
    return n;
}

bool hang_user_ip(uint64_t addr)
{
    /* x86-64's kernel lives in the upper half of the address space */
    return addr < 0xffff800000000000ull;
}

/* One line of a symbol map: 1 with its fields (name and module point into
 * the line, their lengths set), 0 when it is not a symbol line. */
struct sym {
    uint64_t addr;
    char type;
    const char *name, *mod;
    int name_len, mod_len;
};
static int parse_sym(const char *line, size_t len, struct sym *s)
{
    char *end;
    errno = 0;
    s->addr = strtoull(line, &end, 16);
    if (end == line || errno || (size_t)(end - line) + 3 > len || end[0] != ' ' || end[2] != ' ')
        return 0;
    s->type = end[1];
    s->name = end + 3;
    const char *stop = line + len;
    s->name_len = (int)strcspn(s->name, " \t\n");
    if (s->name + s->name_len > stop)
        s->name_len = (int)(stop - s->name);
    s->mod = memchr(s->name, '[', (size_t)(stop - s->name));
    s->mod_len = 0;
    if (s->mod) {
        const char *close = memchr(s->mod, ']', (size_t)(stop - s->mod));
        s->mod_len = close ? (int)(close - s->mod) - 1 : 0;
        s->mod++;
    }
    return s->name_len > 0;
}

int hang_symbolize(const char *map, size_t n, uint64_t addr, char *out, size_t outlen)
{
    struct sym best = {0}, s;
    uint64_t next = UINT64_MAX, etext = 0;
    bool found = false;
    for (const char *p = map, *end = map + n; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (parse_sym(p, len, &s)) {
            if (s.name_len == 6 && !memcmp(s.name, "_etext", 6))
                etext = s.addr;
            bool text = s.type == 't' || s.type == 'T';
            if (text && s.addr <= addr && (!found || s.addr > best.addr)) {
                best = s;
                found = true;
            } else if (text && s.addr > addr && s.addr < next) {
                next = s.addr;
            }
        }
        p += len + 1;
    }
    /* past the kernel's text (a module's address, in a map of the kernel
     * alone) the nearest symbol is a lie */
    if (!found || (!best.mod_len && etext && addr >= etext) || addr - best.addr >= (1u << 20))
        return -ENOENT;
    char size[32] = "";
    if (next != UINT64_MAX && (best.mod_len || !etext || next <= etext))
        snprintf(size, sizeof(size), "/0x%" PRIx64, next - best.addr);
    snprintf(out, outlen, "%.*s+0x%" PRIx64 "%s%s%.*s%s", best.name_len, best.name,
             addr - best.addr, size, best.mod_len ? " [" : "", best.mod_len, best.mod,
             best.mod_len ? "]" : "");
    return 0;
}

/* The symbol map of the VM's kernel: a System.map (or System.map-<release>)
 * beside it, else `nm -n` of its vmlinux (sym_vmlinux: beside it, or
 * Debian's -dbg package's). 0 with the text and its
 * path, or -ENOENT. */
static int load_map(struct vm *vm, struct buf *out, char **ret_path)
{
    if (!vm->plan.kernel)
        return -ENOENT;
    _cleanup_free_ char *copy = xstrdup(vm->plan.kernel);
    const char *dir = dirname(copy);
    const char *rel = vm->chan.kernel_release ? vm->chan.kernel_release : "";
    char *maps[] = {xasprintf("%s/System.map", dir), xasprintf("%s/System.map-%s", dir, rel)};
    int r = -ENOENT;
    for (size_t i = 0; i < ARRAY_SIZE(maps); i++) {
        if (r < 0 && read_file(maps[i], 256u << 20, out) == 0) {
            *ret_path = steal_pointer(&maps[i]);
            r = 0;
        }
        free(maps[i]);
    }
    if (r == 0)
        return 0;
    _cleanup_free_ char *vmlinux = sym_vmlinux(vm->plan.vmlinux, vm->plan.kernel, rel);
    if (!vmlinux)
        return -ENOENT;
    const char *argv[] = {"nm", "-n", "--defined-only", vmlinux, NULL};
    int status;
    if (spawn_run(argv, NULL, out, 256u << 20, 60000, &status, NULL) < 0 || status != 0)
        return -ENOENT;
    *ret_path = steal_pointer(&vmlinux);
    return 0;
}

/* "  instruction pointer: 0x... (func+0x1a/0x40)" for each vCPU, from QEMU's
 * register dump; why not, when QEMU does not give it. */
static void add_rips(struct vm *vm, struct buf *story)
{
    json_t *ret = NULL;
    struct pv_err err = {0};
    int64_t d = now_ns() + (int64_t)(10e9 * vm_globals.timeout_scale);
    int r = qmp_exec(&vm->qmp, "human-monitor-command",
                     json_pack("{s:s}", "command-line", "info registers -a"), d, &ret, &err);
    const char *regs = r == 0 ? json_string_value(ret) : NULL;
    uint64_t rips[64];
    int n = regs ? hang_parse_rips(regs, rips, (int)ARRAY_SIZE(rips)) : 0;
    json_decref(ret);
    if (n == 0) {
        buf_addf(story, "  instruction pointer: unknown (QEMU's register dump: %s)\n",
                 r < 0 ? err.msg : "no RIP in it");
        return;
    }
    struct buf map = BUF_INIT;
    _cleanup_free_ char *map_path = NULL;
    bool have_map = load_map(vm, &map, &map_path) == 0;
    for (int i = 0; i < n; i++) {
        char name[256];
        buf_addf(story, "  instruction pointer: 0x%016" PRIx64, rips[i]);
        if (hang_user_ip(rips[i]))
            buf_adds(story, " (user space)");
        else if (have_map && hang_symbolize(map.data, map.len, rips[i], name, sizeof(name)) == 0)
            buf_addf(story, " (%s)", name);
        else if (have_map)
            buf_addf(story, " (not in %s)", map_path);
        if (n > 1)
            buf_addf(story, " on vCPU %d", i);
        buf_adds(story, "\n");
    }
    if (!have_map)
        buf_adds(story, "  (no System.map or vmlinux beside the kernel to name it: "
                        "docs/debugging.md#hangs)\n");
    buf_release(&map);
}

/* Declare vm hung: its story, then kill it. */
static int hung(struct vm *vm, double secs, struct pv_err *err)
{
    struct buf story = BUF_INIT;
    buf_adds(&story, "\n");
    add_rips(vm, &story);
    buf_adds(&story, "  last console lines:\n");
    vm_console_tail(vm, 40, &story);
    vm_kill(vm);
    vm->state = VM_DEAD;
    free(vm->exit_reason);
    vm->exit_reason =
        xasprintf("guest unresponsive for %gs (no console output, no agent reply)", secs);
    free(vm->story);
    vm->story = buf_steal(&story);
    pv_err_set(err, EHOSTDOWN, "vm `%s`: %s", vm->name, vm->exit_reason);
    if (err)
        err->story = vm->story;
    return -EHOSTDOWN;
}

int hang_check(struct vm *vm, struct pv_err *err)
{
    double secs = hang_timeout_s();
    if (!(secs > 0))
        return 0;
    int64_t now = now_ns();
    uint64_t con = hang_console_bytes(vm);
    if (con != vm->hang.console) {
        vm->hang.console = con;
        vm->hang.alive_ns = now;
    }
    vm->hang.alive_ns = MAX(vm->hang.alive_ns, vm->chan.rx_ns);
    collect_ping(vm);
    int64_t idle = now - vm->hang.alive_ns;
    if (idle >= (int64_t)(secs * 1e9))
        return hung(vm, secs, err);
    /* a quarter of the timeout, so that an idle guest's answer comes well
     * before it */
    if (!vm->hang.ping && idle >= (int64_t)(secs * 0.25e9))
        vm->hang.ping =
            chan_start(&vm->chan, 0, PV_PING, NULL, now + 1000000000LL, NULL, NULL, NULL);
    return 0;
}
