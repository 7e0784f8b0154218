/* The test runner: discovers *.test.lua files and runs each in its own
 * process (a fresh Lua state; a crash or hang stays inside it), several at
 * once, printing each file's results whole when it ends. */
#pragma once

#include <signal.h>

#include "config.h"
#include "pool.h"

enum verbosity { QUIET = -1, NORMAL = 0, VERBOSE = 1 };

struct run_opts {
    char **paths;
    size_t npaths;
    enum verbosity verbosity;
    double file_timeout; /* seconds; 0 = none */
    bool json, tap;
    const char *junit;  /* --junit FILE, or NULL */
    bool events_stdout; /* msgpack events take stdout */
    bool include_slow;
    bool fail_fast;
    int jobs;           /* files at once at most; 0 = as many as the pool holds */
    struct amount pool; /* the pool's size (docs/running.md) */
    bool ksm;           /* tune KSM for the run */
    const char *header; /* printed before the results (human mode), or NULL */
};

/* Find the test files: each path (a file, or a directory searched for
 * names ending in suffix, ".test.lua"); with none, the config's roots,
 * else the cwd. Sorted. */
int runner_discover(const struct config *cfg, char **paths, size_t npaths, const char *suffix,
                    char ***ret, size_t *ret_n, struct pv_err *err);
/* A file's path as the run shows it: relative to the current directory
 * when it is under it. */
char *runner_display_name(const char *file);
/* Print the tests of each file, by name, as its source declares them
 * (`provium list`): nothing runs, nothing boots. Returns the exit code. */
int runner_list(char **files, size_t nfiles);

/* Block Ctrl-C, SIGTERM and SIGHUP (*old gets the mask before) and return
 * a signalfd that reports them. */
int runner_signalfd(sigset_t *old);

/* Run the files; returns the exit code (0 all passed, 1 failures, 2 internal
 * error). vm_globals.rundir must exist. */
int runner_run(const struct config *cfg, const struct run_opts *o, char **files, size_t nfiles);

/* The per-file child: runs one file and writes its outcome as JSON to
 * resfd. Exported for `provium --vmm local` style single-process use. */
int runner_file_child(const struct config *cfg, const char *path, const char *display, int resfd);
