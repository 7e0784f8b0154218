/* Symbolized stacks' parsers (symbolize.c), on outputs of Debian 12's
 * binutils (2.40): `objdump -t` of a module and of a program, and
 * `addr2line -a -f -i`, inlined frames and unknown addresses included;
 * and where a kernel's vmlinux is found. The tools themselves run in
 * tests/lua/symbols.test.lua and tests/vm/symbols.test.lua. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "host/symbolize.h"

/* `objdump -t provium_demo.ko` (cut), and two static functions of one
 * name, as a vmlinux has them. */
static const char objdump_ko[] =
    "\nprovium_demo.ko:     file format elf64-x86-64\n\nSYMBOL TABLE:\n"
    "0000000000000000 l    d  .text\t0000000000000000 .text\n"
    "0000000000000000 l     F .init.text\t0000000000000011 demo_dev_init\n"
    "0000000000000000 l     F .text\t00000000000000fa demo_write\n"
    "0000000000000100 l     F .text\t0000000000000055 demo_read\n"
    "0000000000000020 l     O .bss\t0000000000000100 demo_buf\n"
    "0000000000000200 l     F .text\t0000000000000400 init_once\n"
    "0000000000000600 l     F .text\t0000000000000030 init_once\n"
    "ffffffff81000000 g     F .text\t0000000000000010              .hidden hidden_fn\n";

static void finds_functions(void **state)
{
    struct sym_query q[] = {
        {.func = "demo_write", .off = 0xdf, .len = 0x100},
        {.func = "demo_dev_init", .off = 0x5, .len = 0x20, .ret = true},
        {.func = "demo_read", .off = 0x60, .len = 0x60}, /* past its size: another build */
        {.func = "demo_buf", .off = 0x1, .len = 0x100},  /* data, no function */
        {.func = "init_once", .off = 0x10, .len = 0x40}, /* the one whose size fits */
        {.func = "hidden_fn", .off = 0x1, .len = 0x10},
        {.func = "nosuch", .off = 0x1, .len = 0x10},
    };
    assert_int_equal(sym_parse_objdump(objdump_ko, strlen(objdump_ko), q, ARRAY_SIZE(q)), 4);
    assert_string_equal(q[0].section, ".text");
    assert_int_equal(q[0].addr, 0xdf);
    assert_string_equal(q[1].section, ".init.text");
    assert_int_equal(q[1].addr, 0x4); /* a return address: the call before it */
    assert_null(q[2].section);
    assert_null(q[3].section);
    assert_int_equal(q[4].addr, 0x610);
    assert_int_equal(q[5].addr, 0xffffffff81000001ull);
    assert_null(q[6].section);
    sym_query_release(q, ARRAY_SIZE(q));
}

/* `addr2line -a -f -i -j .text -e provium_demo.ko 0xdf 0x4f 0x900`. */
static const char a2l[] = "0x00000000000000df\n"
                          "demo_write\n"
                          "/tmp/m/provium_demo.c:51\n"
                          "0x000000000000004f\n"
                          "check_object_size\n"
                          "/usr/src/linux-headers-6.1.0-57-common/include/linux/thread_info.h:199\n"
                          "check_copy_size\n"
                          "/usr/src/linux-headers-6.1.0-57-common/include/linux/thread_info.h:235\n"
                          "demo_write\n"
                          "/tmp/m/provium_demo.c:49 (discriminator 2)\n"
                          "0x0000000000000900\n"
                          "??\n"
                          "??:0\n";

static void parses_locations(void **state)
{
    char *where[4] = {NULL};
    assert_int_equal(sym_parse_addr2line(a2l, strlen(a2l), "/tmp/m/", where, 4), 2);
    assert_string_equal(where[0], "provium_demo.c:51");
    assert_string_equal(where[1], "include/linux/thread_info.h:199 inlined into provium_demo.c:49");
    assert_null(where[2]);
    assert_null(where[3]);
    for (size_t i = 0; i < ARRAY_SIZE(where); i++)
        free(where[i]);
    /* fewer slots than records; no strip; a line number unknown */
    char *one[1] = {NULL};
    static const char other[] = "0x10\nf\n/src/x.c:?\n0x20\ng\n/src/y.c:7\n";
    assert_int_equal(sym_parse_addr2line(a2l, strlen(a2l), NULL, one, 1), 1);
    assert_string_equal(one[0], "/tmp/m/provium_demo.c:51");
    free(one[0]);
    char *two[2] = {NULL};
    assert_int_equal(sym_parse_addr2line(other, strlen(other), "/src/", two, 2), 1);
    assert_null(two[0]);
    assert_string_equal(two[1], "y.c:7");
    free(two[1]);
}

static void escapes_terminal_bytes(void **state)
{
    static const char evil[] = "0x1\nf\n/tmp/\x1b]52;c;x\x07.c:3\n";
    char *where[1] = {NULL};
    assert_int_equal(sym_parse_addr2line(evil, strlen(evil), NULL, where, 1), 1);
    assert_null(strchr(where[0], '\x1b'));
    assert_non_null(strstr(where[0], "\\x1b"));
    free(where[0]);
}

static void finds_vmlinux(void **state)
{
    char dir[] = "/tmp/test_symbolize.XXXXXX";
    assert_non_null(mkdtemp(dir));
    _cleanup_free_ char *kernel = xasprintf("%s/bzImage", dir);
    _cleanup_free_ char *vmlinux = xasprintf("%s/vmlinux", dir);
    assert_null(sym_vmlinux(NULL, kernel, NULL));
    assert_null(sym_vmlinux(NULL, kernel, "../../etc")); /* a release is no path */
    assert_int_equal(write_file_atomic(vmlinux, "x", 1, 0644), 0);
    char *found = sym_vmlinux(NULL, kernel, "6.1.0-57-cloud-amd64");
    assert_string_equal(found, vmlinux);
    free(found);
    assert_null(sym_vmlinux(NULL, NULL, NULL));
    assert_null(sym_vmlinux("/nonexistent/vmlinux", NULL, NULL));
    found = sym_vmlinux(vmlinux, "/boot/bzImage", NULL); /* the profile's */
    assert_string_equal(found, vmlinux);
    free(found);
    unlink(vmlinux);
    rmdir(dir);
}

static void tools_and_files_that_fail(void **state)
{
    struct sym_query q[] = {{.func = "main", .off = 1, .len = 8}};
    struct pv_err err = {0};
    assert_int_equal(sym_resolve("/nonexistent/vmlinux", q, 1, 5000, &err), -ENOENT);
    assert_non_null(strstr(err.msg, "/nonexistent/vmlinux"));
    /* a file with no symbols: objdump fails, nothing found */
    assert_true(sym_resolve("/dev/null", q, 1, 5000, &err) < 0);
    assert_null(q[0].where);
    sym_query_release(q, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(finds_functions),           cmocka_unit_test(parses_locations),
        cmocka_unit_test(escapes_terminal_bytes),    cmocka_unit_test(finds_vmlinux),
        cmocka_unit_test(tools_and_files_that_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
