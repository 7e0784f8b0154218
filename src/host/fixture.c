#include "fixture.h"
#include "disk/disk.h"
#include "net/switch.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "boot.h"
#include "cache.h"
#include "child.h"
#include "events.h"
#include "hash.h"
#include "kernel.h"
#include "lua/l_provium.h"
#include "luascan.h"
#include "spawn.h"
#include "vm.h"

/* The first existing file <dir>/<name><suffix>, the dirs being the roots
 * and then from_dir, trying each suffix in a dir before the next dir. */
static char *find_under_roots(const struct config *cfg, const char *from_dir, const char *name,
                              const char *const *suffixes)
{
    for (size_t i = 0; i <= cfg->nroots; i++) {
        const char *dir = i < cfg->nroots ? cfg->roots[i] : from_dir;
        for (size_t k = 0; dir && suffixes[k]; k++) {
            char *p = xasprintf("%s/%s%s", dir, name, suffixes[k]);
            if (cache_has(p, false))
                return p;
            free(p);
        }
    }
    return NULL;
}

char *fixture_find(const struct config *cfg, const char *name, const char *from_dir)
{
    return find_under_roots(cfg, from_dir, name, (const char *const[]){".fixture.lua", NULL});
}

/* A required module ("helpers.net") as a file, as `require` would find it. */
static char *find_module(const struct config *cfg, const char *mod, const char *from_dir)
{
    _cleanup_free_ char *rel = xstrdup(mod);
    for (char *c = rel; *c; c++)
        *c = *c == '.' ? '/' : *c;
    return find_under_roots(cfg, from_dir, rel, (const char *const[]){".lua", "/init.lua", NULL});
}

struct keying {
    const struct config *cfg;
    char base[65]; /* the base key of the fixture asked for (depth 1) */
    char **seen;   /* files already in the key, and fixtures being keyed (cycles) */
    size_t nseen;
    int depth;
};

static bool seen(struct keying *k, const char *path)
{
    for (size_t i = 0; i < k->nseen; i++)
        if (!strcmp(k->seen[i], path))
            return true;
    k->seen = xrealloc(k->seen, (k->nseen + 1) * sizeof(char *));
    k->seen[k->nseen++] = xstrdup(path);
    return false;
}

static int key_of(struct keying *k, const char *path, char key[65], struct pv_err *err);

/* Each literal argument of the calls `fn(...)` in src, in order. */
static void literal_args(const struct buf *src, const char *fn, void (*each)(void *, const char *),
                         void *ctx)
{
    struct lscan s;
    lscan_init(&s, src->data, src->len);
    while (lscan_find(&s, fn)) {
        char arg[1024];
        bool quoted;
        bool paren = lscan_eat(&s, '(');
        (void)paren;
        if (lscan_literal(&s, arg, sizeof(arg), &quoted) && quoted)
            each(ctx, arg);
    }
}

struct scan_ctx {
    struct keying *k;
    struct sha256 *h;
    const char *dir;
    int ret;
    struct pv_err *err;
};

static void add_fixture(void *p, const char *name)
{
    struct scan_ctx *c = p;
    if (c->ret < 0)
        return;
    _cleanup_free_ char *f = fixture_find(c->k->cfg, name, c->dir);
    if (!f) {
        c->ret = pv_err_set(c->err, ENOENT, "fixture `%s` not found in any test root", name);
        return;
    }
    char sub[65];
    c->ret = key_of(c->k, f, sub, c->err);
    if (c->ret == 0) {
        sha256_update_str(c->h, name);
        sha256_update_str(c->h, sub);
    }
}

static void add_helper(void *p, const char *mod)
{
    struct scan_ctx *c = p;
    _cleanup_free_ char *f = find_module(c->k->cfg, mod, c->dir);
    if (!f || seen(c->k, f))
        return; /* a module of Lua's own, or already in the key */
    struct buf src = BUF_INIT;
    if (read_file(f, 16u << 20, &src) == 0) {
        sha256_update_str(c->h, mod);
        sha256_update(c->h, src.data, src.len);
        _cleanup_free_ char *dir = xstrdup(f);
        *strrchr(dir, '/') = 0;
        struct scan_ctx sub = {c->k, c->h, dir, 0, c->err};
        literal_args(&src, "require", add_helper, &sub);
    }
    buf_release(&src);
}

static void add_host_file(void *p, const char *file)
{
    struct scan_ctx *c = p;
    _cleanup_free_ char *abs = file[0] == '/' ? xstrdup(file) : xasprintf("%s/%s", c->dir, file);
    cache_hash_file(c->h, abs);
}

/* The default profile's kernel: $PROVIUM_KERNEL, else the cached one
 * (looked up once). */
static const char *default_kernel(void)
{
    static char *path;
    static bool done;
    const char *env = getenv("PROVIUM_KERNEL");
    if (env && *env)
        return env;
    if (!done) {
        _cleanup_free_ char *root = kernel_cache_root();
        struct kernel_info ki = {0};
        struct pv_err e = {0};
        if (kernel_find_default(root, &ki, &e) == 0)
            path = xstrdup(ki.vmlinuz);
        kernel_info_release(&ki);
        done = true;
    }
    return path;
}

/* The profiles a fixture's build booted, recorded beside its entries as
 * <base>.profiles, one name a line. */
static char *record_path(const struct config *cfg, const char *base)
{
    return xasprintf("%s/%s.profiles", cfg->cache_dir, base);
}

/* The full key: the base key and the kernel and initrd, as they are now,
 * of each profile the last build booted ("unbuilt" when none has been). */
static void full_key(const struct config *cfg, const char *base, char key[65])
{
    struct sha256 *h = sha256_new();
    sha256_update_str(h, base);
    _cleanup_free_ char *rec = record_path(cfg, base);
    struct buf names = BUF_INIT;
    if (read_file(rec, 1u << 20, &names) < 0) {
        sha256_update_str(h, "unbuilt");
    } else {
        for (char *save = NULL, *name = strtok_r(names.data, "\n", &save); name;
             name = strtok_r(NULL, "\n", &save)) {
            sha256_update_str(h, name);
            const struct profile *p = config_profile(cfg, name);
            if (p) {
                cache_hash_file(h, p->kernel);
                cache_hash_file(h, p->initrd);
            } else if (!strcmp(name, DEFAULT_PROFILE)) {
                cache_hash_file(h, default_kernel());
            } else {
                sha256_update_str(h, "no such profile");
            }
        }
    }
    buf_release(&names);
    sha256_final_hex(h, key);
}

/* In a build: the profiles its VMs booted. */
static char **booted;
static size_t nbooted;

void fixture_note_boot(const char *profile)
{
    for (size_t i = 0; i < nbooted; i++)
        if (!strcmp(booted[i], profile))
            return;
    booted = xrealloc(booted, (nbooted + 1) * sizeof(char *));
    booted[nbooted++] = xstrdup(profile);
}

static int key_of(struct keying *k, const char *path, char key[65], struct pv_err *err)
{
    if (++k->depth > 32 || seen(k, path)) {
        k->depth--;
        return pv_err_set(err, ELOOP, "fixture %s refers to itself (through the fixtures it uses)",
                          path);
    }
    struct buf src = BUF_INIT;
    int r = read_file(path, 16u << 20, &src);
    if (r < 0) {
        k->depth--;
        return pv_err_set(err, -r, "%s: %s", path, strerror(-r));
    }
    struct sha256 *h = sha256_new();
    sha256_update_str(h, "provium fixture key 2");
    sha256_update_str(h, cache_env_digest());
    sha256_update(h, src.data, src.len);
    _cleanup_free_ char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = 0;
    struct scan_ctx c = {k, h, slash ? dir : ".", 0, err};
    literal_args(&src, "vm_fixture", add_fixture, &c);
    literal_args(&src, "lab_fixture", add_fixture, &c);
    literal_args(&src, "require", add_helper, &c);
    literal_args(&src, "push_file", add_host_file, &c);
    literal_args(&src, "depends_on_file", add_host_file, &c);
    buf_release(&src);
    char base[65];
    sha256_final_hex(h, base);
    full_key(k->cfg, base, key);
    if (k->depth == 1)
        memcpy(k->base, base, sizeof(base));
    k->depth--;
    return c.ret;
}

/* The fixture at path's full key, and its base key (without the profiles). */
static int keys(const struct config *cfg, const char *path, char key[65], char base[65],
                struct pv_err *err)
{
    struct keying k = {.cfg = cfg};
    int r = key_of(&k, path, key, err);
    for (size_t i = 0; i < k.nseen; i++)
        free(k.seen[i]);
    free(k.seen);
    if (base)
        memcpy(base, k.base, sizeof(k.base));
    return r;
}

int fixture_key(const struct config *cfg, const char *path, char key[65], struct pv_err *err)
{
    return keys(cfg, path, key, NULL, err);
}

/* ---- building ---- */

/* Run the fixture in a child with its own Lua state; its snapshot lands
 * at out. The child's output is kept for the error. */
/* The build's process: forked, no exec. Its output goes to wfd; it exits
 * 0 when the fixture was built and saved into out. */
__attribute__((noreturn)) static void build_child(const char *path, const char *name,
                                                  const char *cache, const char *out, int wfd,
                                                  pid_t parent, const sigset_t *mask)
{
    /* No exec: provium itself, with a fresh Lua state. It keeps the
     * file process's group and handlers (a Ctrl-C or the runner's
     * SIGTERM reaches it, and kills its own VMs), so of the child
     * setup (child.h) only PR_SET_PDEATHSIG and the getppid() check.
     * Signals stay blocked until the asking file's VMs are forgotten:
     * a handler that ran before would kill them. */
    if (child_pdeathsig(parent) < 0)
        _exit(3);
    vm_forget_all(); /* the asking file's VMs are not ours, nor its switch and disks */
    switch_forget();
    disk_forget();
    pthread_sigmask(SIG_SETMASK, mask, NULL);
    if (dup2(wfd, 1) < 0 || dup2(wfd, 2) < 0)
        _exit(3);
    vm_globals.snapshot_dir = cache;
    _cleanup_free_ char *display = xasprintf("%s.fixture.lua", name);
    l_ctx.file = path;
    l_ctx.display = display;
    vm_globals.file = display;
    lua_State *L = l_newstate();
    int code = 3;
    if (L) {
        lua_getglobal(L, "_provium_build_fixture");
        lua_pushstring(L, path);
        lua_pushstring(L, out);
        if (lua_pcall(L, 2, 1, 0) == LUA_OK)
            code = (int)lua_tointeger(L, -1);
        else
            fprintf(stderr, "%s\n", lua_tostring(L, -1));
    }
    struct buf names = BUF_INIT;
    for (size_t i = 0; i < nbooted; i++)
        buf_addf(&names, "%s\n", booted[i]);
    _cleanup_free_ char *rec = xasprintf("%s/profiles", cache);
    if (code == 0 && write_file_atomic(rec, names.data ? names.data : "", names.len, 0644) < 0)
        code = 3;
    buf_release(&names);
    vm_kill_all();
    fflush(stdout);
    fflush(stderr);
    _exit(code);
}

static int build(const char *path, const char *name, const char *cache, const char *out,
                 struct pv_err *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return pv_err_set(err, errno, "fixture `%s`: %s", name, strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    sigset_t mask;
    pid_t pid = child_fork(&mask);
    if (pid < 0) {
        int e = errno;
        close(p[0]), close(p[1]);
        return pv_err_set(err, e, "fixture `%s`: fork: %s", name, strerror(e));
    }
    if (pid == 0)
        build_child(path, name, cache, out, p[1], parent, &mask);
    close(p[1]);
    /* the build ends with the asking test's deadline (600 s outside a
     * test): then it is killed, and its QEMUs with it (PR_SET_PDEATHSIG) */
    int64_t deadline = now_ms() + vm_wait_ms(-1);
    struct buf output = BUF_INIT;
    char tmp[4096];
    bool late = false;
    for (;;) {
        struct pollfd pfd = {p[0], POLLIN, 0};
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            late = true;
            kill(pid, SIGKILL);
            break;
        }
        if (poll(&pfd, 1, (int)MIN(left, INT32_MAX)) <= 0)
            continue;
        ssize_t n = read(p[0], tmp, sizeof(tmp));
        if (n == 0 || (n < 0 && errno != EINTR))
            break;
        if (n < 0)
            continue;
        buf_add(&output, tmp, (size_t)n);
        if (output.len > 16384) /* the end is what explains */
            buf_consume(&output, output.len - 8192);
    }
    close(p[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    int r = 0;
    if (late) {
        r = pv_err_set(err, ETIMEDOUT, "fixture `%s`: its build did not end in time (killed):\n%s",
                       name, output.data ? output.data : "");
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char how[64];
        spawn_describe_status(status, how, sizeof(how));
        while (output.len && output.data[output.len - 1] == '\n')
            output.data[--output.len] = 0;
        r = pv_err_set(err, EIO, "fixture `%s` failed to build (%s):\n%s", name, how,
                       output.data ? output.data : "");
    }
    buf_release(&output);
    return r;
}

/* The entry of key k, for a VM or a lab fixture. */
static char *entry_path(const struct config *cfg, const char *k, bool lab)
{
    return xasprintf("%s/%s.%s", cfg->cache_dir, k, lab ? "lab" : "snap");
}

/* After a build: the profiles it booted (the build wrote them into work)
 * become the fixture's record, and so part of its key from now on. */
static int record(const struct config *cfg, const char *base, const char *work, struct pv_err *err)
{
    _cleanup_free_ char *from = xasprintf("%s/profiles", work);
    _cleanup_free_ char *to = record_path(cfg, base);
    struct buf names = BUF_INIT;
    int r = read_file(from, 1u << 20, &names);
    if (r == 0)
        r = write_file_atomic(to, names.data ? names.data : "", names.len, 0600);
    buf_release(&names);
    return r < 0 ? pv_err_set(err, -r, "%s: %s", to, strerror(-r)) : 0;
}

/* The entries this process restores from stay in use (cache_use) until it
 * exits, so that no eviction takes one while a restore reads it; one fd
 * per entry, however often it is asked for. */
static void keep_in_use(int fd)
{
    static struct held {
        dev_t dev;
        ino_t ino;
        int fd;
    } * held;
    static size_t nheld;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return;
    }
    for (size_t i = 0; i < nheld; i++)
        if (held[i].dev == st.st_dev && held[i].ino == st.st_ino) {
            close(fd);
            return;
        }
    held = xrealloc(held, (nheld + 1) * sizeof(*held));
    held[nheld++] = (struct held){st.st_dev, st.st_ino, fd};
}

/* Whether the cache has entry (a directory for a lab), now in use. */
static bool use_entry(const char *entry)
{
    int fd = cache_use(entry);
    struct stat st;
    if (fd < 0)
        return false;
    /* every entry is a directory (a snapshot, or a lab's) */
    if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode)) {
        close(fd);
        return false;
    }
    keep_in_use(fd);
    return true;
}

/* Install the build's result tmp as entry, in use. */
static int install(const char *name, const char *tmp, const char *entry, struct pv_err *err)
{
    int fd = cache_install(tmp, entry, err);
    if (fd == -EEXIST && (fd = cache_use(entry)) < 0) /* built before, under this key */
        pv_err_set(err, -fd, "%s: %s", entry, strerror(-fd));
    if (fd < 0)
        return pv_err_wrap(err, "fixture `%s`", name);
    keep_in_use(fd);
    return 0;
}

int fixture_get(const struct config *cfg, const char *name, const char *from_dir, bool lab,
                const char *display, struct fixture_result *res, struct pv_err *err)
{
    *res = (struct fixture_result){0};
    _cleanup_free_ char *path = fixture_find(cfg, name, from_dir);
    if (!path)
        return pv_err_set(err, ENOENT, "fixture `%s` not found in any test root", name);
    char key[65], base[65];
    int r = keys(cfg, path, key, base, err);
    if (r < 0)
        return r;
    if ((r = mkdir_p(cfg->cache_dir, 0700)) < 0)
        return pv_err_set(err, -r, "fixture cache %s: %s", cfg->cache_dir, strerror(-r));
    char *entry = entry_path(cfg, key, lab);
    if (use_entry(entry)) {
        res->snap = entry;
        return 0;
    }
    free(entry);
    /* one lock per fixture source: its key is only known after a build */
    _cleanup_free_ char *lockp =
        xasprintf("%s/%s.%s.lock", cfg->cache_dir, base, lab ? "lab" : "snap");
    _cleanup_close_ int lock = open(lockp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0)
        return pv_err_set(err, errno, "%s: %s", lockp, strerror(errno));
    if (flock(lock, LOCK_EX | LOCK_NB) < 0) {
        char holder[256] = "";
        ssize_t n = pread(lock, holder, sizeof(holder) - 1, 0);
        holder[n > 0 ? n : 0] = 0;
        events_emit("fixture_build_waiting",
                    json_pack("{s:s, s:s}", "path", name, "held_by_file", holder));
        /* a crashed holder's lock goes with it: then it is ours; a holder
         * that never ends costs the test's deadline, not forever */
        int w = flock_wait(lock, LOCK_EX, vm_wait_ms(-1));
        if (w < 0)
            return pv_err_set(err, -w, "fixture `%s`: waiting for %s's build: %s", name,
                              holder[0] ? holder : "another file", strerror(-w));
    }
    if (ftruncate(lock, 0) == 0)
        (void)!pwrite(lock, display, strlen(display), 0);
    full_key(cfg, base, key); /* a peer's build may have recorded its profiles */
    entry = entry_path(cfg, key, lab);
    if (use_entry(entry)) { /* and built it meanwhile */
        res->snap = entry;
        return 0;
    }
    free(entry);
    /* a build works in a private, locked directory: what a killed build
     * leaves, the next sweep removes */
    _cleanup_(cache_work_close) struct cache_work work = CACHE_WORK_INIT;
    if ((r = cache_work_open(cfg->cache_dir, &work, err)) < 0)
        return pv_err_wrap(err, "fixture `%s`", name);
    _cleanup_free_ char *tmp = xasprintf("%s/out.%s", work.path, lab ? "lab" : "snap");
    events_emit("fixture_build_started", json_pack("{s:s}", "path", name));
    int64_t t0 = now_ns();
    r = build(path, name, work.path, tmp, err);
    if (r == 0)
        r = record(cfg, base, work.path, err);
    full_key(cfg, base, key);
    entry = entry_path(cfg, key, lab);
    struct stat st;
    if (r == 0 && stat(tmp, &st) < 0)
        r = pv_err_set(err, errno, "fixture `%s`: installing %s: %s", name, entry, strerror(errno));
    uint64_t bytes = r == 0 ? disk_usage(tmp, NULL) : 0;
    if (r == 0)
        r = install(name, tmp, entry, err);
    if (r < 0) {
        free(entry);
        return r;
    }
    events_emit("fixture_build_done",
                json_pack("{s:s, s:I, s:I}", "path", name, "duration_ns",
                          (json_int_t)(now_ns() - t0), "snapshot_bytes", (json_int_t)bytes));
    res->snap = entry;
    res->built = true;
    return 0;
}

bool fixture_is_lab(const char *path)
{
    struct buf src = BUF_INIT;
    bool lab = false;
    if (read_file(path, 16u << 20, &src) == 0) {
        struct lscan s;
        lscan_init(&s, src.data, src.len);
        lab = lscan_find(&s, "provium:snapshot");
    }
    buf_release(&src);
    return lab;
}
