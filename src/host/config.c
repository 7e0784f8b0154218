/* Loading provium.toml into struct config: walk the parsed TOML tree, check
 * every key and type, resolve paths, and expand [profiles] from_dir. */
#include "config.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>

#include "toml.h"

#define CONFIG_MAX_BYTES (16u << 20)
#define CMDLINE_FILE_MAX_BYTES (1u << 20)
#define CONFIG_DEFAULT_CACHE_MAX_SIZE (20ULL << 30)

/* The file being checked, for messages and relative paths. */
struct config_ctx {
    const char *file;  /* path shown in messages */
    const char *dir;   /* relative paths resolve against this (absolute) */
    const char *where; /* "[provium]", "[profiles.x]", "profile `x`", or NULL (top level) */
    struct pv_err *err;
};

PV_PRINTF(3, 4)
static int config_invalid(const struct config_ctx *x, int line, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return pv_err_set(x->err, EINVAL, "invalid config in `%s`:%d: %s", x->file, line, msg);
}

/* ---- paths ---- */

/* dir (absolute) joined with rel, with ".", ".." and repeated slashes folded
 * lexically, as the seed documentation resolves "../kernel/bzImage". */
static char *config_join(const char *dir, const char *rel)
{
    _cleanup_free_ char *s = xasprintf("%s/%s", dir, rel);
    char *out = xmalloc(strlen(s) + 2);
    size_t n = 0;
    const char *p = s;
    while (*p) {
        while (*p == '/')
            p++;
        if (!*p)
            break;
        const char *e = strchrnul(p, '/');
        size_t len = (size_t)(e - p);
        if (len == 1 && p[0] == '.') {
            /* nothing */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 0)
                n--;
        } else {
            out[n++] = '/';
            memcpy(out + n, p, len);
            n += len;
        }
        p = e;
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = 0;
    return out;
}

/* path made absolute against the current directory, folded. */
static int config_absolute(const char *path, char **ret)
{
    if (path[0] == '/') {
        *ret = config_join("/", path);
        return 0;
    }
    _cleanup_free_ char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return -errno;
    *ret = config_join(cwd, path);
    return 0;
}

/* The directory part of an absolute, folded path. */
static char *config_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path)
        return xstrdup("/");
    return xstrndup(path, (size_t)(slash - path));
}

/* NULL without a home directory: main then stops, saying so, unless
 * cache_dir is set (docs/kernels.md, "The cache"). */
static char *config_default_cache_dir(void)
{
    _cleanup_free_ char *dir = NULL;
    if (user_cache_dir(0, &dir, NULL) < 0)
        return NULL;
    return xasprintf("%s/fixtures", dir);
}

/* ---- typed getters ---- */

static int config_wrong_type(const struct config_ctx *x, const char *key,
                             const struct toml_value *v, const char *expected)
{
    if (x->where)
        return config_invalid(x, v->line, "key `%s` in %s must be %s, got %s", key, x->where,
                              expected, toml_type_name(v->type));
    return config_invalid(x, v->line, "key `%s` must be %s, got %s", key, expected,
                          toml_type_name(v->type));
}

static int config_want(const struct config_ctx *x, const char *key, const struct toml_value *v,
                       enum toml_type type)
{
    if (v->type == type)
        return 0;
    return config_wrong_type(x, key, v, toml_type_a(type));
}

static int config_string(const struct config_ctx *x, const char *key, const struct toml_value *v,
                         char **ret)
{
    int r = config_want(x, key, v, TOML_STRING);
    if (r < 0)
        return r;
    free(*ret);
    *ret = xstrdup(v->u.s);
    return 0;
}

static int config_bool(const struct config_ctx *x, const char *key, const struct toml_value *v,
                       bool *ret)
{
    int r = config_want(x, key, v, TOML_BOOL);
    if (r == 0)
        *ret = v->u.b;
    return r;
}

/* A path: "~" and "~/..." expand to $HOME, relative paths resolve against
 * the file's directory, absolute paths are kept as written, and so are
 * paths starting with {out} (a build output, expanded by the caller). */
static int config_path(const struct config_ctx *x, const char *key, const struct toml_value *v,
                       char **ret)
{
    int r = config_want(x, key, v, TOML_STRING);
    if (r < 0)
        return r;
    const char *s = v->u.s;
    char *p;
    if (!*s)
        return config_invalid(x, v->line, "key `%s` in %s must not be empty", key,
                              x->where ? x->where : "the top level");
    if (s[0] == '~' && (s[1] == 0 || s[1] == '/')) {
        _cleanup_free_ char *home = NULL;
        struct pv_err herr = {0};
        if (user_home_dir(&home, &herr) < 0)
            return config_invalid(x, v->line, "cannot expand `%s`: %s", s, herr.msg);
        p = xasprintf("%s%s", home, s + 1);
    } else if (s[0] == '/' || !strncmp(s, "{out}", 5)) {
        p = xstrdup(s);
    } else {
        p = config_join(x->dir, s);
    }
    free(*ret);
    *ret = p;
    return 0;
}

/* An array of paths, e.g. roots or disks. */
static int config_path_list(const struct config_ctx *x, const char *key, const struct toml_value *v,
                            char ***ret, size_t *ret_n)
{
    int r = config_want(x, key, v, TOML_ARRAY);
    if (r < 0)
        return r;
    for (size_t i = 0; i < v->u.arr.n; i++) {
        char name[64];
        char *p = NULL;
        snprintf(name, sizeof(name), "%s[%zu]", key, i);
        r = config_path(x, name, v->u.arr.items[i], &p);
        if (r < 0)
            return r;
        *ret = xrealloc(*ret, (*ret_n + 1) * sizeof(**ret));
        (*ret)[(*ret_n)++] = p;
    }
    return 0;
}

static bool config_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Append the whitespace-separated words of s to b, one space between
 * words: a cmdline file may be written over several lines. */
static void config_add_words(struct buf *b, const char *s)
{
    for (;;) {
        while (config_is_space(*s))
            s++;
        if (!*s)
            return;
        const char *e = s;
        while (*e && !config_is_space(*e))
            e++;
        if (b->len)
            buf_add(b, " ", 1);
        buf_add(b, s, (size_t)(e - s));
        s = e;
    }
}

/* ---- files ---- */

static int config_read_toml(const char *path, struct toml_table **ret, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    struct toml_error te;
    int r = read_file(path, CONFIG_MAX_BYTES, &b);
    if (r < 0) {
        buf_release(&b);
        return pv_err_set(err, -r, "read `%s`: %s", path, strerror(-r));
    }
    r = toml_parse(b.data, b.len, ret, &te);
    buf_release(&b);
    if (r < 0)
        return pv_err_set(err, EINVAL, "parse `%s`:%d:%d: %s", path, te.line, te.col, te.msg);
    return 0;
}

/* ---- profiles ---- */

static struct profile *config_find_profile(struct config *c, const char *name)
{
    for (size_t i = 0; i < c->nprofiles; i++)
        if (!strcmp(c->profiles[i].name, name))
            return &c->profiles[i];
    return NULL;
}

static struct profile *config_add_profile(struct config *c, const char *name, const char *source,
                                          int line, const char *dir)
{
    c->profiles = xrealloc(c->profiles, (c->nprofiles + 1) * sizeof(*c->profiles));
    struct profile *p = &c->profiles[c->nprofiles++];
    memset(p, 0, sizeof(*p));
    p->name = xstrdup(name);
    p->source = xstrdup(source);
    p->line = line;
    p->dir = xstrdup(dir);
    p->guest_os = xstrdup("linux");
    p->inject_agent = true;
    p->pvh = true;
    return p;
}

static void config_profile_release(struct profile *p)
{
    free(p->name);
    free(p->source);
    free(p->dir);
    free(p->kernel);
    free(p->initrd);
    free(p->rootfs);
    free(p->cmdline);
    free(p->init);
    free(p->guest_os);
    free(p->agent_overlay_path);
    free(p->modules);
    free(p->vmlinux);
    free(p->build);
    free(p->build_out);
    free(p->cmdline_file);
    for (size_t i = 0; i < p->ndisks; i++) {
        free(p->disks[i]);
        free(p->disk_ids[i]);
    }
    free(p->disks);
    free(p->disk_ids);
    free(p->disk_readonly);
}

static int config_timeout(const struct config_ctx *x, const char *key, const struct toml_value *v,
                          double *ret)
{
    double d;
    if (v->type == TOML_INT) {
        d = (double)v->u.i;
    } else if (v->type == TOML_FLOAT) {
        d = v->u.f;
    } else if (v->type == TOML_STRING) {
        if (parse_duration(v->u.s, &d) < 0)
            return config_invalid(x, v->line,
                                  "invalid %s `%s` in %s (expected seconds or a duration such "
                                  "as \"30s\")",
                                  key, v->u.s, x->where);
    } else {
        return config_wrong_type(x, key, v, "a number of seconds or a duration string");
    }
    /* 0 would read as "unset" in struct profile, so it is not accepted. */
    if (!isfinite(d) || d <= 0 || d > PV_DURATION_MAX)
        return config_invalid(x, v->line,
                              "%s in %s must be a positive number of seconds, at most %.0f", key,
                              x->where, PV_DURATION_MAX);
    *ret = d;
    return 0;
}

/* Fold cmdline_file's text, cmdline and the legacy append (in that order)
 * into p->cmdline. */
static int config_cmdline(const struct config_ctx *x, struct profile *p,
                          const struct toml_value *cmdline, const struct toml_value *append,
                          const struct toml_value *cmdline_file)
{
    struct buf b = BUF_INIT;

    /* With a cmdline_file, an empty inline cmdline is fine: the two compose. */
    if (cmdline && !cmdline_file) {
        config_add_words(&b, cmdline->u.s);
        bool empty = b.len == 0;
        buf_release(&b);
        if (empty)
            return config_invalid(x, cmdline->line, "profile `%s` has empty cmdline", p->name);
    }
    if (cmdline_file && !strncmp(p->cmdline_file, "{out}", 5)) {
        p->cmdline_file_pending = true;
    } else if (cmdline_file) {
        struct buf raw = BUF_INIT;
        int r = read_file(p->cmdline_file, CMDLINE_FILE_MAX_BYTES, &raw);
        if (r == 0 && memchr(raw.data, 0, raw.len))
            r = -EINVAL;
        if (r < 0) {
            buf_release(&raw);
            return config_invalid(x, cmdline_file->line, "cannot read cmdline_file `%s`: %s",
                                  p->cmdline_file,
                                  r == -EINVAL ? "it contains a NUL byte" : strerror(-r));
        }
        config_add_words(&b, raw.data);
        buf_release(&raw);
    }
    if (cmdline)
        config_add_words(&b, cmdline->u.s);
    if (append)
        config_add_words(&b, append->u.s);
    free(p->cmdline);
    p->cmdline = b.len ? buf_steal(&b) : NULL;
    buf_release(&b);
    return 0;
}

/* One entry of disks: a path, or { path = "...", id = "...", readonly = true }. */
static int config_disk(const struct config_ctx *x, size_t i, const struct toml_value *v,
                       struct profile *p)
{
    _cleanup_free_ char *name = xasprintf("disks[%zu]", i);
    _cleanup_free_ char *path = NULL;
    _cleanup_free_ char *id = NULL;
    bool readonly = false;
    int r = 0;

    if (v->type == TOML_STRING) {
        r = config_path(x, name, v, &path);
    } else if (v->type == TOML_TABLE) {
        const struct toml_table *t = v->u.tab;
        for (size_t j = 0; j < t->n && r == 0; j++) {
            const char *k = t->keys[j];
            const struct toml_value *kv = t->vals[j];
            _cleanup_free_ char *kname = xasprintf("%s.%s", name, k);
            if (!strcmp(k, "path")) {
                r = config_path(x, kname, kv, &path);
            } else if (!strcmp(k, "id")) {
                r = config_string(x, kname, kv, &id);
            } else if (!strcmp(k, "readonly")) {
                r = config_bool(x, kname, kv, &readonly);
            } else {
                r = config_invalid(x, kv->line, "unknown key `%s` in %s", kname, x->where);
            }
        }
        if (r == 0 && !path)
            r = config_invalid(x, v->line, "`%s` in %s has no path", name, x->where);
    } else {
        r = config_wrong_type(x, name, v, "a path or a table { path, id, readonly }");
    }
    if (r < 0)
        return r;
    p->disks = xrealloc(p->disks, (p->ndisks + 1) * sizeof(*p->disks));
    p->disk_ids = xrealloc(p->disk_ids, (p->ndisks + 1) * sizeof(*p->disk_ids));
    p->disk_readonly = xrealloc(p->disk_readonly, (p->ndisks + 1) * sizeof(*p->disk_readonly));
    p->disks[p->ndisks] = steal_pointer(&path);
    p->disk_ids[p->ndisks] = steal_pointer(&id);
    p->disk_readonly[p->ndisks] = readonly;
    p->ndisks++;
    return 0;
}

/* Fill p from the keys of table t (a [profiles.<name>] table or the top
 * level of a from_dir profile file). */
static int config_load_profile(const struct config_ctx *x, const struct toml_table *t,
                               struct profile *p)
{
    const struct toml_value *cmdline = NULL, *append = NULL, *cmdline_file = NULL;
    const struct toml_value *root = NULL, *rootfs = NULL, *guest_os = NULL;
    int r = 0;

    for (size_t i = 0; i < t->n && r == 0; i++) {
        const char *k = t->keys[i];
        const struct toml_value *v = t->vals[i];
        if (!strcmp(k, "kernel")) {
            r = config_path(x, k, v, &p->kernel);
        } else if (!strcmp(k, "initrd")) {
            p->initrd_none = v->type == TOML_STRING && !strcmp(v->u.s, "none");
            if (!p->initrd_none)
                r = config_path(x, k, v, &p->initrd);
        } else if (!strcmp(k, "rootfs")) {
            rootfs = v;
            r = config_path(x, k, v, &p->rootfs);
        } else if (!strcmp(k, "root")) {
            root = v;
            r = config_path(x, k, v, &p->rootfs);
        } else if (!strcmp(k, "modules")) {
            r = config_path(x, k, v, &p->modules);
        } else if (!strcmp(k, "vmlinux")) {
            r = config_path(x, k, v, &p->vmlinux);
        } else if (!strcmp(k, "agent_overlay_path")) {
            r = config_path(x, k, v, &p->agent_overlay_path);
        } else if (!strcmp(k, "cmdline_file")) {
            cmdline_file = v;
            r = config_path(x, k, v, &p->cmdline_file);
        } else if (!strcmp(k, "cmdline")) {
            cmdline = v;
            r = config_want(x, k, v, TOML_STRING);
        } else if (!strcmp(k, "append")) {
            append = v;
            r = config_want(x, k, v, TOML_STRING);
        } else if (!strcmp(k, "init")) {
            r = config_string(x, k, v, &p->init);
        } else if (!strcmp(k, "build")) {
            r = config_string(x, k, v, &p->build);
        } else if (!strcmp(k, "build_out")) {
            r = config_path(x, k, v, &p->build_out);
        } else if (!strcmp(k, "guest_os")) {
            guest_os = v;
            r = config_string(x, k, v, &p->guest_os);
        } else if (!strcmp(k, "inject_agent")) {
            r = config_bool(x, k, v, &p->inject_agent);
        } else if (!strcmp(k, "pvh")) {
            r = config_bool(x, k, v, &p->pvh);
        } else if (!strcmp(k, "disks")) {
            r = config_want(x, k, v, TOML_ARRAY);
            for (size_t j = 0; r == 0 && j < v->u.arr.n; j++)
                r = config_disk(x, j, v->u.arr.items[j], p);
        } else if (!strcmp(k, "agent_boot_timeout")) {
            r = config_timeout(x, k, v, &p->agent_boot_timeout);
        } else {
            r = config_invalid(x, v->line, "unknown key `%s` in %s", k, x->where);
        }
    }
    if (r < 0)
        return r;

    if (root && rootfs)
        return config_invalid(x, root->line, "profile `%s` sets both `root` and `rootfs`", p->name);
    /* Without kernel, the kernel is the one inside the root (found at boot). */
    if (!p->kernel && !p->rootfs)
        return config_invalid(x, p->line, "profile `%s` sets neither `kernel` nor `root`", p->name);
    if (guest_os && strcmp(p->guest_os, "linux") && strcmp(p->guest_os, "peios"))
        return config_invalid(x, guest_os->line,
                              "profile `%s` has guest_os = `%s`, expected `linux` or `peios`",
                              p->name, p->guest_os);
    return config_cmdline(x, p, cmdline, append, cmdline_file);
}

/* [profiles] (legacy: false) or [profile] (legacy: true). from_dir is
 * returned for the caller to expand once every inline profile is known. */
static int config_load_profiles(struct config *c, const struct config_ctx *top,
                                const struct toml_table *t, bool legacy,
                                const struct toml_value **ret_from_dir)
{
    const char *tname = legacy ? "profile" : "profiles";
    for (size_t i = 0; i < t->n; i++) {
        const char *name = t->keys[i];
        const struct toml_value *v = t->vals[i];
        _cleanup_free_ char *where = xasprintf("[%s.%s]", tname, name);
        struct config_ctx x = {top->file, c->dir, where, top->err};
        int r;

        if (!legacy && !strcmp(name, "from_dir")) {
            struct config_ctx px = {top->file, c->dir, "[profiles]", top->err};
            r = config_want(&px, name, v, TOML_STRING);
            if (r < 0)
                return r;
            *ret_from_dir = v;
            continue;
        }
        if (v->type != TOML_TABLE) {
            struct config_ctx px = {top->file, c->dir, legacy ? "[profile]" : "[profiles]",
                                    top->err};
            return config_wrong_type(&px, name, v, "a table (a profile)");
        }
        if (!*name)
            return config_invalid(&x, v->line, "empty profile name in [%s]", tname);
        const struct profile *old = config_find_profile(c, name);
        if (old)
            return config_invalid(&x, v->line, "profile `%s` is already defined at line %d", name,
                                  old->line);
        struct profile *p = config_add_profile(c, name, c->path, v->u.tab->line, c->dir);
        r = config_load_profile(&x, v->u.tab, p);
        if (r < 0)
            return r;
    }
    return 0;
}

static int config_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* [profiles] from_dir = "dir": one profile per dir/<name>/profile.provium.toml. */
static int config_load_from_dir(struct config *c, const struct config_ctx *top,
                                const struct toml_value *v)
{
    struct config_ctx px = {top->file, c->dir, "[profiles]", top->err};
    _cleanup_free_ char *dir = NULL;
    char **names = NULL;
    size_t n = 0;
    int r = config_path(&px, "from_dir", v, &dir);
    if (r < 0)
        return r;

    DIR *d = opendir(dir);
    if (!d)
        return config_invalid(&px, v->line, "from_dir `%s`: %s", dir, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        names = xrealloc(names, (n + 1) * sizeof(*names));
        names[n++] = xstrdup(de->d_name);
    }
    closedir(d);
    /* Sorted, so that the first error reported does not depend on readdir. */
    if (n)
        qsort(names, n, sizeof(*names), config_cmp_str);

    size_t found = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        _cleanup_free_ char *sub = xasprintf("%s/%s", dir, names[i]);
        _cleanup_free_ char *file = xasprintf("%s/%s", sub, CONFIG_PROFILE_FILE_NAME);
        _cleanup_free_ char *where = xasprintf("profile `%s`", names[i]);
        struct config_ctx x = {file, sub, where, top->err};
        struct stat st;
        if (stat(sub, &st) < 0 || !S_ISDIR(st.st_mode))
            continue;
        if (stat(file, &st) < 0 && errno == ENOENT)
            continue;
        const struct profile *old = config_find_profile(c, names[i]);
        if (old) {
            struct config_ctx ox = {top->file, c->dir, NULL, top->err};
            r = config_invalid(&ox, old->line, "profile `%s` is defined here and in `%s`", names[i],
                               file);
            break;
        }
        struct toml_table *t = NULL;
        r = config_read_toml(file, &t, top->err);
        if (r < 0)
            break;
        struct profile *p = config_add_profile(c, names[i], file, 1, sub);
        r = config_load_profile(&x, t, p);
        toml_free(t);
        found++;
    }
    if (r == 0 && found == 0)
        r = config_invalid(&px, v->line,
                           "from_dir `%s` holds no profile (a profile is a directory containing "
                           "a " CONFIG_PROFILE_FILE_NAME ")",
                           dir);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return r;
}

/* ---- [provium] ---- */

static int config_load_provium(struct config *c, const struct config_ctx *top,
                               const struct toml_table *t)
{
    struct config_ctx x = {top->file, c->dir, "[provium]", top->err};
    for (size_t i = 0; i < t->n; i++) {
        const char *k = t->keys[i];
        const struct toml_value *v = t->vals[i];
        int r;
        if (!strcmp(k, "roots")) {
            r = config_path_list(&x, k, v, &c->roots, &c->nroots);
        } else if (!strcmp(k, "cache_dir")) {
            r = config_path(&x, k, v, &c->cache_dir);
        } else if (!strcmp(k, "cache_max_size")) {
            if (v->type == TOML_INT) {
                r = v->u.i < 0 ? config_invalid(&x, v->line,
                                                "cache_max_size in [provium] must not be negative")
                               : 0;
                if (r == 0)
                    c->cache_max_size = (uint64_t)v->u.i;
            } else if (v->type == TOML_STRING) {
                r = parse_size(v->u.s, &c->cache_max_size);
                if (r < 0)
                    r = config_invalid(&x, v->line,
                                       "invalid cache_max_size `%s` in [provium] (expected bytes "
                                       "or a size such as \"20G\")",
                                       v->u.s);
            } else {
                r = config_wrong_type(&x, k, v, "a string or an integer");
            }
        } else if (!strcmp(k, "boot_cache")) {
            r = config_bool(&x, k, v, &c->boot_cache);
        } else {
            r = config_invalid(&x, v->line, "unknown key `%s` in [provium]", k);
        }
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- public ---- */

static int config_cmp_profile(const void *a, const void *b)
{
    const struct profile *pa = a, *pb = b;
    return strcmp(pa->name, pb->name);
}

static struct config *config_new(char *dir)
{
    struct config *c = xcalloc(1, sizeof(*c));
    c->dir = dir;
    c->cache_dir = config_default_cache_dir();
    c->boot_cache = true;
    c->cache_max_size = CONFIG_DEFAULT_CACHE_MAX_SIZE;
    return c;
}

struct config *config_empty(const char *dir)
{
    char *abs = NULL;
    if (config_absolute(dir ? dir : ".", &abs) < 0)
        abs = xstrdup(dir ? dir : "/");
    return config_new(abs);
}

int config_load(const char *path, struct config **ret, struct pv_err *err)
{
    char *abs = NULL;
    const struct toml_value *from_dir = NULL;
    struct toml_table *root = NULL;
    *ret = NULL;

    int r = config_absolute(path, &abs);
    if (r < 0)
        return pv_err_set(err, -r, "read `%s`: cannot find the current directory: %s", path,
                          strerror(-r));
    struct config *c = config_new(config_dirname(abs));
    c->path = abs;
    struct config_ctx top = {path, c->dir, NULL, err};

    r = config_read_toml(path, &root, err);
    for (size_t i = 0; r == 0 && i < root->n; i++) {
        const char *k = root->keys[i];
        const struct toml_value *v = root->vals[i];
        if (!strcmp(k, "provium") || !strcmp(k, "profiles") || !strcmp(k, "profile")) {
            r = config_want(&top, k, v, TOML_TABLE);
            if (r < 0)
                break;
        }
        if (!strcmp(k, "provium"))
            r = config_load_provium(c, &top, v->u.tab);
        else if (!strcmp(k, "profiles"))
            r = config_load_profiles(c, &top, v->u.tab, false, &from_dir);
        else if (!strcmp(k, "profile"))
            r = config_load_profiles(c, &top, v->u.tab, true, NULL);
        else
            r = config_invalid(&top, v->line,
                               "unknown top-level key `%s` (expected [provium] or "
                               "[profiles.<name>])",
                               k);
    }
    if (r == 0 && from_dir)
        r = config_load_from_dir(c, &top, from_dir);
    toml_free(root);
    if (r < 0) {
        config_free(c);
        return r;
    }
    if (c->nprofiles)
        qsort(c->profiles, c->nprofiles, sizeof(*c->profiles), config_cmp_profile);
    *ret = c;
    return 0;
}

int config_find(const char *start_dir, char **ret_path)
{
    _cleanup_free_ char *dir = NULL;
    int r = config_absolute(start_dir ? start_dir : ".", &dir);
    if (r < 0)
        return r;
    for (;;) {
        char *p = xasprintf("%s/%s", strcmp(dir, "/") ? dir : "", CONFIG_FILE_NAME);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            *ret_path = p;
            return 0;
        }
        free(p);
        if (!strcmp(dir, "/"))
            return -ENOENT;
        char *slash = strrchr(dir, '/');
        if (slash == dir)
            slash[1] = 0;
        else
            *slash = 0;
    }
}

const struct profile *config_profile(const struct config *c, const char *name)
{
    if (!c || !name || !c->nprofiles)
        return NULL;
    struct profile key = {.name = (char *)name};
    return bsearch(&key, c->profiles, c->nprofiles, sizeof(*c->profiles), config_cmp_profile);
}

void config_free(struct config *c)
{
    if (!c)
        return;
    free(c->path);
    free(c->dir);
    for (size_t i = 0; i < c->nroots; i++)
        free(c->roots[i]);
    free(c->roots);
    free(c->cache_dir);
    for (size_t i = 0; i < c->nprofiles; i++)
        config_profile_release(&c->profiles[i]);
    free(c->profiles);
    free(c);
}
