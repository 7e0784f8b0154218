/* Which files and tests run (docs/cli.md "Filter precedence",
 * docs/cli.md): the file-level filters applied to the discovered files,
 * the per-test ones handed to each file's Lua state, sharding, and the
 * rerun state of --rerun-failed. */
#pragma once

#include <jansson.h>

#include "util.h"

struct filters {
    char **substr; /* --filter: each may hold `a|b` alternatives */
    size_t nsubstr;
    bool rerun_failed;
    const char *since;         /* --since PATH */
    unsigned shard_k, shard_n; /* --shard K/N; 0/0 = none */
    /* per test, as PROVIUM_TEST_FILTER */
    json_t *tests; /* {"tag": [..], "no_tag": [..], "tag_meta": {k: [v..]}, "no_tag_meta": ..} */
};

void filters_init(struct filters *f);
void filters_release(struct filters *f);
/* --tag / --no-tag VALUE, --tag-meta / --no-tag-meta KEY=VALUE; -EINVAL
 * with err for a malformed one. */
int filters_add_test(struct filters *f, const char *kind, const char *value, struct pv_err *err);
/* "K/N" */
int filters_parse_shard(struct filters *f, const char *s, struct pv_err *err);

/* Keep the files (display paths as given, freeing the others) that pass
 * --filter, --rerun-failed, --since and --shard, in that order. *note gets
 * a line for the header when files were left out (free it), or NULL. */
int filters_apply(const struct filters *f, char **files, size_t *nfiles, char **note,
                  struct pv_err *err);

/* Where --rerun-failed keeps its state: $PROVIUM_RERUN_STATE, else
 * rerun.json in provium's directory of the user's cache (user_cache_dir,
 * made and checked). Caller frees. */
int rerun_state_path(char **ret, struct pv_err *err);
/* The failed files of a rerun state's text ({"failed": [paths...]}), or
 * NULL when the text is not that. Separate from the file for the fuzz
 * target. */
json_t *rerun_parse(const char *text, size_t len);
/* After a run: failed files join the state, passed ones leave it. */
int rerun_state_update(char *const *failed, size_t nfailed, char *const *passed, size_t npassed,
                       struct pv_err *err);
