/* The resource pool of a run (docs/running.md): memory and
 * vCPUs that files reserve before they start and give back when they end,
 * the claims files declare, CPU pressure, and KSM. */
#pragma once

#include "util.h"

struct amount {
    uint64_t memory; /* bytes */
    uint32_t cpus;
};

/* What the runner process itself needs per file (a Lua state, buffers). */
#define POOL_FILE_OVERHEAD (50ull << 20)
/* What a VM costs beyond its guest memory: QEMU, its TCG code buffer. */
#define POOL_VM_OVERHEAD (64ull << 20)
/* A file with no provium:claim may run one VM of the default size. */
#define POOL_DEFAULT_VM_MEMORY (512ull << 20)
#define POOL_DEFAULT_CLAIM ((struct amount){POOL_DEFAULT_VM_MEMORY + POOL_VM_OVERHEAD, 1})
/* New files wait while the CPU's some-pressure over 10 s is above this
 * (percent); $PROVIUM_PSI_THRESHOLD overrides it, `off` turns it off. */
#define POOL_PSI_THRESHOLD 50.0
/* ... and the running files' own threads, while ready to run, waited for a
 * CPU more than this share of the time (percent): the pressure counts a
 * nice 19 job that provium's VMs preempt as much as the VMs themselves. */
#define POOL_OWN_WAIT_THRESHOLD 25.0

struct pool {
    struct amount total, used;
};

/* 80 % of the host's memory, in bytes (0 if /proc/meminfo is unreadable). */
uint64_t pool_default_memory(void);
/* A reservation: what the file claims (or POOL_DEFAULT_CLAIM) plus the
 * per-file overhead. */
struct amount pool_reservation(const struct amount *claim);
bool pool_fits(const struct pool *p, struct amount a);
/* Whether a can ever fit, even in an empty pool. */
bool pool_could_fit(const struct pool *p, struct amount a);
void pool_take(struct pool *p, struct amount a);
void pool_give(struct pool *p, struct amount a);

/* The provium:claim{memory=, cpus=} of a test file, read from its source
 * before it runs: *found says whether there is one. Values must be literal
 * (a size string or integer, an integer); anything else is an error naming
 * the line. */
int pool_scan_claim(const char *path, struct amount *claim, bool *found, struct pv_err *err);
/* The same on text already read (named path in messages). */
int pool_scan_claim_text(const char *text, size_t len, const char *path, struct amount *claim,
                         bool *found, struct pv_err *err);
/* The same check on values already parsed (memory as text or NULL). */
int pool_parse_claim(const char *memory, long long cpus, struct amount *claim, struct pv_err *err);

/* CPU some-pressure averaged over 10 s, in percent; -1 where the kernel has
 * no PSI. */
double pool_cpu_pressure(void);

/* How long the threads of the running files waited for a CPU while ready to
 * run, from the scheduler's per-thread counters (/proc/PID/task/TID/schedstat),
 * decaying over 10 s as the pressure does (docs/running.md#cpu-pressure). */
struct cpu_wait {
    struct thread_time *seen; /* the last sample, sorted by tid */
    size_t nseen;
    double waited, wanted; /* ns, decayed sums */
    int64_t at;            /* when sampled last; 0 before */
};
/* Another sample of the threads of roots and of all their descendants. */
void pool_cpu_sample(struct cpu_wait *w, const pid_t *roots, size_t nroots, int64_t now);
/* The share of their ready time those threads waited, in percent; -1 until
 * they have wanted a CPU for long enough to tell. */
double pool_cpu_wait_share(const struct cpu_wait *w);
void pool_cpu_wait_free(struct cpu_wait *w);
/* Whether new files should wait for the CPU now: the pressure is above its
 * threshold and the running files' threads are among those waiting (or
 * cannot be told apart yet). */
bool pool_cpu_busy(const struct cpu_wait *w);

/* KSM tuned for many similar guests (merging their identical pages): a
 * one-line description when this changed the host's settings, NULL when
 * they were so already or cannot be changed (not root, no KSM). Best
 * effort and silent; the settings stay, as several runs may share them. */
const char *pool_ksm_tune(void);
