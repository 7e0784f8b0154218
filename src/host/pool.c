#include "pool.h"

#include "luascan.h"

#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
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

struct thread_time {
    pid_t tid;
    uint64_t ran, waited; /* ns */
};

/* The threads walked per sample at most: files with more are measured on
 * their first ones. */
#define CPU_WAIT_MAX_THREADS 4096

static int by_tid(const void *a, const void *b)
{
    pid_t x = ((const struct thread_time *)a)->tid, y = ((const struct thread_time *)b)->tid;
    return (x > y) - (x < y);
}

static ssize_t read_small(const char *path, char *b, size_t size)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, b, size - 1);
    b[n > 0 ? n : 0] = 0;
    return n;
}

/* Every thread of the processes in pids[0..*n) and of their descendants,
 * which are appended to pids as they are found (cap entries at most). */
static size_t walk_threads(pid_t *pids, size_t *n, size_t cap, struct thread_time *out)
{
    size_t nout = 0;
    for (size_t i = 0; i < *n && nout < cap; i++) {
        char path[64], text[4096];
        snprintf(path, sizeof(path), "/proc/%d/task", (int)pids[i]);
        DIR *d = opendir(path);
        if (!d)
            continue; /* gone meanwhile */
        struct dirent *e;
        while ((e = readdir(d)) && nout < cap) {
            int tid = atoi(e->d_name);
            if (tid <= 0)
                continue;
            snprintf(path, sizeof(path), "/proc/%d/task/%d/schedstat", (int)pids[i], tid);
            unsigned long long ran, waited;
            if (read_small(path, text, sizeof(text)) <= 0 ||
                sscanf(text, "%llu %llu", &ran, &waited) != 2)
                continue;
            out[nout++] = (struct thread_time){tid, ran, waited};
            snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pids[i], tid);
            if (read_small(path, text, sizeof(text)) <= 0)
                continue;
            for (char *p = text, *end; *n < cap; p = end) {
                long child = strtol(p, &end, 10);
                if (end == p)
                    break;
                pids[(*n)++] = (pid_t)child;
            }
        }
        closedir(d);
    }
    return nout;
}

void pool_cpu_sample(struct cpu_wait *w, const pid_t *roots, size_t nroots, int64_t now)
{
    size_t cap = CPU_WAIT_MAX_THREADS, npids = MIN(nroots, cap);
    pid_t *pids = xcalloc(cap, sizeof(*pids));
    memcpy(pids, roots, npids * sizeof(*pids));
    struct thread_time *seen = xcalloc(cap, sizeof(*seen));
    size_t nseen = walk_threads(pids, &npids, cap, seen);
    free(pids);
    qsort(seen, nseen, sizeof(*seen), by_tid);
    /* only threads seen both times count: a new one's past is not this
     * interval's, and a tid used again counts from zero */
    double ran = 0, waited = 0;
    for (size_t i = 0; i < nseen; i++) {
        const struct thread_time *was =
            w->nseen ? bsearch(&seen[i], w->seen, w->nseen, sizeof(*seen), by_tid) : NULL;
        if (was && seen[i].ran >= was->ran && seen[i].waited >= was->waited) {
            ran += (double)(seen[i].ran - was->ran);
            waited += (double)(seen[i].waited - was->waited);
        }
    }
    if (w->at) {
        double decay = exp(-(double)(now - w->at) / 10e9);
        w->waited = w->waited * decay + waited;
        w->wanted = w->wanted * decay + waited + ran;
    }
    free(w->seen);
    w->seen = seen;
    w->nseen = nseen;
    w->at = now;
}

double pool_cpu_wait_share(const struct cpu_wait *w)
{
    /* under 100 ms of wanting a CPU in the window says nothing */
    return w->wanted < 1e8 ? -1 : 100 * w->waited / w->wanted;
}

void pool_cpu_wait_free(struct cpu_wait *w)
{
    free(w->seen);
    *w = (struct cpu_wait){0};
}

bool pool_cpu_busy(const struct cpu_wait *w)
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
    if (pool_cpu_pressure() <= limit)
        return false;
    double own = pool_cpu_wait_share(w);
    return own < 0 || own > POOL_OWN_WAIT_THRESHOLD;
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
