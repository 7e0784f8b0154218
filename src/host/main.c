/* provium: argv -> options, then the runner or a subcommand. The only place
 * that calls exit(): 0 all passed, 1 a test failed, 2 provium could not run
 * (bad config, bad usage, missing QEMU or kernel). */
#include <dirent.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>

#include "accel.h"
#include "boot.h"
#include "config.h"
#include "events.h"
#include "filter.h"
#include "cache.h"
#include "fixture.h"
#include "kernel.h"
#include "lua/l_provium.h"
#include "repl.h"
#include "runner.h"
#include "version.h"
#include "vm.h"

static const char usage[] =
    "usage: provium [PATHS]... [OPTIONS]     run *.test.lua files\n"
    "       provium list [--fixtures] [PATHS]...   the files and their tests, without running\n"
    "       provium lsp-setup [DIR] [--force]       type stubs for lua-language-server\n"
    "       provium repl [PROFILE] [--name NAME] [--fixture NAME]   a VM and a Lua prompt\n"
    "       provium fixture list | clean | stale | build NAME | rebuild NAME\n"
    "       provium kernel fetch | list | path | ensure\n"
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
    "  -j, --jobs N         at most N files at once (default: as many as the pool holds)\n"
    "  --mem SIZE           the pool's memory, e.g. 16G (default: 80% of the host's)\n"
    "  --cpus N             the pool's vCPUs (default: online CPUs)\n"
    "  --cpu-overcommit F   vCPUs per host CPU, 0.5 to 8 (default 1)\n"
    "  --no-ksm             leave KSM (merging of identical guest pages) as it is\n"
    "  --no-boot-cache      boot every VM cold, not by resuming a cached boot\n"
    "  --include-slow       run tests whose meta.slow is set\n"
    "  --filter STR         files whose path contains STR (a|b: either); repeatable\n"
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
        fprintf(stderr, "provium: cannot create a run directory in %s: %s\n", tmp,
                strerror(errno));
        free(p);
        return -1;
    }
    rundir = p;
    rundir_owner = getpid();
    atexit(cleanup_rundir);
    vm_globals.rundir = rundir;
    return 0;
}

static int cmd_kernel(int argc, char **argv)
{
    const char *sub = argc > 2 ? argv[2] : "";
    _cleanup_free_ char *root = kernel_cache_root();
    struct pv_err err = {0};
    if (!strcmp(sub, "fetch") || !strcmp(sub, "ensure")) {
        struct kernel_info k = {0};
        if (!strcmp(sub, "ensure") && kernel_find_default(root, &k, &err) == 0) {
            kernel_info_release(&k);
            return 0;
        }
        fprintf(stderr, "provium: fetching Debian's cloud kernel...\n");
        if (kernel_fetch(root, &k, &err) < 0) {
            fprintf(stderr, "provium: kernel fetch: %s\n", err.msg);
            return 2;
        }
        printf("kernel %s\n  vmlinuz %s\n  modules %s\n", k.version, k.vmlinuz,
               k.modules_dir ? k.modules_dir : "(none)");
        kernel_info_release(&k);
        return 0;
    }
    if (!strcmp(sub, "path")) {
        struct kernel_info k = {0};
        if (kernel_find_default(root, &k, &err) < 0) {
            fprintf(stderr, "provium: %s\n", err.msg);
            return 2;
        }
        printf("%s\n%s\n", k.vmlinuz, k.modules_dir ? k.modules_dir : "");
        kernel_info_release(&k);
        return 0;
    }
    if (!strcmp(sub, "list")) {
        struct kernel_info *ks = NULL;
        size_t n = 0;
        if (kernel_list(root, &ks, &n, &err) < 0) {
            fprintf(stderr, "provium: kernel list: %s\n", err.msg);
            return 2;
        }
        if (n == 0)
            printf("no kernels in %s/kernels (run `provium kernel fetch`)\n", root);
        for (size_t i = 0; i < n; i++)
            printf("%s%s\t%s\n", ks[i].version, i == 0 ? " (default)" : "", ks[i].vmlinuz);
        kernel_info_free_array(ks, n);
        return 0;
    }
    fprintf(stderr, "provium kernel: expected fetch, list, path or ensure\n");
    return 2;
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
        fprintf(stderr, "provium: %s\n", err.msg);
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
static bool wait_for_change(const struct config *cfg, char **paths, size_t npaths,
                            uint64_t *seen)
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
            fprintf(stderr, "provium: %s\n", err.msg);
            return 2;
        }
        for (size_t i = 0; i < n; i++) {
            char key[65];
            _cleanup_free_ char *entry = NULL;
            if (fixture_key(cfg, files[i], key, &err) == 0)
                entry = xasprintf("%s/%s.snap", dir, key);
            if (!entry || access(entry, F_OK) < 0) {
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
        if (!strcmp(sub, "rebuild")) {
            _cleanup_free_ char *path = fixture_find(cfg, name, ".");
            char key[65];
            if (path && fixture_key(cfg, path, key, &err) == 0) {
                _cleanup_free_ char *entry = xasprintf("%s/%s.snap", dir, key);
                cache_discard(entry);
            }
        }
        struct fixture_result res;
        if (fixture_get(cfg, name, ".", false, "provium fixture", &res, &err) < 0) {
            fprintf(stderr, "provium: %s\n", err.msg);
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
        fprintf(stderr, "provium: %s\n", err.msg);
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

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "kernel"))
        return cmd_kernel(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "list"))
        return cmd_list(argc, argv);
    if (argc > 1 && !strcmp(argv[1], "lsp-setup"))
        return cmd_lsp_setup(argc, argv);
    /* provium repl [PROFILE] [--name NAME]: the run's set-up, then a prompt */
    bool repl = argc > 1 && !strcmp(argv[1], "repl");
    const char *repl_name = "repl", *repl_fixture = NULL;
    /* provium fixture list|clean|stale|build NAME|rebuild NAME: also after the set-up */
    bool fixture = argc > 1 && !strcmp(argv[1], "fixture");
    if (repl || fixture) {
        argv[1] = argv[0];
        argv++, argc--;
    }

    enum {
        O_CONFIG = 256, O_ACCEL, O_TRANSPORT, O_TIMEOUT, O_JSON, O_SLOW, O_FAILFAST, O_HELP,
        O_VERSION, O_NOPREFLIGHT, O_MEM, O_CPUS, O_OVERCOMMIT, O_NOKSM, O_FILTER, O_TAG,
        O_NOTAG, O_TAGMETA, O_NOTAGMETA, O_RERUN, O_SINCE, O_SHARD, O_TAP, O_JUNIT,
        O_SAVE_EVENTS, O_EVENTS_STDOUT, O_EVENTS_SOCKET, O_WATCH, O_NAME, O_FIXTURE, O_NOBOOTCACHE,
    };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, O_CONFIG},
        {"accel", required_argument, NULL, O_ACCEL},
        {"transport", required_argument, NULL, O_TRANSPORT},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"jobs", required_argument, NULL, 'j'},
        {"json", no_argument, NULL, O_JSON},
        {"include-slow", no_argument, NULL, O_SLOW},
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
        {"tap", no_argument, NULL, O_TAP},
        {"junit", required_argument, NULL, O_JUNIT},
        {"save-events", required_argument, NULL, O_SAVE_EVENTS},
        {"events-stdout", no_argument, NULL, O_EVENTS_STDOUT},
        {"events-socket", required_argument, NULL, O_EVENTS_SOCKET},
        {"watch", no_argument, NULL, O_WATCH},
        {"name", required_argument, NULL, O_NAME},
        {"fixture", required_argument, NULL, O_FIXTURE},
        {"help", no_argument, NULL, O_HELP},
        {"version", no_argument, NULL, O_VERSION},
        {NULL, 0, NULL, 0},
    };
    struct run_opts o = {.file_timeout = 300, .ksm = true};
    uint64_t pool_mem = 0;
    long pool_cpus = 0;
    double overcommit = 1.0;
    const char *save_events = NULL, *events_socket = NULL;
    bool watch = false;
    char *selected = NULL;
    struct filters flt;
    filters_init(&flt);
    struct pv_err ferr = {0};
    const char *config_path = NULL;
    enum accel accel = ACCEL_AUTO;
    enum transport transport = TRANSPORT_AUTO;
    bool preflight = true, boot_cache = true;
    static const char *const accels[] = {"auto", "kvm", "tcg"};
    static const char *const transports[] = {"auto", "virtio-serial", "vsock"};
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "vqj:", longopts, NULL)) != -1) {
        switch (c) {
        case O_CONFIG: config_path = optarg; break;
        case O_ACCEL: accel = (enum accel)parse_choice("--accel", optarg, accels, 3); break;
        case O_TRANSPORT:
            transport = (enum transport)parse_choice("--transport", optarg, transports, 3);
            break;
        case O_TIMEOUT:
            if (parse_duration(optarg, &o.file_timeout) < 0) {
                fprintf(stderr, "provium: --timeout: bad duration `%s` (e.g. 300, 90s, 5m)\n",
                        optarg);
                return 2;
            }
            break;
        case 'j':
            o.jobs = atoi(optarg);
            if (o.jobs < 1) {
                fprintf(stderr, "provium: --jobs: expected a positive integer, got `%s`\n",
                        optarg);
                return 2;
            }
            break;
        case O_JSON: o.json = true; break;
        case O_SLOW: o.include_slow = true; break;
        case O_FAILFAST: o.fail_fast = true; break;
        case 'v': o.verbosity = VERBOSE; break;
        case 'q': o.verbosity = QUIET; break;
        case O_NOPREFLIGHT: preflight = false; break;
        case O_MEM:
            if (parse_size(optarg, &pool_mem) < 0 || pool_mem < (64u << 20)) {
                fprintf(stderr, "provium: --mem: expected a size of at least 64M such as 16G, "
                                "got `%s`\n", optarg);
                return 2;
            }
            break;
        case O_CPUS:
            pool_cpus = strtol(optarg, &end, 10);
            if (*end || pool_cpus < 1 || pool_cpus > 4096) {
                fprintf(stderr, "provium: --cpus: expected a positive integer, got `%s`\n",
                        optarg);
                return 2;
            }
            break;
        case O_OVERCOMMIT:
            overcommit = strtod(optarg, &end);
            if (*end || !(overcommit > 0) || !isfinite(overcommit)) {
                fprintf(stderr, "provium: --cpu-overcommit: expected a number such as 1.5, "
                                "got `%s`\n", optarg);
                return 2;
            }
            overcommit = MIN(MAX(overcommit, 0.5), 8.0);
            break;
        case O_NOKSM: o.ksm = false; break;
        case O_NOBOOTCACHE: boot_cache = false; break;
        case O_FILTER:
            flt.substr = xrealloc(flt.substr, (flt.nsubstr + 1) * sizeof(char *));
            flt.substr[flt.nsubstr++] = optarg;
            break;
        case O_TAG:
        case O_NOTAG:
        case O_TAGMETA:
        case O_NOTAGMETA: {
            static const char *const kinds[] = {"tag", "no_tag", "tag_meta", "no_tag_meta"};
            if (filters_add_test(&flt, kinds[c - O_TAG], optarg, &ferr) < 0) {
                fprintf(stderr, "provium: %s\n", ferr.msg);
                return 2;
            }
            break;
        }
        case O_RERUN: flt.rerun_failed = true; break;
        case O_TAP: o.tap = true; break;
        case O_JUNIT: o.junit = optarg; break;
        case O_SAVE_EVENTS: save_events = optarg; break;
        case O_WATCH: watch = true; break;
        case O_NAME: repl_name = optarg; break;
        case O_FIXTURE: repl_fixture = optarg; break;
        case O_EVENTS_STDOUT: o.events_stdout = true; break;
        case O_EVENTS_SOCKET: events_socket = optarg; break;
        case O_SINCE: flt.since = optarg; break;
        case O_SHARD:
            if (filters_parse_shard(&flt, optarg, &ferr) < 0) {
                fprintf(stderr, "provium: %s\n", ferr.msg);
                return 2;
            }
            break;
        case O_HELP: fputs(usage, stdout); return 0;
        case O_VERSION: printf("provium %s (protocol %d)\n", PV_VERSION, PV_PROTO_VERSION); return 0;
        default: fprintf(stderr, "%s", usage); return 2;
        }
    }
    if (o.json + o.tap + o.events_stdout > 1) {
        fprintf(stderr, "provium: --json, --tap and --events-stdout all write to stdout: "
                        "pick one\n");
        return 2;
    }
    /* GNU getopt permutes: options may come after paths too */
    char **paths = argv + optind;
    size_t npaths = (size_t)(argc - optind);

    struct pv_err err = {0};
    struct config *cfg = load_config(config_path);
    if (!cfg)
        return 2;
    cfg->boot_cache = cfg->boot_cache && boot_cache;

    /* Pre-flight: what no test can run without. KVM is not on the list. */
    int code = 2;
    struct kernel_info k = {0};
    char **files = NULL;
    size_t nfiles = 0;
    struct buf header = BUF_INIT;
    _cleanup_free_ char *root = kernel_cache_root();
    _cleanup_free_ char *qemu = qemu_which("qemu-system-x86_64");
    if (preflight && !qemu) {
        fprintf(stderr, "provium: qemu-system-x86_64 not found in PATH\n"
                        "  fix: apt-get install --no-install-recommends qemu-system-x86 "
                        "(or run `make deps`)\n");
        goto out;
    }
    const char *probe_kernel = NULL;
    if (kernel_find_default(root, &k, &err) == 0) {
        probe_kernel = k.vmlinuz;
    } else if (cfg->nprofiles) {
        probe_kernel = cfg->profiles[0].kernel;
    } else if (preflight) {
        fprintf(stderr, "provium: %s\n", err.msg);
        goto out;
    }

    const char *note = NULL, *tnote = NULL;
    vm_globals.accel = accel_resolve(accel, probe_kernel, &note, &err);
    if (vm_globals.accel == ACCEL_AUTO) {
        fprintf(stderr, "provium: %s\n", err.msg);
        goto out;
    }
    vm_globals.transport = transport_resolve(transport, vm_globals.accel, &tnote);
    /* Under TCG a guest runs several times slower: stretch default waits. */
    vm_globals.timeout_scale = vm_globals.accel == ACCEL_TCG ? 3.0 : 1.0;

    if (json_object_size(flt.tests)) {
        _cleanup_free_ char *j = json_dumps(flt.tests, JSON_COMPACT | JSON_SORT_KEYS);
        setenv("PROVIUM_TEST_FILTER", j, 1);
    }
    if (watch && flt.rerun_failed) {
        fprintf(stderr, "provium: --rerun-failed is ignored under --watch\n");
        flt.rerun_failed = false;
    }
    if (make_rundir() < 0)
        goto out;
    cache_evict(cfg); /* before anything runs: the cache fits in cache_max_size */
    if (events_open(save_events, o.events_stdout, events_socket, &err) < 0) {
        fprintf(stderr, "provium: %s\n", err.msg);
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    o.pool.memory = pool_mem ? pool_mem : pool_default_memory();
    if (!pool_cpus)
        pool_cpus = sysconf(_SC_NPROCESSORS_ONLN);
    o.pool.cpus = (uint32_t)MAX(1.0, floor((double)pool_cpus * overcommit));
    o.paths = paths;
    o.npaths = npaths;

    if (fixture) {
        code = cmd_fixture(cfg, paths, npaths);
        goto out;
    }
    if (repl) {
        if (npaths > 1) {
            fprintf(stderr, "usage: provium repl [PROFILE] [--name NAME]\n");
            goto out;
        }
        l_ctx.config = cfg;
        code = repl_run(cfg, npaths ? paths[0] : "default", repl_name, repl_fixture);
        goto out;
    }
    uint64_t seen = watch ? tree_signature(cfg, paths, npaths) : 0;
    for (;;) {
        if (runner_discover(cfg, paths, npaths, ".test.lua", &files, &nfiles, &err) < 0) {
            fprintf(stderr, "provium: %s\n", err.msg);
            code = 2;
        } else if (filters_apply(&flt, files, &nfiles, &selected, &err) < 0) {
            fprintf(stderr, "provium: %s\n", err.msg);
            code = 2;
        } else {
            buf_consume(&header, header.len);
            buf_addf(&header, "provium %s: %zu file(s), accel %s, transport %s", PV_VERSION,
                     nfiles, accel_name(vm_globals.accel), transport_name(vm_globals.transport));
            if (vm_globals.accel == ACCEL_TCG)
                buf_addf(&header, " (default timeouts x%g)", vm_globals.timeout_scale);
            if (note)
                buf_addf(&header, "\nprovium: %s", note);
            if (tnote)
                buf_addf(&header, "\nprovium: %s", tnote);
            if (selected)
                buf_addf(&header, "\n%s", selected);
            buf_addf(&header, "\nprovium: pool %.1f GiB, %u vCPUs",
                     (double)o.pool.memory / (1 << 30), o.pool.cpus);
            o.header = header.data;
            code = runner_run(cfg, &o, files, nfiles);
        }
        for (size_t i = 0; i < nfiles; i++)
            free(files[i]);
        free(files);
        files = NULL;
        nfiles = 0;
        free(selected);
        selected = NULL;
        if (!watch || code == 130 || code == 2)
            break;
        if (!wait_for_change(cfg, paths, npaths, &seen)) {
            code = code ? code : 130;
            break;
        }
        events_restart();
    }
out:
    buf_release(&header);
    for (size_t i = 0; i < nfiles; i++)
        free(files[i]);
    free(files);
    kernel_info_release(&k);
    config_free(cfg);
    filters_release(&flt);
    events_close();
    cleanup_rundir();
    return code;
}
