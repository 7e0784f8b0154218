/* provium: argv -> options, then the runner or a subcommand. The only place
 * that calls exit(): 0 all passed, 1 a test failed, 2 provium could not run
 * (bad config, bad usage, missing QEMU or kernel). */
#include <dirent.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <inttypes.h>
#include <sys/random.h>
#include <sys/stat.h>

#include "accel.h"
#include "attach.h"
#include "boot.h"
#include "config.h"
#include "coverage.h"
#include "events.h"
#include "filter.h"
#include "cache.h"
#include "fixture.h"
#include "kconfig.h"
#include "kernel.h"
#include "lua/l_provium.h"
#include "net/switch.h"
#include "repl.h"
#include "runner.h"
#include "version.h"
#include "vm.h"

static const char usage[] =
    "usage: provium [PATHS]... [OPTIONS]     run *.test.lua files\n"
    "       provium list [--fixtures] [PATHS]...   the files and their tests, without running\n"
    "       provium lsp-setup [DIR] [--force]       type stubs for lua-language-server\n"
    "       provium repl [PROFILE] [--name NAME] [--fixture NAME]   a VM and a Lua prompt\n"
    "       provium attach [--run PID] NAME [-- CMD... | --lua]     a shell (a command, Lua) on a kept VM\n"
    "       provium fixture list | clean | stale | build NAME | rebuild NAME\n"
    "       provium kernel fetch | list | path | ensure | initrd | options\n"
    "       provium kernel check [FILE]             the Kconfig options a kernel lacks\n"
    "       provium kernel config | build [DIR] [--minimal]   make a kernel tree bootable\n"
    "       provium coverage --from PATH | --from - | --from-socket PATH [--text] [-o FILE]\n"
    "       provium --help | --version\n"
    "\n"
    "Runs each test file in a fresh Lua state against real QEMU VMs. With no PATHS,\n"
    "the [provium] roots of provium.toml are searched, else the current directory.\n"
    "\n"
    "options:\n"
    "  --config PATH        provium.toml to use (default: nearest in . or its parents)\n"
    "  --accel MODE         auto | kvm | tcg (default auto: KVM when a probe boot proves it)\n"
    "  --transport MODE     auto | virtio-serial | vsock (default auto)\n"
    "  --timeout DUR        per-file wall clock, e.g. 300, 90s, 5m; 0 = none (default 300s)\n"
    "  --hang-timeout DUR   a guest silent this long fails its operation; 0 = never\n"
    "                       (default 30s, x3 under TCG)\n"
    "  -j, -p, --jobs N     at most N files at once (default: as many as the pool holds)\n"
    "  --mem SIZE           the pool's memory, e.g. 16G (default: 80% of the host's)\n"
    "  --cpus N             the pool's vCPUs (default: online CPUs)\n"
    "  --cpu-overcommit F   vCPUs per host CPU, 0.5 to 8 (default 1)\n"
    "  --no-ksm             leave KSM (merging of identical guest pages) as it is\n"
    "  --no-boot-cache      boot every VM cold, not by resuming a cached boot\n"
    "  --seed N             the seed of the networks' packet loss (default: random; in the "
    "header)\n"
    "  --include-slow       run tests whose meta.slow is set\n"
    "  --kmemleak           scan for kernel memory leaks after each test (meta.kmemleak)\n"
    "  --vmm qemu|local     local: boot nothing, for runs of the framework alone\n"
    "  --gdb                a gdbstub per VM on 127.0.0.1 (vm:gdb_port(); the command line\n"
    "                       to attach is printed when the VM boots)\n"
    "  --keep-on-failure    a failing file's VMs stay up until Ctrl-C, for provium attach\n"
    "  -f, --filter STR     files whose path contains STR (a|b: either); repeatable\n"
    "  --tag T, --no-tag T  tests tagged T (any of them) / not tagged T; repeatable\n"
    "  --tag-meta K=V       tests whose meta.K is or contains V; --no-tag-meta K=V skips them\n"
    "  --rerun-failed       only the files that failed when they last ran\n"
    "  --since PATH         only files changed after PATH\n"
    "  --shard K/N          the K-th of N disjoint parts of the files (for CI matrices)\n"
    "  --watch              run again whenever a .lua file under the paths changes\n"
    "  --fail-fast          start no new file after a failure\n"
    "  --json               one JSON line per file on stdout; human lines go to stderr\n"
    "  --tap                TAP version 14 on stdout, a subtest per file; human lines to stderr\n"
    "  --junit FILE         also write the results as JUnit XML to FILE\n"
    "  --save-events PATH   the event stream (msgpack frames) to PATH\n"
    "  --events-stdout      the event stream on stdout; human lines go to stderr\n"
    "  --events-socket PATH the event stream to every client of a Unix socket at PATH\n"
    "  --coverage           after the run, a report by meta.spec: text on stderr, and\n"
    "                       coverage.html (provium coverage)\n"
    "  -v, --verbose        also list passing and skipped tests\n"
    "  -q, --quiet          only files with failures, and the summary\n"
    "  --no-preflight       skip the QEMU and kernel checks before running\n"
    "  --help, --version\n"
    "\n"
    "exit status: 0 every test passed or was skipped, 1 a test failed or timed out,\n"
    "2 provium could not run (config, usage, QEMU or kernel missing).\n"
    "Manual: docs/ in the source tree; start with docs/quick-start.md.\n";

static char *rundir;
static pid_t rundir_owner;

/* Only the process that made the run dir removes it: file processes are
 * forks and inherit this atexit handler (a test may call os.exit). */
static void cleanup_rundir(void)
{
    if (rundir && getpid() == rundir_owner)
        rm_rf(rundir);
    rundir = NULL;
}

/* Run directories of provium processes that died without cleaning up. */
static void sweep_stale_rundirs(const char *tmp)
{
    DIR *d = opendir(tmp);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        int pid;
        char rest[32];
        if (sscanf(e->d_name, "provium-%d-%31s", &pid, rest) != 2 || pid <= 0)
            continue;
        if (kill(pid, 0) == 0 || errno == EPERM)
            continue;
        _cleanup_free_ char *p = xasprintf("%s/%s", tmp, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == getuid())
            rm_rf(p);
    }
    closedir(d);
}

static int make_rundir(void)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    sweep_stale_rundirs(tmp);
    char *p = xasprintf("%s/provium-%d-XXXXXX", tmp, (int)getpid());
    if (!mkdtemp(p)) {
        fprintf(stderr, "provium: cannot create a run directory in %s: %s\n", tmp, strerror(errno));
        free(p);
        return -1;
    }
    rundir = p;
    rundir_owner = getpid();
    atexit(cleanup_rundir);
    vm_globals.rundir = rundir;
    return 0;
}

/* --config PATH, else the nearest provium.toml, else an empty config. */
static struct config *load_config(const char *path)
{
    struct pv_err err = {0};
    struct config *cfg = NULL;
    _cleanup_free_ char *found = NULL;
    if (!path && config_find(".", &found) == 0)
        path = found;
    if (!path) {
        char cwd[4096];
        return config_empty(getcwd(cwd, sizeof(cwd)) ? cwd : ".");
    }
    if (config_load(path, &cfg, &err) < 0) {
        fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
        return NULL;
    }
    return cfg;
}

/* What --watch compares: every .lua file under the paths (tests, helpers,
 * fixtures), by path, mtime and size, and provium.toml. */
static uint64_t tree_signature(const struct config *cfg, char **paths, size_t npaths)
{
    char **files = NULL;
    size_t n = 0;
    struct pv_err err = {0};
    uint64_t h = 1469598103934665603ull;
    if (runner_discover(cfg, paths, npaths, ".lua", &files, &n, &err) < 0)
        return h;
    for (size_t i = 0; i <= n; i++) {
        const char *p = i < n ? files[i] : cfg->path;
        struct stat st;
        if (!p || stat(p, &st) < 0)
            continue;
        char rec[64];
        int len = snprintf(rec, sizeof(rec), "\n%lld.%ld/%lld", (long long)st.st_mtim.tv_sec,
                           st.st_mtim.tv_nsec, (long long)st.st_size);
        for (const char *c = p; *c; c++)
            h = (h ^ (unsigned char)*c) * 1099511628211ull;
        for (int k = 0; k < len; k++)
            h = (h ^ (unsigned char)rec[k]) * 1099511628211ull;
    }
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
    return h;
}

/* --watch: poll every 500 ms until the tree changes (true) or Ctrl-C
 * (false). */
static bool wait_for_change(const struct config *cfg, char **paths, size_t npaths, uint64_t *seen)
{
    sigset_t old;
    int sfd = runner_signalfd(&old);
    fprintf(stderr, "provium: watching for changes (Ctrl-C to stop)\n");
    bool changed = false;
    for (;;) {
        struct pollfd p = {sfd, POLLIN, 0};
        if (poll(&p, 1, 500) > 0)
            break;
        uint64_t now = tree_signature(cfg, paths, npaths);
        if (now != *seen) {
            *seen = now;
            changed = true;
            break;
        }
    }
    close(sfd);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return changed;
}

/* provium lsp-setup [DIR] [--force]: type stubs for lua-language-server. */
static int cmd_lsp_setup(int argc, char **argv)
{
    static const char luarc[] =
        "{\n"
        "  \"runtime.version\": \"Lua 5.4\",\n"
        "  \"workspace.library\": [\".provium-meta\"],\n"
        "  \"diagnostics.globals\": [\"provium\", \"test\", \"todo\", \"wait_until\", \"json\"]\n"
        "}\n";
    bool force = false;
    const char *dir = ".";
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--force"))
            force = true;
        else if (argv[i][0] != '-' && !strcmp(dir, "."))
            dir = argv[i];
        else {
            fprintf(stderr, "usage: provium lsp-setup [DIR] [--force]\n");
            return 2;
        }
    }
    size_t len;
    const char *types = l_prelude_text("types", &len);
    _cleanup_free_ char *meta = xasprintf("%s/.provium-meta", dir);
    _cleanup_free_ char *stubs = xasprintf("%s/types.lua", meta);
    _cleanup_free_ char *rc = xasprintf("%s/.luarc.json", dir);
    int r = mkdir_p(meta, 0755);
    if (r == 0)
        r = write_file_atomic(stubs, types, len, 0644);
    if (r < 0) {
        fprintf(stderr, "provium: lsp-setup: %s: %s\n", stubs, strerror(-r));
        return 2;
    }
    printf("wrote %s\n", stubs);
    if (!force && access(rc, F_OK) == 0) {
        fprintf(stderr,
                "provium: lsp-setup: %s exists; not overwritten (--force replaces it). "
                "Merge these settings into it:\n%s",
                rc, luarc);
        return 1;
    }
    if ((r = write_file_atomic(rc, luarc, sizeof(luarc) - 1, 0644)) < 0) {
        fprintf(stderr, "provium: lsp-setup: %s: %s\n", rc, strerror(-r));
        return 2;
    }
    printf("wrote %s\n", rc);
    return 0;
}

/* provium fixture ... (docs/fixtures.md), once the run's set-up is done. */
static int cmd_fixture(const struct config *cfg, char **args, size_t nargs)
{
    const char *sub = nargs ? args[0] : "";
    const char *dir = cfg->cache_dir;
    if (!strcmp(sub, "list") && nargs == 1) {
        cache_list(cfg);
        return 0;
    }
    if (!strcmp(sub, "clean") && nargs == 1) {
        int r = rm_rf(dir);
        if (r < 0 && r != -ENOENT) {
            fprintf(stderr, "provium fixture clean: %s: %s\n", dir, strerror(-r));
            return 2;
        }
        printf("removed %s\n", dir);
        return 0;
    }
    if (!strcmp(sub, "stale") && nargs == 1) {
        char **files = NULL;
        size_t n = 0, stale = 0;
        struct pv_err err = {0};
        if (runner_discover(cfg, NULL, 0, ".fixture.lua", &files, &n, &err) < 0) {
            fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
            return 2;
        }
        for (size_t i = 0; i < n; i++) {
            char key[65];
            _cleanup_free_ char *snap = NULL, *lab = NULL;
            if (fixture_key(cfg, files[i], key, &err) == 0) {
                snap = xasprintf("%s/%s.snap", dir, key);
                lab = xasprintf("%s/%s.lab", dir, key);
            }
            if (!snap || (access(snap, F_OK) < 0 && access(lab, F_OK) < 0)) {
                _cleanup_free_ char *shown = runner_display_name(files[i]);
                printf("  %s\n", shown);
                stale++;
            }
            free(files[i]);
        }
        free(files);
        printf("%zu stale fixture(s)\n", stale);
        return 0;
    }
    if ((!strcmp(sub, "build") || !strcmp(sub, "rebuild")) && nargs == 2) {
        const char *name = args[1];
        struct pv_err err = {0};
        l_ctx.config = cfg;
        _cleanup_free_ char *path = fixture_find(cfg, name, ".");
        bool lab = path && fixture_is_lab(path); /* its entry is <key>.lab/ */
        char key[65];
        if (!strcmp(sub, "rebuild") && path && fixture_key(cfg, path, key, &err) == 0) {
            _cleanup_free_ char *snap = xasprintf("%s/%s.snap", dir, key);
            _cleanup_free_ char *labdir = xasprintf("%s/%s.lab", dir, key);
            cache_discard(snap);
            cache_discard(labdir);
        }
        struct fixture_result res;
        if (fixture_get(cfg, name, ".", lab, "provium fixture", &res, &err) < 0) {
            fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
            return 1;
        }
        printf(res.built ? "built: %s\n  %s\n" : "already built: %s\n  %s\n", name, res.snap);
        free(res.snap);
        return 0;
    }
    fprintf(stderr, "usage: provium fixture list | clean | stale | build NAME | rebuild NAME\n");
    return 2;
}

/* provium list [--fixtures] [--config PATH] [PATHS]: what would run. */
static int cmd_list(int argc, char **argv)
{
    static const struct option opts[] = {
        {"fixtures", no_argument, NULL, 'f'},
        {"config", required_argument, NULL, 'c'},
        {NULL, 0, NULL, 0},
    };
    bool fixtures = false;
    const char *config_path = NULL;
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'f')
            fixtures = true;
        else if (c == 'c')
            config_path = optarg;
        else {
            fprintf(stderr, "usage: provium list [--fixtures] [--config PATH] [PATHS]...\n");
            return 2;
        }
    }
    struct config *cfg = load_config(config_path);
    if (!cfg)
        return 2;
    char **files = NULL;
    size_t n = 0;
    struct pv_err err = {0};
    int code = 2;
    if (runner_discover(cfg, argv + optind, (size_t)(argc - optind),
                        fixtures ? ".fixture.lua" : ".test.lua", &files, &n, &err) < 0) {
        fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
    } else if (fixtures) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", files[i]);
        printf("%zu fixture(s)\n", n);
        code = 0;
    } else {
        code = runner_list(files, n);
    }
    for (size_t i = 0; i < n; i++)
        free(files[i]);
    free(files);
    config_free(cfg);
    return code;
}

static int parse_choice(const char *opt, const char *v, const char *const names[], int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(v, names[i]))
            return i;
    fprintf(stderr, "provium: %s: unknown value `%s`\n", opt, v);
    exit(2);
}

/* What the command line asks for: collect_args fills it, the steps after
 * read it. */
struct args {
    bool repl, fixture; /* provium repl / provium fixture: a run's set-up, then that */
    const char *repl_name, *repl_fixture;
    const char *config_path;
    enum accel accel;
    enum transport transport;
    bool preflight, boot_cache, watch, kmemleak;
    uint64_t pool_mem; /* 0: the default */
    long pool_cpus;    /* 0: the online CPUs */
    double overcommit;
    uint64_t seed;
    bool has_seed;
    const char *save_events, *events_socket;
    bool coverage; /* --coverage: the report after the run (docs/coverage.md) */
    struct filters flt;
    struct run_opts o;
    char **paths; /* GNU getopt permutes: options may come after paths too */
    size_t npaths;
};

/* What the set-up found: the notes of the header, the kernel. */
struct setup {
    const char *accel_note, *transport_note;
    struct kernel_info kernel;
};

enum {
    O_CONFIG = 256,
    O_ACCEL,
    O_TRANSPORT,
    O_TIMEOUT,
    O_HANG_TIMEOUT,
    O_JSON,
    O_SLOW,
    O_FAILFAST,
    O_HELP,
    O_VERSION,
    O_NOPREFLIGHT,
    O_MEM,
    O_CPUS,
    O_OVERCOMMIT,
    O_NOKSM,
    O_FILTER,
    O_TAG,
    O_NOTAG,
    O_TAGMETA,
    O_NOTAGMETA,
    O_RERUN,
    O_SINCE,
    O_SHARD,
    O_SEED,
    O_TAP,
    O_JUNIT,
    O_SAVE_EVENTS,
    O_EVENTS_STDOUT,
    O_EVENTS_SOCKET,
    O_WATCH,
    O_NAME,
    O_FIXTURE,
    O_NOBOOTCACHE,
    O_KMEMLEAK,
    O_GDB,
    O_KEEP,
    O_VMM,
    O_COVERAGE,
};

static const struct option longopts[] = {
    {"config", required_argument, NULL, O_CONFIG},
    {"accel", required_argument, NULL, O_ACCEL},
    {"transport", required_argument, NULL, O_TRANSPORT},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"hang-timeout", required_argument, NULL, O_HANG_TIMEOUT},
    {"jobs", required_argument, NULL, 'j'},
    {"json", no_argument, NULL, O_JSON},
    {"include-slow", no_argument, NULL, O_SLOW},
    {"kmemleak", no_argument, NULL, O_KMEMLEAK},
    {"gdb", no_argument, NULL, O_GDB},
    {"keep-on-failure", no_argument, NULL, O_KEEP},
    {"vmm", required_argument, NULL, O_VMM},
    {"fail-fast", no_argument, NULL, O_FAILFAST},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"no-preflight", no_argument, NULL, O_NOPREFLIGHT},
    {"mem", required_argument, NULL, O_MEM},
    {"cpus", required_argument, NULL, O_CPUS},
    {"cpu-overcommit", required_argument, NULL, O_OVERCOMMIT},
    {"no-ksm", no_argument, NULL, O_NOKSM},
    {"no-boot-cache", no_argument, NULL, O_NOBOOTCACHE},
    {"filter", required_argument, NULL, O_FILTER},
    {"tag", required_argument, NULL, O_TAG},
    {"no-tag", required_argument, NULL, O_NOTAG},
    {"tag-meta", required_argument, NULL, O_TAGMETA},
    {"no-tag-meta", required_argument, NULL, O_NOTAGMETA},
    {"rerun-failed", no_argument, NULL, O_RERUN},
    {"since", required_argument, NULL, O_SINCE},
    {"shard", required_argument, NULL, O_SHARD},
    {"seed", required_argument, NULL, O_SEED},
    {"tap", no_argument, NULL, O_TAP},
    {"junit", required_argument, NULL, O_JUNIT},
    {"save-events", required_argument, NULL, O_SAVE_EVENTS},
    {"events-stdout", no_argument, NULL, O_EVENTS_STDOUT},
    {"events-socket", required_argument, NULL, O_EVENTS_SOCKET},
    {"coverage", no_argument, NULL, O_COVERAGE},
    {"watch", no_argument, NULL, O_WATCH},
    {"name", required_argument, NULL, O_NAME},
    {"fixture", required_argument, NULL, O_FIXTURE},
    {"help", no_argument, NULL, O_HELP},
    {"version", no_argument, NULL, O_VERSION},
    {NULL, 0, NULL, 0},
};

/* The options that take a number or a size: 0, or 2 after saying why. */
static int parse_number(struct args *a, int c, const char *v)
{
    char *end;
    switch (c) {
    case O_TIMEOUT:
        if (parse_duration(v, &a->o.file_timeout) == 0)
            return 0;
        fprintf(stderr, "provium: --timeout: bad duration `%s` (e.g. 300, 90s, 5m)\n", v);
        return 2;
    case O_HANG_TIMEOUT: {
        /* the files' processes inherit it (docs/debugging.md#hangs); 0 turns
         * the watchdog off, which vm_globals says with a negative value */
        double secs;
        if (parse_duration(v, &secs) == 0) {
            vm_globals.hang_timeout = vm_globals.hang_timeout_run = secs > 0 ? secs : -1;
            return 0;
        }
        fprintf(stderr, "provium: --hang-timeout: bad duration `%s` (e.g. 30, 45s, 2m; 0: never)\n",
                v);
        return 2;
    }
    case 'j':
        a->o.jobs = atoi(v);
        if (a->o.jobs >= 1)
            return 0;
        fprintf(stderr, "provium: --jobs: expected a positive integer, got `%s`\n", v);
        return 2;
    case O_MEM:
        if (parse_size(v, &a->pool_mem) == 0 && a->pool_mem >= (64u << 20))
            return 0;
        fprintf(stderr, "provium: --mem: expected a size of at least 64M such as 16G, got `%s`\n",
                v);
        return 2;
    case O_CPUS:
        a->pool_cpus = strtol(v, &end, 10);
        if (!*end && a->pool_cpus >= 1 && a->pool_cpus <= 4096)
            return 0;
        fprintf(stderr, "provium: --cpus: expected a positive integer, got `%s`\n", v);
        return 2;
    case O_SEED:
        errno = 0;
        a->seed = strtoull(v, &end, 0);
        a->has_seed = true;
        if (*v && *v != '-' && !*end && errno == 0)
            return 0;
        fprintf(stderr, "provium: --seed: expected a whole number from 0 to 2^64-1, got `%s`\n", v);
        return 2;
    default: /* O_OVERCOMMIT */
        a->overcommit = strtod(v, &end);
        if (*end || !(a->overcommit > 0) || !isfinite(a->overcommit)) {
            fprintf(stderr, "provium: --cpu-overcommit: expected a number such as 1.5, got `%s`\n",
                    v);
            return 2;
        }
        a->overcommit = MIN(MAX(a->overcommit, 0.5), 8.0);
        return 0;
    }
}

/* The options that choose files and tests: 0, or 2 after saying why. */
static int parse_filter(struct args *a, int c, char *v)
{
    static const char *const kinds[] = {"tag", "no_tag", "tag_meta", "no_tag_meta"};
    struct pv_err err = {0};
    int r = 0;
    switch (c) {
    case O_FILTER:
        a->flt.substr = xrealloc(a->flt.substr, (a->flt.nsubstr + 1) * sizeof(char *));
        a->flt.substr[a->flt.nsubstr++] = v;
        break;
    case O_RERUN: a->flt.rerun_failed = true; break;
    case O_SINCE: a->flt.since = v; break;
    case O_SHARD: r = filters_parse_shard(&a->flt, v, &err); break;
    default: r = filters_add_test(&a->flt, kinds[c - O_TAG], v, &err); break;
    }
    if (r < 0) {
        fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
        return 2;
    }
    return 0;
}

/* One option: -1 to go on, else the exit code (--help, --version, an error). */
static int parse_option(struct args *a, int c, char *v)
{
    static const char *const accels[] = {"auto", "kvm", "tcg"};
    static const char *const transports[] = {"auto", "virtio-serial", "vsock"};
    switch (c) {
    case O_CONFIG: a->config_path = v; break;
    case O_ACCEL: a->accel = (enum accel)parse_choice("--accel", v, accels, 3); break;
    case O_TRANSPORT:
        a->transport = (enum transport)parse_choice("--transport", v, transports, 3);
        break;
    case O_TIMEOUT:
    case O_HANG_TIMEOUT:
    case 'j':
    case O_MEM:
    case O_CPUS:
    case O_OVERCOMMIT:
    case O_SEED: return parse_number(a, c, v) ? 2 : -1;
    case O_FILTER:
    case O_TAG:
    case O_NOTAG:
    case O_TAGMETA:
    case O_NOTAGMETA:
    case O_RERUN:
    case O_SINCE:
    case O_SHARD: return parse_filter(a, c, v) ? 2 : -1;
    case O_JSON: a->o.json = true; break;
    case O_SLOW: a->o.include_slow = true; break;
    case O_KMEMLEAK: a->kmemleak = true; break;
    /* nothing to resolve: the files' processes and the REPL inherit it */
    case O_GDB: vm_globals.gdb = true; break;
    /* the files' processes inherit it: lua/framework.lua (docs/debugging.md) */
    case O_KEEP: attach_keep_on_failure = true; break;
    /* the files' processes read it: lua/vmm_local.lua (docs/cli.md) */
    case O_VMM:
        if (parse_choice("--vmm", v, (const char *const[]){"qemu", "local"}, 2))
            setenv("PROVIUM_VMM", "local", 1);
        else
            unsetenv("PROVIUM_VMM");
        break;
    case O_FAILFAST: a->o.fail_fast = true; break;
    case 'v': a->o.verbosity = VERBOSE; break;
    case 'q': a->o.verbosity = QUIET; break;
    case O_NOPREFLIGHT: a->preflight = false; break;
    case O_NOKSM: a->o.ksm = false; break;
    case O_NOBOOTCACHE: a->boot_cache = false; break;
    case O_TAP: a->o.tap = true; break;
    case O_JUNIT: a->o.junit = v; break;
    case O_SAVE_EVENTS: a->save_events = v; break;
    case O_WATCH: a->watch = true; break;
    case O_NAME: a->repl_name = v; break;
    case O_FIXTURE: a->repl_fixture = v; break;
    case O_EVENTS_STDOUT: a->o.events_stdout = true; break;
    case O_EVENTS_SOCKET: a->events_socket = v; break;
    case O_COVERAGE: a->coverage = true; break;
    case O_HELP: fputs(usage, stdout); return 0;
    case O_VERSION: printf("provium %s (protocol %d)\n", PV_VERSION, PV_PROTO_VERSION); return 0;
    default: fprintf(stderr, "%s", usage); return 2;
    }
    return -1;
}

/* argv into *a: -1 to go on, else the exit code. `provium repl` and
 * `provium fixture` take the run's options too. */
static int collect_args(int argc, char **argv, struct args *a)
{
    *a = (struct args){
        .repl_name = "repl",
        .accel = ACCEL_AUTO,
        .transport = TRANSPORT_AUTO,
        .preflight = true,
        .boot_cache = true,
        .overcommit = 1.0,
        .o = {.file_timeout = 300, .ksm = true},
    };
    filters_init(&a->flt);
    a->repl = argc > 1 && !strcmp(argv[1], "repl");
    a->fixture = argc > 1 && !strcmp(argv[1], "fixture");
    if (a->repl || a->fixture) {
        argv[1] = argv[0];
        argv++, argc--;
    }
    int c, code;
    /* -p N and -f PATTERN: the seeds' spellings of --jobs and --filter (docs/legacy.md) */
    while ((c = getopt_long(argc, argv, "vqj:p:f:", longopts, NULL)) != -1)
        if ((code = parse_option(a, c == 'p' ? 'j' : c == 'f' ? O_FILTER : c, optarg)) >= 0)
            return code;
    if (a->o.json + a->o.tap + a->o.events_stdout > 1) {
        fprintf(stderr, "provium: --json, --tap and --events-stdout all write to stdout: "
                        "pick one\n");
        return 2;
    }
    a->paths = argv + optind;
    a->npaths = (size_t)(argc - optind);
    return -1;
}

/* The caches' directories before anything is written there: the kernel
 * cache root, and provium's directory in the user's cache when the fixture
 * cache is in it, as by default (user_cache_dir refuses one someone else
 * could have planted things in). 0, or -1 after saying why. */
static int check_caches(const struct config *cfg)
{
    struct pv_err err = {0};
    _cleanup_free_ char *root = NULL, *mine = NULL, *checked = NULL;
    int r = kernel_cache_dir(&root, &err);
    bool in_mine = !cfg->cache_dir || (user_cache_dir(0, &mine, NULL) == 0 &&
                                       !strncmp(cfg->cache_dir, mine, strlen(mine)));
    if (r == 0 && in_mine)
        r = user_cache_dir(USER_DIR_MAKE, &checked, &err);
    if (r < 0) {
        fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
        return -1;
    }
    return 0;
}

/* Pre-flight: what no test can run without (KVM is not on the list), then
 * the accelerator and the transport. 0, or -1 after saying why. */
static int preflight(const struct args *a, const struct config *cfg, struct setup *s)
{
    struct pv_err err = {0};
    if (getenv("PROVIUM_VMM") && !strcmp(getenv("PROVIUM_VMM"), "local")) {
        /* nothing boots: no QEMU, kernel or accelerator to look for */
        vm_globals.accel = ACCEL_TCG;
        vm_globals.transport = TRANSPORT_VIRTIO_SERIAL;
        s->accel_note = "--vmm local: no VM boots; guest operations fail (docs/cli.md)";
        return 0;
    }
    _cleanup_free_ char *root = kernel_cache_root();
    _cleanup_free_ char *qemu = qemu_which("qemu-system-x86_64");
    if (a->preflight && !qemu) {
        fprintf(stderr, "provium: qemu-system-x86_64 not found in PATH\n"
                        "  fix: apt-get install --no-install-recommends qemu-system-x86 "
                        "(or run `make deps`)\n");
        return -1;
    }
    const char *probe_kernel = NULL;
    if (kernel_find_default(root, &s->kernel, &err) == 0) {
        probe_kernel = s->kernel.vmlinuz;
    } else if (cfg->nprofiles) {
        probe_kernel = cfg->profiles[0].kernel;
    } else if (a->preflight) {
        fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
        return -1;
    }
    vm_globals.accel = accel_resolve(a->accel, probe_kernel, &s->accel_note, &err);
    if (vm_globals.accel == ACCEL_AUTO) {
        fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
        return -1;
    }
    vm_globals.transport = transport_resolve(a->transport, vm_globals.accel, &s->transport_note);
    /* Under TCG a guest runs several times slower: stretch default waits. */
    vm_globals.timeout_scale = vm_globals.accel == ACCEL_TCG ? 3.0 : 1.0;
    return 0;
}

/* The run's set-up after the pre-flight: the per-test filters for the
 * files' processes, the run directory, the cache's size, the event stream,
 * the pool. 0, or -1 after saying why. */
static int setup_run(struct args *a, const struct config *cfg)
{
    struct pv_err err = {0};
    if (json_object_size(a->flt.tests)) {
        _cleanup_free_ char *j = json_dumps(a->flt.tests, JSON_COMPACT | JSON_SORT_KEYS);
        setenv("PROVIUM_TEST_FILTER", j, 1);
    }
    /* the files' processes inherit it; lua/kmemleak.lua reads it (docs/splats.md#kmemleak) */
    if (a->kmemleak)
        setenv("PROVIUM_KMEMLEAK", "1", 1);
    if (a->watch && a->flt.rerun_failed) {
        fprintf(stderr, "provium: --rerun-failed is ignored under --watch\n");
        a->flt.rerun_failed = false;
    }
    if (make_rundir() < 0)
        return -1;
    cache_evict(cfg); /* before anything runs: the cache fits in cache_max_size */
    if (events_open(a->save_events, a->o.events_stdout, a->events_socket, &err) < 0) {
        fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    a->o.pool.memory = a->pool_mem ? a->pool_mem : pool_default_memory();
    long cpus = a->pool_cpus ? a->pool_cpus : sysconf(_SC_NPROCESSORS_ONLN);
    a->o.pool.cpus = (uint32_t)MAX(1.0, floor((double)cpus * a->overcommit));
    /* the networks' loss decisions (docs/networks.md): every file's switch
     * is forked with it */
    if (!a->has_seed && getrandom(&a->seed, sizeof(a->seed), 0) != sizeof(a->seed))
        a->seed = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    switch_seed(a->seed);
    a->o.paths = a->paths;
    a->o.npaths = a->npaths;
    return 0;
}

/* The header printed before the results. */
static void run_header(struct buf *h, const struct args *a, const struct setup *s, size_t nfiles,
                       const char *selected)
{
    buf_consume(h, h->len);
    buf_addf(h, "provium %s: %zu file(s), accel %s, transport %s", PV_VERSION, nfiles,
             accel_name(vm_globals.accel), transport_name(vm_globals.transport));
    if (vm_globals.accel == ACCEL_TCG)
        buf_addf(h, " (default timeouts x%g)", vm_globals.timeout_scale);
    if (s->accel_note)
        buf_addf(h, "\nprovium: %s", s->accel_note);
    if (s->transport_note)
        buf_addf(h, "\nprovium: %s", s->transport_note);
    if (selected)
        buf_addf(h, "\n%s", selected);
    buf_addf(h, "\nprovium: pool %.1f GiB, %u vCPUs, seed %" PRIu64,
             (double)a->o.pool.memory / (1 << 30), a->o.pool.cpus, a->seed);
}

/* Find the files, filter them, run them: the exit code. */
static int run_files(struct args *a, const struct config *cfg, const struct setup *s)
{
    struct pv_err err = {0};
    char **files = NULL, *selected = NULL;
    size_t nfiles = 0;
    int code = 2;
    if (runner_discover(cfg, a->paths, a->npaths, ".test.lua", &files, &nfiles, &err) < 0 ||
        filters_apply(&a->flt, files, &nfiles, &selected, &err) < 0) {
        fprintf(stderr, "provium: %s%s\n", err.msg, pv_err_story(&err));
    } else {
        struct buf header = BUF_INIT;
        run_header(&header, a, s, nfiles, selected);
        a->o.header = header.data;
        code = runner_run(cfg, &a->o, files, nfiles);
        a->o.header = NULL;
        buf_release(&header);
    }
    for (size_t i = 0; i < nfiles; i++)
        free(files[i]);
    free(files);
    free(selected);
    return code;
}

/* The files, and with --watch again whenever the tree changes: the exit
 * code. */
static int run_watch(struct args *a, const struct config *cfg, const struct setup *s)
{
    uint64_t seen = a->watch ? tree_signature(cfg, a->paths, a->npaths) : 0;
    for (;;) {
        int code = run_files(a, cfg, s);
        if (!a->watch || code == 130 || code == 2)
            return code;
        if (!wait_for_change(cfg, a->paths, a->npaths, &seen))
            return code ? code : 130;
        events_restart();
    }
}

/* Everything but the subcommands that need no set-up: the exit code. */
static int pmain(struct args *a)
{
    struct config *cfg = load_config(a->config_path);
    if (!cfg)
        return 2;
    cfg->boot_cache = cfg->boot_cache && a->boot_cache;
    struct setup s = {0};
    int code = 2;
    _cleanup_free_ char *coverage_events = NULL;
    if (check_caches(cfg) < 0 || preflight(a, cfg, &s) < 0)
        goto out;
    if (a->coverage && !a->repl && !a->fixture) {
        if (coverage_prepare(a->save_events, &coverage_events) < 0)
            goto out;
        a->save_events = coverage_events;
    }
    if (setup_run(a, cfg) < 0)
        goto out;
    if (a->fixture) {
        code = cmd_fixture(cfg, a->paths, a->npaths);
    } else if (a->repl && a->npaths > 1) {
        fprintf(stderr, "usage: provium repl [PROFILE] [--name NAME]\n");
    } else if (a->repl) {
        l_ctx.config = cfg;
        code = repl_run(cfg, a->npaths ? a->paths[0] : "default", a->repl_name, a->repl_fixture);
    } else {
        code = run_watch(a, cfg, &s);
    }
out:
    kernel_info_release(&s.kernel);
    config_free(cfg);
    events_close();
    cleanup_rundir();
    return coverage_finish(coverage_events, code);
}

int main(int argc, char **argv)
{
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    if (!strcmp(name, "provium-coverage"))
        return coverage_main(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "coverage"))
        return coverage_main(argc - 1, argv + 1);
    /* the seeds' forms (docs/legacy.md): `provium test PATH...` runs PATH, `provium version` */
    static char version_opt[] = "--version";
    if (argc > 1 && !strcmp(argv[1], "version"))
        argv[1] = version_opt;
    if (argc > 1 && !strcmp(argv[1], "test")) {
        argv[1] = argv[0];
        argv++, argc--;
    }
    if (argc > 1 && !strcmp(argv[1], "kernel"))
        return cmd_kernel(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "list"))
        return cmd_list(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "lsp-setup"))
        return cmd_lsp_setup(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "attach"))
        return attach_main(argc, argv);
    struct args a;
    int code = collect_args(argc, argv, &a);
    if (code < 0)
        code = pmain(&a);
    filters_release(&a.flt);
    return code;
}
