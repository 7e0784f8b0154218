/* The user's home and cache directories (user_home_dir, user_cache_dir) and
 * write_file_atomic, on real directories under a temporary one. The cases
 * with a directory owned by someone else need root (chown); they are
 * skipped without it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pwd.h>
#include <stdio.h>
#include <sys/stat.h>

#include "host/kernel.h"
#include "util.h"

/* A uid that is not the test's, for directories "someone else" made. */
#define OTHER_UID 4242

struct env {
    char *dir; /* the temporary directory; HOME is dir/home */
    char *old_home, *old_xdg, *old_cache;
};

static char *saved(const char *name)
{
    const char *v = getenv(name);
    return v ? xstrdup(v) : NULL;
}

static void restore(const char *name, const char *v)
{
    if (v)
        setenv(name, v, 1);
    else
        unsetenv(name);
}

static int setup(void **state)
{
    struct env *e = xcalloc(1, sizeof(*e));
    char tmpl[] = "/tmp/provium-test-util-XXXXXX";
    if (!mkdtemp(tmpl))
        return -1;
    e->dir = xstrdup(tmpl);
    e->old_home = saved("HOME");
    e->old_xdg = saved("XDG_CACHE_HOME");
    e->old_cache = saved("PROVIUM_CACHE");
    _cleanup_free_ char *home = xasprintf("%s/home", e->dir);
    mkdir(home, 0755);
    setenv("HOME", home, 1);
    unsetenv("XDG_CACHE_HOME");
    unsetenv("PROVIUM_CACHE");
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    rm_rf(e->dir);
    restore("HOME", e->old_home);
    restore("XDG_CACHE_HOME", e->old_xdg);
    restore("PROVIUM_CACHE", e->old_cache);
    free(e->dir);
    free(e->old_home);
    free(e->old_xdg);
    free(e->old_cache);
    free(e);
    return 0;
}

/* s contains part; both are printed when it does not. */
static void assert_contains(const char *s, const char *part)
{
    if (!strstr(s, part))
        fail_msg("\"%s\" does not contain \"%s\"", s, part);
}

static void test_home_from_env_else_passwd(void **state)
{
    struct env *e = *state;
    struct pv_err err = {0};
    char *home = NULL;
    assert_int_equal(user_home_dir(&home, &err), 0);
    _cleanup_free_ char *want = xasprintf("%s/home", e->dir);
    assert_string_equal(home, want);
    free(home);

    /* cron and services often run without HOME; a relative one means nothing */
    struct passwd *pw = getpwuid(getuid());
    assert_non_null(pw);
    const char *unset[] = {NULL, "", "relative/home"};
    for (size_t i = 0; i < ARRAY_SIZE(unset); i++) {
        restore("HOME", unset[i]);
        home = NULL;
        assert_int_equal(user_home_dir(&home, &err), 0);
        assert_string_equal(home, pw->pw_dir);
        free(home);
    }

    /* and the caches follow it, never /tmp/provium-cache-<uid> */
    unsetenv("HOME");
    _cleanup_free_ char *cache = NULL;
    assert_int_equal(user_cache_dir(0, &cache, &err), 0);
    _cleanup_free_ char *want_cache = xasprintf("%s/.cache/provium", pw->pw_dir);
    assert_string_equal(cache, want_cache);
}

static void test_cache_dir_made_private(void **state)
{
    struct env *e = *state;
    struct pv_err err = {0};
    _cleanup_free_ char *dir = NULL;
    assert_int_equal(user_cache_dir(USER_DIR_MAKE, &dir, &err), 0);
    _cleanup_free_ char *want = xasprintf("%s/home/.cache/provium", e->dir);
    assert_string_equal(dir, want);
    struct stat st;
    assert_int_equal(lstat(dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0700);

    /* kernel_cache_root is that directory when PROVIUM_CACHE is unset */
    _cleanup_free_ char *root = kernel_cache_root();
    assert_string_equal(root, want);

    /* an absolute XDG_CACHE_HOME wins; a relative one is ignored (XDG spec) */
    _cleanup_free_ char *xdg = xasprintf("%s/xdg", e->dir);
    setenv("XDG_CACHE_HOME", xdg, 1);
    _cleanup_free_ char *in_xdg = NULL;
    assert_int_equal(user_cache_dir(USER_DIR_MAKE, &in_xdg, &err), 0);
    _cleanup_free_ char *want_xdg = xasprintf("%s/provium", xdg);
    assert_string_equal(in_xdg, want_xdg);
    setenv("XDG_CACHE_HOME", "relative", 1);
    _cleanup_free_ char *rel = NULL;
    assert_int_equal(user_cache_dir(0, &rel, &err), 0);
    assert_string_equal(rel, want);
}

/* An earlier provium made the directory 0755: it is the user's and nobody
 * else could write into it, so it is kept, and closed to the others. */
static void test_cache_dir_readable_is_tightened(void **state)
{
    struct env *e = *state;
    struct pv_err err = {0};
    _cleanup_free_ char *mine = xasprintf("%s/home/.cache/provium", e->dir);
    assert_int_equal(mkdir_p(mine, 0755), 0);
    assert_int_equal(chmod(mine, 0755), 0);
    _cleanup_free_ char *dir = NULL;
    assert_int_equal(user_cache_dir(USER_DIR_MAKE, &dir, &err), 0);
    struct stat st;
    assert_int_equal(lstat(mine, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0700);
}

static void test_cache_dir_writable_by_others_refused(void **state)
{
    struct env *e = *state;
    _cleanup_free_ char *mine = xasprintf("%s/home/.cache/provium", e->dir);
    assert_int_equal(mkdir_p(mine, 0700), 0);
    const int modes[] = {0770, 0707, 0777};
    for (size_t i = 0; i < ARRAY_SIZE(modes); i++) {
        assert_int_equal(chmod(mine, (mode_t)modes[i]), 0);
        struct pv_err err = {0};
        char *dir = NULL;
        assert_int_equal(user_cache_dir(USER_DIR_MAKE, &dir, &err), -EPERM);
        assert_null(dir);
        assert_contains(err.msg, mine);
        assert_contains(err.msg, "writable by group or others");
        struct stat st;
        assert_int_equal(lstat(mine, &st), 0);
        assert_int_equal(st.st_mode & 07777, modes[i]); /* left as it was */
    }
}

static void test_cache_dir_symlink_refused(void **state)
{
    struct env *e = *state;
    _cleanup_free_ char *parent = xasprintf("%s/home/.cache", e->dir);
    _cleanup_free_ char *elsewhere = xasprintf("%s/elsewhere", e->dir);
    _cleanup_free_ char *mine = xasprintf("%s/provium", parent);
    assert_int_equal(mkdir_p(parent, 0700), 0);
    assert_int_equal(mkdir(elsewhere, 0700), 0);
    assert_int_equal(symlink(elsewhere, mine), 0);
    struct pv_err err = {0};
    char *dir = NULL;
    assert_int_equal(user_cache_dir(USER_DIR_MAKE, &dir, &err), -EPERM);
    assert_null(dir);
    assert_contains(err.msg, mine);
    assert_contains(err.msg, "not a directory");
}

static void test_cache_dir_of_someone_else_refused(void **state)
{
    if (geteuid() != 0)
        skip(); /* only root can make a directory someone else owns */
    struct env *e = *state;
    _cleanup_free_ char *parent = xasprintf("%s/home/.cache", e->dir);
    _cleanup_free_ char *mine = xasprintf("%s/provium", parent);
    assert_int_equal(mkdir_p(mine, 0700), 0);
    assert_int_equal(chown(mine, OTHER_UID, OTHER_UID), 0);
    struct pv_err err = {0};
    char *dir = NULL;
    assert_int_equal(user_cache_dir(USER_DIR_MAKE, &dir, &err), -EPERM);
    assert_null(dir);
    assert_contains(err.msg, mine);
    assert_contains(err.msg, "belongs to uid " PV_STR(OTHER_UID));

    /* the parent too: whoever owns it can swap provium/ after the check
     * (HOME=/tmp, and someone else made /tmp/.cache) */
    assert_int_equal(chown(mine, getuid(), getgid()), 0);
    assert_int_equal(chown(parent, OTHER_UID, OTHER_UID), 0);
    memset(&err, 0, sizeof(err));
    assert_int_equal(user_cache_dir(USER_DIR_MAKE, &dir, &err), -EPERM);
    assert_contains(err.msg, parent);
    assert_contains(err.msg, "belongs to uid " PV_STR(OTHER_UID));
}

/* Someone who can write the directory plants <path>.tmp.<pid> -> a file of
 * the user's: the write must not go through the link. */
static void test_write_atomic_refuses_planted_symlink(void **state)
{
    struct env *e = *state;
    _cleanup_free_ char *victim = xasprintf("%s/victim", e->dir);
    _cleanup_free_ char *path = xasprintf("%s/state.json", e->dir);
    _cleanup_free_ char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
    assert_int_equal(write_file_atomic(victim, "precious", 8, 0600), 0);
    assert_int_equal(symlink(victim, tmp), 0);

    assert_int_equal(write_file_atomic(path, "new", 3, 0644), -EEXIST);
    struct buf b = BUF_INIT;
    assert_int_equal(read_file(victim, 1024, &b), 0);
    assert_string_equal(b.data, "precious");
    buf_release(&b);
    struct stat st;
    assert_int_equal(lstat(tmp, &st), 0);
    assert_true(S_ISLNK(st.st_mode)); /* not removed either: it is not ours */
    assert_int_equal(lstat(path, &st), -1);

    /* a plain file of the user's there is a leftover of a killed writer
     * whose pid this process now has: it goes */
    assert_int_equal(unlink(tmp), 0);
    assert_int_equal(write_file_atomic(tmp, "stale", 5, 0600), 0);
    assert_int_equal(write_file_atomic(path, "new", 3, 0644), 0);
    assert_int_equal(read_file(path, 1024, &b), 0);
    assert_string_equal(b.data, "new");
    buf_release(&b);
    assert_int_equal(lstat(tmp, &st), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_home_from_env_else_passwd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_dir_made_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_dir_readable_is_tightened, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_dir_writable_by_others_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_dir_symlink_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_dir_of_someone_else_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_atomic_refuses_planted_symlink, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
