#include "kmod.h"

#include <stdio.h>

/* modules.dep of a distribution kernel is about 500 KiB. */
#define KMOD_MAX_FILE (64u << 20)

#define KMOD_DEP "modules.dep"
#define KMOD_BUILTIN "modules.builtin"
const char *const kmod_index_files[] = {KMOD_DEP, KMOD_BUILTIN, NULL};

static const char *const kmod_suffixes[] = {".ko", ".ko.xz", ".ko.zst", ".ko.gz"};

/* One module: a modules.dep line, or a file that only appears as a
 * dependency (treated as having none). */
struct kmod_mod {
    char *name;       /* normalised ('_' for '-'), owned */
    const char *path; /* points into the modules.dep buffer */
    size_t dep_start; /* its dependencies: tree->dep_paths[dep_start ...] */
    size_t ndeps;     /* ... and how many */
    size_t rank;      /* the line, for duplicates; dependency-only ones rank last */
    int state;        /* KMOD_NEW, KMOD_VISITING, KMOD_DONE */
};

enum { KMOD_NEW, KMOD_VISITING, KMOD_DONE };

/* Above any line number: a module's own line wins over a mere mention. */
#define KMOD_RANK_DEP_ONLY (SIZE_MAX / 2)

struct kmod_tree {
    struct kmod_mod *mods;
    size_t nmods, capmods;
    const char **dep_paths; /* every dependency path, line after line */
    size_t *dep_index;      /* the module each of them resolves to */
    size_t ndeps, capdeps;
    char **builtin;  /* sorted normalised names */
    size_t nbuiltin; /* ... and how many */
};

static void kmod_tree_release(struct kmod_tree *t)
{
    for (size_t i = 0; i < t->nmods; i++)
        free(t->mods[i].name);
    free(t->mods);
    free(t->dep_paths);
    free(t->dep_index);
    for (size_t i = 0; i < t->nbuiltin; i++)
        free(t->builtin[i]);
    free(t->builtin);
}

/* The module name of a module file path ("kernel/x/virtio-rng.ko.xz" ->
 * "virtio_rng"), or NULL if path does not name a module file. */
static char *kmod_name_of(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base);
    for (size_t i = 0; i < ARRAY_SIZE(kmod_suffixes); i++) {
        size_t sl = strlen(kmod_suffixes[i]);
        if (len > sl && !strcmp(base + len - sl, kmod_suffixes[i])) {
            char *name = xstrndup(base, len - sl);
            for (char *p = name; *p; p++)
                if (*p == '-')
                    *p = '_';
            return name;
        }
    }
    return NULL;
}

/* A path we are willing to hand back: relative, with no ".." component, so
 * joining it to modules_dir stays inside it. */
static bool kmod_path_ok(const char *path)
{
    if (path[0] == '/')
        return false;
    for (const char *p = path; (p = strstr(p, "..")); p += 2) {
        bool start = p == path || p[-1] == '/';
        bool end = p[2] == 0 || p[2] == '/';
        if (start && end)
            return false;
    }
    return true;
}

static struct kmod_mod *kmod_add_mod(struct kmod_tree *t, const char *path, char *name, size_t rank)
{
    if (t->nmods == t->capmods) {
        t->capmods = t->capmods ? t->capmods * 2 : 256;
        t->mods = xrealloc(t->mods, t->capmods * sizeof(*t->mods));
    }
    struct kmod_mod *m = &t->mods[t->nmods++];
    *m = (struct kmod_mod){.name = name, .path = path, .dep_start = t->ndeps, .rank = rank};
    return m;
}

static void kmod_add_dep(struct kmod_tree *t, const char *path)
{
    if (t->ndeps == t->capdeps) {
        t->capdeps = t->capdeps ? t->capdeps * 2 : 1024;
        t->dep_paths = xrealloc(t->dep_paths, t->capdeps * sizeof(*t->dep_paths));
    }
    t->dep_paths[t->ndeps++] = path;
}

static int kmod_malformed(struct pv_err *err, const char *file, size_t line, const char *why)
{
    return pv_err_set(err, EINVAL, "%s:%zu: malformed line (%s)", file, line, why);
}

/* Parse modules.dep, in place in data (NUL-terminated, len bytes). */
static int kmod_parse_dep(struct kmod_tree *t, char *data, size_t len, const char *file,
                          struct pv_err *err)
{
    static const char ws[] = " \t\r\v\f";
    size_t lineno = 0;
    char *end = data + len;
    for (char *line = data; line < end;) {
        char *nl = memchr(line, '\n', (size_t)(end - line));
        char *eol = nl ? nl : end;
        lineno++;
        if (memchr(line, 0, (size_t)(eol - line)))
            return kmod_malformed(err, file, lineno, "NUL byte");
        *eol = 0;
        char *next = nl ? nl + 1 : end;

        line += strspn(line, ws);
        if (!*line) {
            line = next;
            continue;
        }
        char *colon = strchr(line, ':');
        if (!colon)
            return kmod_malformed(err, file, lineno, "no ':'");
        *colon = 0;
        char *target = line;
        size_t tlen = strcspn(target, ws);
        if (target[tlen + strspn(target + tlen, ws)])
            return kmod_malformed(err, file, lineno, "space in the module path");
        target[tlen] = 0;
        char *name = kmod_name_of(target);
        if (!name || !kmod_path_ok(target)) {
            free(name);
            return kmod_malformed(err, file, lineno, "not a relative .ko path before ':'");
        }
        struct kmod_mod *m = kmod_add_mod(t, target, name, lineno);

        size_t ndeps = 0;
        char *save = NULL;
        for (char *tok = strtok_r(colon + 1, ws, &save); tok; tok = strtok_r(NULL, ws, &save)) {
            _cleanup_free_ char *dname = kmod_name_of(tok);
            if (!dname || !kmod_path_ok(tok))
                return kmod_malformed(err, file, lineno, "a dependency is not a relative .ko path");
            kmod_add_dep(t, tok);
            ndeps++;
        }
        m->ndeps = ndeps;
        line = next;
    }
    return 0;
}

static int kmod_cmp_mod(const void *a, const void *b)
{
    const struct kmod_mod *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c)
        return c;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

static int kmod_cmp_key(const void *key, const void *elem)
{
    return strcmp(key, ((const struct kmod_mod *)elem)->name);
}

static int kmod_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int kmod_cmp_str_key(const void *key, const void *elem)
{
    return strcmp(key, *(char *const *)elem);
}

static struct kmod_mod *kmod_find(struct kmod_tree *t, const char *name)
{
    if (!t->nmods)
        return NULL;
    return bsearch(name, t->mods, t->nmods, sizeof(*t->mods), kmod_cmp_key);
}

/* Give every dependency-only path a module of its own, sort by name, keep
 * the first line of each name and resolve dependency paths to modules. */
static void kmod_index(struct kmod_tree *t)
{
    for (size_t i = 0; i < t->ndeps; i++)
        kmod_add_mod(t, t->dep_paths[i], kmod_name_of(t->dep_paths[i]), KMOD_RANK_DEP_ONLY + i);
    if (t->nmods)
        qsort(t->mods, t->nmods, sizeof(*t->mods), kmod_cmp_mod);
    size_t w = 0;
    for (size_t r = 0; r < t->nmods; r++) {
        if (w && !strcmp(t->mods[w - 1].name, t->mods[r].name)) {
            free(t->mods[r].name);
            continue;
        }
        t->mods[w++] = t->mods[r];
    }
    t->nmods = w;

    t->dep_index = xcalloc(t->ndeps ? t->ndeps : 1, sizeof(*t->dep_index));
    for (size_t i = 0; i < t->ndeps; i++) {
        _cleanup_free_ char *name = kmod_name_of(t->dep_paths[i]);
        struct kmod_mod *m = kmod_find(t, name);
        t->dep_index[i] = (size_t)(m - t->mods); /* always found: added above */
    }
}

/* modules.builtin: one path per line. It is optional, and lines that are not
 * module paths are ignored: only a name found in it matters. */
static int kmod_load_builtin(struct kmod_tree *t, const char *modules_dir, struct pv_err *err)
{
    _cleanup_free_ char *file = xasprintf("%s/" KMOD_BUILTIN, modules_dir);
    struct buf b = BUF_INIT;
    int r = read_file(file, KMOD_MAX_FILE, &b);
    if (r == -ENOENT) {
        buf_release(&b);
        return 0;
    }
    if (r < 0) {
        buf_release(&b);
        return pv_err_set(err, -r, "cannot read %s: %s", file, strerror(-r));
    }
    size_t cap = 0;
    char *save = NULL;
    for (char *tok = b.len ? strtok_r(b.data, " \t\r\n", &save) : NULL; tok;
         tok = strtok_r(NULL, " \t\r\n", &save)) {
        char *name = kmod_name_of(tok);
        if (!name)
            continue;
        if (t->nbuiltin == cap) {
            cap = cap ? cap * 2 : 256;
            t->builtin = xrealloc(t->builtin, cap * sizeof(*t->builtin));
        }
        t->builtin[t->nbuiltin++] = name;
    }
    buf_release(&b);
    if (t->nbuiltin)
        qsort(t->builtin, t->nbuiltin, sizeof(*t->builtin), kmod_cmp_str);
    return 0;
}

static bool kmod_is_builtin(struct kmod_tree *t, const char *name)
{
    return t->nbuiltin &&
           bsearch(name, t->builtin, t->nbuiltin, sizeof(*t->builtin), kmod_cmp_str_key);
}

struct kmod_frame {
    size_t mod;
    size_t next; /* dependencies visited so far */
};

/* Depth-first from root, appending each module after its dependencies.
 * Iterative: a hostile or broken modules.dep may chain thousands deep. */
static int kmod_visit(struct kmod_tree *t, size_t root, struct kmod_frame *stack, char **out,
                      size_t *nout, const char *file, struct pv_err *err)
{
    if (t->mods[root].state == KMOD_DONE)
        return 0;
    size_t sp = 0;
    stack[sp++] = (struct kmod_frame){root, 0};
    t->mods[root].state = KMOD_VISITING;
    while (sp) {
        struct kmod_frame *f = &stack[sp - 1];
        struct kmod_mod *m = &t->mods[f->mod];
        if (f->next == m->ndeps) {
            m->state = KMOD_DONE;
            out[(*nout)++] = xstrdup(m->path);
            sp--;
            continue;
        }
        /* modules.dep lists the deepest dependencies last, and modprobe
         * loads from the end of the list. */
        size_t d = t->dep_index[m->dep_start + m->ndeps - 1 - f->next++];
        if (t->mods[d].state == KMOD_DONE)
            continue;
        if (t->mods[d].state == KMOD_VISITING) {
            struct buf cyc = BUF_INIT;
            size_t from = 0;
            while (stack[from].mod != d)
                from++;
            for (size_t i = from; i < sp; i++)
                buf_addf(&cyc, "%s -> ", t->mods[stack[i].mod].name);
            buf_adds(&cyc, t->mods[d].name);
            pv_err_set(err, ELOOP, "%s: dependency cycle: %s", file, cyc.data);
            buf_release(&cyc);
            return -ELOOP;
        }
        t->mods[d].state = KMOD_VISITING;
        stack[sp++] = (struct kmod_frame){d, 0};
    }
    return 0;
}

int kmod_order(const char *modules_dir, const char *const names[], size_t n, char ***ret_paths,
               struct pv_err *err)
{
    _cleanup_free_ char *file = xasprintf("%s/" KMOD_DEP, modules_dir);
    struct buf dep = BUF_INIT;
    struct kmod_tree t = {0};
    struct kmod_frame *stack = NULL;
    char **out = NULL;
    size_t nout = 0;

    int r = read_file(file, KMOD_MAX_FILE, &dep);
    if (r < 0) {
        r = pv_err_set(err, -r, "cannot read %s: %s%s", file, strerror(-r),
                       r == -ENOENT ? " (run depmod for this kernel)" : "");
        goto out;
    }
    buf_add(&dep, "", 0); /* data non-NULL and NUL-terminated, even when empty */
    r = kmod_parse_dep(&t, dep.data, dep.len, file, err);
    if (r < 0)
        goto out;
    kmod_index(&t);
    r = kmod_load_builtin(&t, modules_dir, err);
    if (r < 0)
        goto out;

    stack = xcalloc(t.nmods ? t.nmods : 1, sizeof(*stack));
    out = xcalloc(t.nmods + 1, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *name = xstrdup(names[i]);
        for (char *p = name; *p; p++)
            if (*p == '-')
                *p = '_';
        struct kmod_mod *m = *name ? kmod_find(&t, name) : NULL;
        if (!m) {
            if (*name && kmod_is_builtin(&t, name))
                continue;
            r = pv_err_set(err, ENOENT,
                           "module %s not found in %s (neither in modules.dep nor in "
                           "modules.builtin)",
                           names[i], modules_dir);
            goto out;
        }
        r = kmod_visit(&t, (size_t)(m - t.mods), stack, out, &nout, file, err);
        if (r < 0)
            goto out;
    }
    out[nout] = NULL;
    *ret_paths = steal_pointer(&out);
    r = 0;
out:
    if (out) {
        for (size_t i = 0; i < nout; i++)
            free(out[i]);
        free(out);
    }
    free(stack);
    kmod_tree_release(&t);
    buf_release(&dep);
    return r;
}

void kmod_free_paths(char **paths)
{
    if (!paths)
        return;
    for (char **p = paths; *p; p++)
        free(*p);
    free(paths);
}
