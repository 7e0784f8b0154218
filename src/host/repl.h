/* provium repl: a VM and a Lua prompt (docs/repl.md). */
#pragma once

#include "config.h"

/* Boot a VM of profile, named name, or restore fixture (if not NULL), bound
 * to the globals `vm` and its name; then read, run and print Lua until end
 * of input. vm_globals.rundir must exist. Returns the exit code. */
int repl_run(const struct config *cfg, const char *profile, const char *name, const char *fixture);
