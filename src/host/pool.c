#include "pool.h"

#include "luascan.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>

uint64_t pool_default_memory(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    if (!f)
        return 0;
    char line[256];
    unsigned long long kib = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
            break;
    fclose(f);
    return kib * 1024 / 10 * 8;
}

struct amount pool_reservation(const struct amount *claim)
{
    struct amount a = claim ? *claim : POOL_DEFAULT_CLAIM;
    a.memory += POOL_FILE_OVERHEAD;
    return a;
}

bool pool_fits(const struct pool *p, struct amount a)
{
    return p->used.memory + a.memory <= p->total.memory && p->used.cpus + a.cpus <= p->total.cpus;
}

bool pool_could_fit(const struct pool *p, struct amount a)
{
    return a.memory <= p->total.memory && a.cpus <= p->total.cpus;
}

void pool_take(struct pool *p, struct amount a)
{
    p->used.memory += a.memory;
    p->used.cpus += a.cpus;
}

void pool_give(struct pool *p, struct amount a)
{
    p->used.memory -= MIN(a.memory, p->used.memory);
    p->used.cpus -= MIN(a.cpus, p->used.cpus);
}

int pool_parse_claim(const char *memory, long long cpus, struct amount *claim, struct pv_err *err)
{
    uint64_t m = 0;
    if (!memory || parse_size(memory, &m) < 0 || m == 0)
        return pv_err_set(err, EINVAL, "memory must be a size such as \"2G\" or a number of bytes");
    if (cpus < 0 || cpus > 4096)
        return pv_err_set(err, EINVAL, "cpus must be a whole number of vCPUs (0 to 4096)");
    *claim = (struct amount){m, (uint32_t)cpus};
    return 0;
}

/* ---- the static scan ---- */

/* After "provium:claim": ({ key = literal, ... }) */
static int parse_call(struct lscan *s, const char *path, struct amount *claim, struct pv_err *err)
{
    int line = s->line;
    bool paren = lscan_eat(s, '(');
    if (!lscan_eat(s, '{'))
        goto bad;
    char mem[64] = "";
    long long cpus = -1;
    while (!lscan_eat(s, '}')) {
        lscan_space(s);
        const char *k = s->p;
        while (s->p < s->end && (isalnum((unsigned char)*s->p) || *s->p == '_'))
            s->p++;
        size_t klen = (size_t)(s->p - k);
        char val[64];
        bool quoted;
        if (!klen || !lscan_eat(s, '=') || !lscan_literal(s, val, sizeof(val), &quoted))
            goto bad;
        if (klen == 6 && !strncmp(k, "memory", 6)) {
            snprintf(mem, sizeof(mem), "%s", val);
        } else if (klen == 4 && !strncmp(k, "cpus", 4) && !quoted) {
            char *e;
            cpus = strtoll(val, &e, 10);
            if (*e)
                goto bad;
        } else {
            return pv_err_set(err, EINVAL,
                              "%s:%d: provium:claim: unknown key `%.*s` (memory, cpus)", path, line,
                              (int)klen, k);
        }
        if (!lscan_eat(s, ',') && !lscan_eat(s, ';') && !lscan_eat(s, '}'))
            goto bad;
        if (s->p[-1] == '}')
            break;
    }
    if (paren && !lscan_eat(s, ')'))
        goto bad;
    struct pv_err e = {0};
    if (pool_parse_claim(mem[0] ? mem : NULL, cpus < 0 ? 0 : cpus, claim, &e) < 0)
        return pv_err_set(err, EINVAL, "%s:%d: provium:claim: %s", path, line, e.msg);
    return 0;
bad:
    return pv_err_set(err, EINVAL,
                      "%s:%d: provium:claim needs a table of literal values, such as "
                      "provium:claim{memory = \"2G\", cpus = 2}: the runner reads it before "
                      "the file starts",
                      path, line);
}

int pool_scan_claim(const char *path, struct amount *claim, bool *found, struct pv_err *err)
{
    *found = false;
    struct buf src = BUF_INIT;
    int r = read_file(path, 4u << 20, &src);
    if (r == 0)
        r = pool_scan_claim_text(src.data, src.len, path, claim, found, err);
    else
        pv_err_set(err, -r, "%s: %s", path, strerror(-r));
    buf_release(&src);
    return r;
}

int pool_scan_claim_text(const char *text, size_t len, const char *path, struct amount *claim,
                         bool *found, struct pv_err *err)
{
    *found = false;
    struct lscan s;
    lscan_init(&s, text, len);
    while (lscan_find(&s, "provium:claim")) {
        if (*found)
            return pv_err_set(err, EINVAL, "%s:%d: a second provium:claim (one per file)", path,
                              s.line);
        int r = parse_call(&s, path, claim, err);
        if (r < 0)
            return r;
        *found = true;
    }
    return 0;
}

/* ---- pressure and KSM ---- */

double pool_cpu_pressure(void)
{
    FILE *f = fopen("/proc/pressure/cpu", "re");
    if (!f)
        return -1;
    double avg10 = -1;
    if (fscanf(f, "some avg10=%lf", &avg10) != 1)
        avg10 = -1;
    fclose(f);
    return avg10;
}

bool pool_cpu_busy(void)
{
    double limit = POOL_PSI_THRESHOLD;
    const char *env = getenv("PROVIUM_PSI_THRESHOLD");
    if (env && *env) {
        char *end;
        double v = strtod(env, &end);
        if (!strcmp(env, "off"))
            return false;
        if (!*end && v > 0)
            limit = v;
    }
    return pool_cpu_pressure() > limit;
}

static const struct {
    const char *file, *value;
} ksm_want[] = {
    {"pages_to_scan", "1000"},
    {"sleep_millisecs", "100"},
    {"run", "1"},
};

const char *pool_ksm_tune(void)
{
    bool changed = false;
    for (size_t i = 0; i < ARRAY_SIZE(ksm_want); i++) {
        _cleanup_free_ char *p = xasprintf("/sys/kernel/mm/ksm/%s", ksm_want[i].file);
        struct buf b = BUF_INIT;
        int r = read_file(p, 64, &b);
        bool same = r == 0 && (size_t)strcspn(b.data, "\n") == strlen(ksm_want[i].value) &&
                    !strncmp(b.data, ksm_want[i].value, strlen(ksm_want[i].value));
        buf_release(&b);
        if (r < 0)
            return NULL;
        if (same)
            continue;
        int fd = open(p, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            return NULL;
        r = write_all(fd, ksm_want[i].value, strlen(ksm_want[i].value));
        close(fd);
        if (r < 0)
            return NULL;
        changed = true;
    }
    return changed ? "ksm tuned (run = on, pages_to_scan = 1000, sleep_millisecs = 100); "
                     "--no-ksm leaves it alone"
                   : NULL;
}
