/* Results for CI systems (docs/cli.md): TAP version 14 on a stream, a
 * subtest per file, as each file ends; and a JUnit XML file, written once
 * at the end of the run (atomically). */
#pragma once

#include <jansson.h>
#include <stdio.h>

#include "report.h"

/* One file's TAP: its subtest (one point per test) and its point `n` in
 * the run's plan. */
void ci_tap_file(FILE *out, size_t n, const struct file_result *f, bool failed);
/* The plan, once every file has been reported. */
void ci_tap_plan(FILE *out, size_t nfiles);

/* What the JUnit file needs of a file's result, kept until the end. */
json_t *ci_junit_entry(const struct file_result *f);
/* Write entries (an array of ci_junit_entry) to path: 0 or -errno. */
int ci_junit_write(const char *path, json_t *entries, double seconds, struct pv_err *err);
