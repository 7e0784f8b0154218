#include "filter.h"

#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>

void filters_init(struct filters *f)
{
    *f = (struct filters){.tests = json_object()};
}

void filters_release(struct filters *f)
{
    free(f->substr);
    json_decref(f->tests);
    f->tests = NULL;
}

int filters_add_test(struct filters *f, const char *kind, const char *value, struct pv_err *err)
{
    bool meta = strstr(kind, "meta") != NULL;
    char opt[32]; /* the option's spelling: tag_meta is --tag-meta */
    snprintf(opt, sizeof(opt), "%s", kind);
    for (char *c = opt; *c; c++)
        *c = *c == '_' ? '-' : *c;
    if (!meta) {
        if (!*value)
            return pv_err_set(err, EINVAL, "--%s: expected a tag name", opt);
        json_t *a = json_object_get(f->tests, kind);
        if (!a)
            json_object_set_new(f->tests, kind, a = json_array());
        json_array_append_new(a, json_string(value));
        return 0;
    }
    const char *eq = strchr(value, '=');
    if (!eq || eq == value || !eq[1])
        return pv_err_set(err, EINVAL, "--%s: expected KEY=VALUE, got `%s`", opt, value);
    json_t *m = json_object_get(f->tests, kind);
    if (!m)
        json_object_set_new(f->tests, kind, m = json_object());
    _cleanup_free_ char *key = xstrndup(value, (size_t)(eq - value));
    json_t *vals = json_object_get(m, key);
    if (!vals)
        json_object_set_new(m, key, vals = json_array());
    json_array_append_new(vals, json_string(eq + 1));
    return 0;
}

int filters_parse_shard(struct filters *f, const char *s, struct pv_err *err)
{
    unsigned k, n;
    char tail;
    if (sscanf(s, "%u/%u%c", &k, &n, &tail) != 2 || n == 0 || k == 0 || k > n || n > 100000)
        return pv_err_set(err, EINVAL, "--shard: expected K/N with 1 <= K <= N, e.g. 2/3; got `%s`",
                          s);
    f->shard_k = k;
    f->shard_n = n;
    return 0;
}

static bool matches_filter(const struct filters *f, const char *path)
{
    if (!f->nsubstr)
        return true;
    for (size_t i = 0; i < f->nsubstr; i++) {
        const char *alt = f->substr[i];
        for (;;) {
            size_t len = strcspn(alt, "|");
            _cleanup_free_ char *needle = xstrndup(alt, len);
            if (len && strstr(path, needle))
                return true;
            if (!alt[len])
                break;
            alt += len + 1;
        }
    }
    return false;
}

/* FNV-1a: a file's shard depends on its path alone, so adding files moves
 * no other file to another shard. */
static unsigned shard_of(const char *path, unsigned n)
{
    uint64_t h = 1469598103934665603ull;
    if (!strncmp(path, "./", 2))
        path += 2;
    for (const unsigned char *p = (const unsigned char *)path; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (unsigned)(h % n) + 1;
}

int rerun_state_path(char **ret, struct pv_err *err)
{
    const char *env = getenv("PROVIUM_RERUN_STATE");
    _cleanup_free_ char *dir = NULL;
    *ret = NULL;
    if (env && *env) {
        *ret = xstrdup(env);
        return 0;
    }
    int r = user_cache_dir(USER_DIR_MAKE, &dir, err);
    if (r < 0)
        return r;
    *ret = xasprintf("%s/rerun.json", dir);
    return 0;
}

json_t *rerun_parse(const char *text, size_t len)
{
    json_error_t je;
    json_t *st = json_loadb(text, len, 0, &je);
    json_t *failed = json_object_get(st, "failed");
    if (!json_is_array(failed)) {
        json_decref(st);
        return NULL;
    }
    json_incref(failed);
    json_decref(st);
    return failed;
}

static json_t *rerun_load(const char *path)
{
    struct buf text = BUF_INIT;
    json_t *failed =
        read_file(path, 64u << 20, &text) == 0 ? rerun_parse(text.data, text.len) : NULL;
    buf_release(&text);
    return failed;
}

static bool in_array(json_t *a, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (json_is_string(v) && !strcmp(json_string_value(v), s))
            return true;
    }
    return false;
}

int filters_apply(const struct filters *f, char **files, size_t *nfiles, char **note,
                  struct pv_err *err)
{
    *note = NULL;
    struct stat ref;
    if (f->since && stat(f->since, &ref) < 0)
        return pv_err_set(err, errno, "--since %s: %s", f->since, strerror(errno));
    _cleanup_free_ char *state = NULL;
    if (f->rerun_failed && rerun_state_path(&state, err) < 0)
        return pv_err_wrap(err, "--rerun-failed");
    json_t *failed = state ? rerun_load(state) : NULL;
    size_t w = 0, n = *nfiles;
    for (size_t i = 0; i < n; i++) {
        bool keep = matches_filter(f, files[i]);
        if (keep && f->rerun_failed) {
            char real[PATH_MAX];
            keep = failed && realpath(files[i], real) && in_array(failed, real);
        }
        struct stat st;
        if (keep && f->since)
            keep = stat(files[i], &st) == 0 && (st.st_mtim.tv_sec > ref.st_mtim.tv_sec ||
                                                (st.st_mtim.tv_sec == ref.st_mtim.tv_sec &&
                                                 st.st_mtim.tv_nsec > ref.st_mtim.tv_nsec));
        if (keep && f->shard_n)
            keep = shard_of(files[i], f->shard_n) == f->shard_k;
        if (keep)
            files[w++] = files[i];
        else
            free(files[i]);
    }
    *nfiles = w;
    json_decref(failed);
    if (f->rerun_failed && !failed)
        *note =
            xasprintf("provium: --rerun-failed: no failures recorded in %s; nothing to run", state);
    else if (w < n) {
        struct buf b = BUF_INIT;
        buf_addf(&b, "provium: %zu of %zu file(s) selected (", w, n);
        const char *sep = "";
        if (f->nsubstr)
            buf_addf(&b, "%s--filter", sep), sep = ", ";
        if (f->rerun_failed)
            buf_addf(&b, "%s--rerun-failed", sep), sep = ", ";
        if (f->since)
            buf_addf(&b, "%s--since %s", sep, f->since), sep = ", ";
        if (f->shard_n)
            buf_addf(&b, "%s--shard %u/%u", sep, f->shard_k, f->shard_n);
        buf_adds(&b, ")");
        *note = buf_steal(&b);
    }
    return 0;
}

int rerun_state_update(char *const *failed, size_t nfailed, char *const *passed, size_t npassed,
                       struct pv_err *err)
{
    _cleanup_free_ char *path = NULL;
    int r = rerun_state_path(&path, err);
    if (r < 0)
        return r;
    json_t *set = rerun_load(path);
    if (!set && !nfailed)
        return 0; /* nothing recorded, nothing to record */
    if (!set)
        set = json_array();
    char real[PATH_MAX];
    for (size_t i = 0; i < npassed; i++) {
        if (!realpath(passed[i], real))
            continue;
        size_t k;
        json_t *v;
        json_array_foreach(set, k, v)
        {
            if (json_is_string(v) && !strcmp(json_string_value(v), real)) {
                json_array_remove(set, k);
                break;
            }
        }
    }
    for (size_t i = 0; i < nfailed; i++)
        if (realpath(failed[i], real) && !in_array(set, real))
            json_array_append_new(set, json_string(real));
    /* a reader never sees half a file */
    _cleanup_free_ char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        mkdir_p(dir, 0700);
    }
    json_t *doc = json_pack("{s:o}", "failed", set);
    _cleanup_free_ char *text = json_dumps(doc, JSON_INDENT(1));
    r = write_file_atomic(path, text, strlen(text), 0644);
    json_decref(doc);
    if (r < 0)
        return pv_err_set(err, -r, "%s: %s", path, strerror(-r));
    return 0;
}
