/* The hang watchdog's pieces that need no VM: the instruction pointers in
 * QEMU's register dump, naming an address from a symbol map, and the
 * timeout in force (the default scaled like the other default waits). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "host/hang.h"
#include "host/vm.h"

/* What QEMU 7.2's `info registers -a` prints for two vCPUs (cut). */
static const char regs[] =
    "\r\nCPU#0\r\n"
    "RAX=0000000000000000 RBX=ffffffffb1e0a940 RCX=0000000000000001 RDX=0000000000000000\r\n"
    "RIP=ffffffff81a2c3f4 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n"
    "ES =0000 0000000000000000 00000000 00000000\r\n"
    "\r\nCPU#1\r\n"
    "RIP=ffffffffc0a01012 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n";

static void rips_of_each_vcpu(void **state)
{
    uint64_t rips[4];
    assert_int_equal(hang_parse_rips(regs, rips, 4), 2);
    assert_int_equal(rips[0], 0xffffffff81a2c3f4ull);
    assert_int_equal(rips[1], 0xffffffffc0a01012ull);
    assert_int_equal(hang_parse_rips(regs, rips, 1), 1);
    assert_int_equal(hang_parse_rips("no registers here", rips, 4), 0);
    assert_int_equal(hang_parse_rips("RIP=", rips, 4), 0);
}

/* A System.map (sorted, the kernel alone) and a /proc/kallsyms (unsorted,
 * with a module's symbols) of the same kernel. */
static const char system_map[] = "ffffffff81000000 T _text\n"
                                 "ffffffff81000000 T startup_64\n"
                                 "ffffffff81a2c3a0 T delay_tsc\n"
                                 "ffffffff81a2c3c0 d some_data\n"
                                 "ffffffff81a2c400 T __const_udelay\n"
                                 "ffffffff81a2c440 t delay_halt\n"
                                 "ffffffff81c00000 T _etext\n";
static const char kallsyms[] = "ffffffffc0a01000 t provium_hang_init\t[provium_hang]\n"
                               "ffffffff81000000 T _text\n"
                               "ffffffff81a2c3a0 T delay_tsc\n"
                               "ffffffff81a2c400 T __const_udelay\n"
                               "ffffffff81c00000 T _etext\n"
                               "ffffffffc0a01080 t cleanup_module\t[provium_hang]\n";

static void names_an_address(void **state)
{
    char out[128];
    /* the data symbol between does not count */
    assert_int_equal(
        hang_symbolize(system_map, strlen(system_map), 0xffffffff81a2c3f4ull, out, sizeof(out)), 0);
    assert_string_equal(out, "delay_tsc+0x54/0x60");
    assert_int_equal(
        hang_symbolize(kallsyms, strlen(kallsyms), 0xffffffffc0a01012ull, out, sizeof(out)), 0);
    assert_string_equal(out, "provium_hang_init+0x12/0x80 [provium_hang]");
    /* the last function ends at _etext */
    assert_int_equal(
        hang_symbolize(system_map, strlen(system_map), 0xffffffff81a2c444ull, out, sizeof(out)), 0);
    assert_string_equal(out, "delay_halt+0x4/0x1d3bc0");
}

static void does_not_lie(void **state)
{
    char out[128];
    /* a module's address in a map of the kernel alone */
    assert_int_equal(
        hang_symbolize(system_map, strlen(system_map), 0xffffffffc0a01012ull, out, sizeof(out)),
        -ENOENT);
    /* before the first symbol (KASLR moved the kernel below it) */
    assert_int_equal(
        hang_symbolize(system_map, strlen(system_map), 0xffffffff80001000ull, out, sizeof(out)),
        -ENOENT);
    assert_int_equal(hang_symbolize("", 0, 0xffffffff81a2c3f4ull, out, sizeof(out)), -ENOENT);
    assert_int_equal(hang_symbolize("garbage\nffff T\n", 15, 0xffff, out, sizeof(out)), -ENOENT);
}

static void user_space(void **state)
{
    assert_true(hang_user_ip(0x402d80)); /* seen: a vCPU stopped in a program */
    assert_true(hang_user_ip(0x00007fffffffe000ull));
    assert_false(hang_user_ip(0xffffffff819c3643ull));
    assert_false(hang_user_ip(0xffff888004a3c200ull));
}

static void timeout_in_force(void **state)
{
    vm_globals.timeout_scale = 3;
    vm_globals.hang_timeout = 0;
    assert_true(hang_timeout_s() == 90); /* the default, scaled for TCG */
    vm_globals.timeout_scale = 1;
    assert_true(hang_timeout_s() == HANG_DEFAULT_S);
    vm_globals.timeout_scale = 3;
    vm_globals.hang_timeout = 10; /* given: not scaled */
    assert_true(hang_timeout_s() == 10);
    vm_globals.hang_timeout = -1; /* off */
    assert_true(hang_timeout_s() == 0);
    vm_globals.hang_timeout = 0;
    vm_globals.timeout_scale = 1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rips_of_each_vcpu), cmocka_unit_test(names_an_address),
        cmocka_unit_test(does_not_lie),      cmocka_unit_test(user_space),
        cmocka_unit_test(timeout_in_force),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
