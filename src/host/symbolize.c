/* Symbolized stacks (docs/splats.md#symbolized-stacks). A frame names its
 * function and an offset in it; the kernel's own addresses are of no use
 * on the host (KASLR, modules loaded anywhere). So the function is looked
 * up by name in the ELF file's symbol table (`objdump -t`: its section and
 * value, and its size, which tells two static functions of one name
 * apart), and its value plus the offset goes to `addr2line -j SECTION`
 * (a .ko: every section starts at 0) or plain (a vmlinux). Both tools are
 * binutils'; they run through spawn.c with a timeout, never a shell. */
#include "symbolize.h"

#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>

#include "spawn.h"

char *sym_vmlinux(const char *given, const char *kernel, const char *release)
{
    if (given && access(given, R_OK) == 0)
        return xstrdup(given);
    if (kernel) {
        _cleanup_free_ char *copy = xstrdup(kernel);
        char *p = xasprintf("%s/vmlinux", dirname(copy));
        if (access(p, R_OK) == 0)
            return p;
        free(p);
    }
    /* the release is the guest's word: no path */
    if (release && *release && !strchr(release, '/') && strcmp(release, "..")) {
        char *p = xasprintf("/usr/lib/debug/boot/vmlinux-%s", release);
        if (access(p, R_OK) == 0)
            return p;
        free(p);
    }
    return NULL;
}

void sym_query_release(struct sym_query *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(q[i].where);
        free(q[i].section);
        q[i].where = q[i].section = NULL;
    }
}

/* The offset looked up: a return address points after its call, which may
 * be the next line's first instruction (or past the function's end). */
static uint64_t lookup_off(const struct sym_query *q)
{
    return q->ret && q->off > 0 ? q->off - 1 : q->off;
}

/* How many hex digits (lower case) start p, of its n bytes; their value. */
static size_t hex_len(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && ((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'f')))
        i++;
    return i;
}
static uint64_t hex_value(const char *p, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        v = v << 4 | (uint64_t)(p[i] <= '9' ? p[i] - '0' : p[i] - 'a' + 10);
    return v;
}

/* One `objdump -t` line: "VALUE FLAGS7 SECTION\tSIZE [.hidden ]NAME". */
struct objsym {
    uint64_t value, size;
    bool func;
    const char *sec, *name;
    size_t sec_len, name_len;
};
static bool parse_objsym(const char *p, size_t len, struct objsym *s)
{
    const char *end = p + len, *tab = memchr(p, '\t', len);
    size_t vlen = hex_len(p, len);
    if (!tab || vlen == 0 || vlen > 16 || (size_t)(tab - p) < vlen + 10 || p[vlen] != ' ')
        return false;
    s->value = hex_value(p, vlen);
    s->func = p[vlen + 7] == 'F';
    s->sec = p + vlen + 9;
    s->sec_len = (size_t)(tab - s->sec);
    const char *q = tab + 1;
    size_t slen = hex_len(q, (size_t)(end - q));
    if (slen == 0 || slen > 16 || q + slen >= end)
        return false;
    s->size = hex_value(q, slen);
    const char *name = end;
    while (name > q + slen && name[-1] != ' ')
        name--;
    s->name = name;
    s->name_len = (size_t)(end - name);
    return s->name_len > 0 && s->sec_len > 0;
}

size_t sym_parse_objdump(const char *text, size_t len, struct sym_query *q, size_t n)
{
    bool tight[SYM_MAX_FRAMES] = {false}; /* found, and its size within len */
    n = MIN(n, (size_t)SYM_MAX_FRAMES);
    for (const char *p = text, *end = text + len; p < end;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        struct objsym s;
        if (l < 4096 && parse_objsym(p, l, &s) && s.func) {
            for (size_t i = 0; i < n; i++) {
                uint64_t off = lookup_off(&q[i]);
                if (tight[i] || strlen(q[i].func) != s.name_len ||
                    memcmp(q[i].func, s.name, s.name_len) || off >= s.size)
                    continue;
                bool fits = !q[i].len || s.size <= q[i].len;
                if (q[i].section && !fits)
                    continue; /* keep the first of several that do not fit */
                free(q[i].section);
                q[i].section = xstrndup(s.sec, s.sec_len);
                q[i].addr = s.value + off;
                tight[i] = fits;
            }
        }
        p += l + 1;
    }
    size_t found = 0;
    for (size_t i = 0; i < n; i++)
        found += q[i].section != NULL;
    return found;
}

/* A location line of addr2line, tidied: NULL for an unknown one. */
static char *tidy_location(const char *p, size_t len, const char *strip)
{
    if (len == 0 || p[0] == '?')
        return NULL;
    const char *disc = memmem(p, len, " (discriminator ", 16);
    if (disc)
        len = (size_t)(disc - p);
    const char *colon = memrchr(p, ':', len);
    if (!colon || colon + 1 >= p + len || colon[1] == '?' ||
        (colon[1] == '0' && colon + 2 == p + len))
        return NULL; /* no line known */
    size_t sl = strip ? strlen(strip) : 0;
    if (sl && len > sl && !memcmp(p, strip, sl)) {
        p += sl;
        len -= sl;
    } else {
        const char *h = memmem(p, len, "/linux-headers-", 15);
        const char *slash = h ? memchr(h + 1, '/', len - (size_t)(h + 1 - p)) : NULL;
        if (slash) {
            len -= (size_t)(slash + 1 - p);
            p = slash + 1;
        }
    }
    if (memchr(p, '\t', len)) /* which buf_add_escaped keeps: no file:line has one */
        return NULL;
    struct buf b = BUF_INIT;
    buf_add_escaped(&b, p, MIN(len, (size_t)200));
    return buf_steal(&b);
}

/* Is the line an address line of `addr2line -a` ("0x" and hex digits)? */
static bool is_addr_line(const char *p, size_t len)
{
    return len > 2 && p[0] == '0' && p[1] == 'x' && hex_len(p + 2, len - 2) == len - 2;
}

size_t sym_parse_addr2line(const char *text, size_t len, const char *strip, char **where, size_t n)
{
    size_t rec = 0, line = 0, got = 0;
    char *first = NULL, *last = NULL;
    for (const char *p = text, *end = text + len;;) {
        bool eof = p >= end;
        const char *nl = eof ? NULL : memchr(p, '\n', (size_t)(end - p));
        size_t l = eof ? 0 : nl ? (size_t)(nl - p) : (size_t)(end - p);
        bool addr = !eof && is_addr_line(p, l);
        if (addr || eof) { /* the record before ends */
            if (rec > 0 && rec <= n && first && last)
                where[rec - 1] = xasprintf("%s inlined into %s", first, last);
            else if (rec > 0 && rec <= n && first)
                where[rec - 1] = steal_pointer(&first);
            got += rec > 0 && rec <= n && where[rec - 1];
            free(first);
            free(last);
            first = last = NULL;
        }
        if (eof)
            break;
        if (addr) {
            rec++;
            line = 0;
        } else if (rec > 0 && rec <= n && line++ % 2 == 1) { /* function, location, ... */
            char *loc = tidy_location(p, l, strip);
            if (loc && !first) {
                first = loc;
            } else if (loc) {
                free(last);
                last = loc;
            }
        }
        p = nl ? nl + 1 : end;
    }
    return got;
}

/* The ELF type of path (ET_REL for a .ko, ET_EXEC for a vmlinux), or -errno. */
static int elf_type(const char *path, struct pv_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    unsigned char h[18];
    if (fd < 0)
        return pv_err_set(err, errno, "%s: %s", path, strerror(errno));
    if (read(fd, h, sizeof(h)) != (ssize_t)sizeof(h) || memcmp(h, "\177ELF", 4) || h[5] != 1)
        return pv_err_set(err, ENOEXEC, "%s: not a little-endian ELF file", path);
    return h[16] | h[17] << 8;
}

/* Run argv (argv[1..] ends with the file), its output into out; 0 or
 * -errno with err naming the tool and the file. */
static int run_tool(const char *const argv[], const char *elf, struct buf *out, size_t max,
                    int timeout_ms, struct pv_err *err)
{
    int status = 0;
    int r = spawn_run(argv, NULL, out, max, timeout_ms, &status, err);
    if (r == -ETIMEDOUT)
        return pv_err_set(err, ETIMEDOUT, "%s on %s: no answer in %d ms", argv[0], elf, timeout_ms);
    if (r < 0)
        return r;
    if (status != 0) {
        char why[64];
        spawn_describe_status(status, why, sizeof(why));
        return pv_err_set(err, EIO, "%s on %s %s", argv[0], elf, why);
    }
    return 0;
}

/* addr2line for the frames of q in section sec (NULL: addresses as they
 * are). */
static int addr2line(const char *elf, const char *sec, struct sym_query *q, size_t n,
                     const char *strip, int timeout_ms, struct pv_err *err)
{
    const char *argv[8 + SYM_MAX_FRAMES] = {"addr2line", "-a", "-f", "-i", "-e", elf};
    size_t a = 6, idx[SYM_MAX_FRAMES], k = 0;
    if (sec) {
        argv[a++] = "-j";
        argv[a++] = sec;
    }
    char addrs[SYM_MAX_FRAMES][24];
    for (size_t i = 0; i < n && k < SYM_MAX_FRAMES; i++) {
        if (!q[i].section || q[i].where || (sec && strcmp(q[i].section, sec)))
            continue;
        snprintf(addrs[k], sizeof(addrs[k]), "0x%" PRIx64, q[i].addr);
        argv[a++] = addrs[k];
        idx[k++] = i;
    }
    argv[a] = NULL;
    if (k == 0)
        return 0;
    struct buf out = BUF_INIT;
    int r = run_tool(argv, elf, &out, 1u << 20, timeout_ms, err);
    char *where[SYM_MAX_FRAMES] = {NULL};
    if (r == 0)
        sym_parse_addr2line(out.data, out.len, strip, where, k);
    buf_release(&out);
    for (size_t j = 0; j < k; j++)
        q[idx[j]].where = where[j];
    return r;
}

int sym_resolve(const char *elf, struct sym_query *q, size_t n, int timeout_ms, struct pv_err *err)
{
    n = MIN(n, (size_t)SYM_MAX_FRAMES);
    int type = elf_type(elf, err);
    if (type < 0)
        return type;
    const char *objdump[] = {"objdump", "-t", elf, NULL};
    struct buf out = BUF_INIT;
    int r = run_tool(objdump, elf, &out, 256u << 20, timeout_ms, err);
    size_t found = r == 0 ? sym_parse_objdump(out.data, out.len, q, n) : 0;
    buf_release(&out);
    if (r < 0 || found == 0)
        return r;
    _cleanup_free_ char *dir = realpath(elf, NULL); /* DWARF's paths are absolute */
    if (!dir)
        dir = xstrdup(elf);
    _cleanup_free_ char *strip = xasprintf("%s/", dirname(dir));
    if (type != 1) { /* ET_EXEC, ET_DYN: the symbols' values are addresses */
        r = addr2line(elf, NULL, q, n, strip, timeout_ms, err);
    } else { /* a .ko: every section starts at 0; one run per section */
        bool done[SYM_MAX_FRAMES] = {false};
        for (size_t i = 0; i < n && r == 0; i++) {
            if (!q[i].section || done[i])
                continue;
            for (size_t j = i; j < n; j++)
                done[j] = done[j] || (q[j].section && !strcmp(q[j].section, q[i].section));
            r = addr2line(elf, q[i].section, q, n, strip, timeout_ms, err);
        }
    }
    if (r < 0)
        return r;
    int got = 0;
    for (size_t i = 0; i < n; i++)
        got += q[i].where != NULL;
    return got;
}
