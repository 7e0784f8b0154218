/* QEMU argv and vsock CID allocation. The vsock transport cannot run on
 * machines without /dev/vhost-vsock (ours), so its argv is checked here;
 * virtio-serial runs for real in tests/vm. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "host/qemu.h"

static int find(char **argv, const char *s)
{
    for (int i = 0; argv[i]; i++)
        if (!strcmp(argv[i], s))
            return i;
    return -1;
}

static int find_sub(char **argv, const char *s)
{
    for (int i = 0; argv[i]; i++)
        if (strstr(argv[i], s))
            return i;
    return -1;
}

static struct qemu_config base(void)
{
    return (struct qemu_config){.machine = "pc",
                                .accel = ACCEL_TCG,
                                .transport = TRANSPORT_VIRTIO_SERIAL,
                                .memory = 512ull << 20,
                                .cpus = 2,
                                .kernel = "/k/vmlinuz",
                                .initrd = "/k/initrd",
                                .cmdline = "console=ttyS0",
                                .dir = "/run/p,x",
                                .cid = 42};
}

static void test_argv_virtio_serial(void **state)
{
    (void)state;
    struct qemu_config qc = base();
    char **argv = qemu_argv(&qc);
    assert_string_equal(argv[0], "qemu-system-x86_64");
    int i = find(argv, "-machine");
    assert_true(i > 0);
    assert_string_equal(argv[i + 1], "pc,accel=tcg,suppress-vmdesc=on");
    /* a snapshot's device state loads without the sections it lacks */
    assert_string_equal(argv[find(argv, "-global") + 1], "migration.send-configuration=off");
    assert_string_equal(argv[find(argv, "-m") + 1], "512m");
    assert_string_equal(argv[find(argv, "-smp") + 1], "2");
    assert_string_equal(argv[find(argv, "-kernel") + 1], "/k/vmlinuz");
    assert_string_equal(argv[find(argv, "-append") + 1], "console=ttyS0");
    assert_true(find(argv, "-no-reboot") > 0);
    assert_true(find(argv, "-nodefaults") > 0);
    /* the agent port, and no vsock device */
    assert_true(find_sub(argv, "name=org.provium.agent") > 0);
    assert_int_equal(find_sub(argv, "vhost-vsock"), -1);
    /* commas in paths are doubled for QEMU's option parser */
    i = find_sub(argv, "id=qmp,");
    assert_true(i > 0);
    assert_string_equal(argv[i], "socket,id=qmp,path=/run/p,,x/qmp.sock");
    /* both consoles are logged from power-on */
    assert_true(find_sub(argv, "logfile=/run/p,,x/serial.log") > 0);
    assert_true(find_sub(argv, "logfile=/run/p,,x/hvc.log") > 0);
    assert_true(find_sub(argv, "virtio-rng-pci") > 0);
    qemu_argv_free(argv);
}

static void test_argv_vsock_kvm(void **state)
{
    (void)state;
    struct qemu_config qc = base();
    qc.transport = TRANSPORT_VSOCK;
    qc.accel = ACCEL_KVM;
    char **argv = qemu_argv(&qc);
    assert_string_equal(argv[find(argv, "-machine") + 1], "pc,accel=kvm,suppress-vmdesc=on");
    assert_string_equal(argv[find(argv, "-cpu") + 1], "host");
    int i = find_sub(argv, "vhost-vsock-pci");
    assert_true(i > 0);
    assert_string_equal(argv[i], "vhost-vsock-pci,guest-cid=42");
    assert_int_equal(find_sub(argv, "org.provium.agent"), -1);
    qemu_argv_free(argv);
}

/* A cold boot's RAM is QEMU's anonymous memory; a restore maps its file
 * private, named as the machine's own RAM. */
static void test_argv_ram_file(void **state)
{
    (void)state;
    struct qemu_config qc = base();
    char **argv = qemu_argv(&qc);
    assert_int_equal(find_sub(argv, "memory-backend"), -1);
    qemu_argv_free(argv);
    qc.ram_file = "/c/a,b/ram";
    qc.incoming = true;
    argv = qemu_argv(&qc);
    assert_string_equal(argv[find(argv, "-machine") + 1],
                        "pc,accel=tcg,suppress-vmdesc=on,memory-backend=pc.ram");
    assert_string_equal(argv[find_sub(argv, "memory-backend-file")],
                        "memory-backend-file,id=pc.ram,size=512m,mem-path=/c/a,,b/ram,share=off");
    assert_string_equal(argv[find(argv, "-m") + 1], "512m");
    /* a restore: no kernel to load, the state arrives as a migration */
    assert_int_equal(find(argv, "-kernel"), -1);
    assert_string_equal(argv[find(argv, "-incoming") + 1], "defer");
    qemu_argv_free(argv);
}

static void test_argv_disks(void **state)
{
    (void)state;
    struct qemu_config qc = base();
    const char *disks[] = {"/img/root,1.ext4", NULL};
    qc.disks = disks;
    qc.initrd = NULL;
    char **argv = qemu_argv(&qc);
    assert_int_equal(find(argv, "-initrd"), -1);
    int i = find_sub(argv, "if=virtio");
    assert_true(i > 0);
    assert_string_equal(argv[i], "file=/img/root,,1.ext4,if=virtio,format=raw,snapshot=on");
    qemu_argv_free(argv);
}

/* Attached disks: NBD nodes on inherited fds, after the profile's disks. */
static void test_argv_attached_disks(void **state)
{
    (void)state;
    struct qemu_config qc = base();
    const char *disks[] = {"/img/root.ext4", NULL};
    qc.disks = disks;
    const struct qemu_disk vd[] = {{8, 7, "data", false}, {9, 11, "a,b", true}};
    qc.vdisks = vd;
    qc.nvdisks = 2;
    char **argv = qemu_argv(&qc);
    int profile = find_sub(argv, "if=virtio");
    int first = find(argv, "driver=nbd,node-name=vd8,server.type=fd,server.str=7");
    int second = find(argv, "driver=nbd,node-name=vd9,server.type=fd,server.str=11,read-only=on");
    assert_true(profile > 0);
    assert_true(first > profile);
    assert_true(second > first);
    assert_string_equal(argv[first - 1], "-blockdev");
    assert_string_equal(argv[first + 2], "virtio-blk-pci,drive=vd8,id=vdisk8,bus=hp,addr=0x8,serial=data");
    assert_string_equal(argv[second + 2],
                        "virtio-blk-pci,drive=vd9,id=vdisk9,bus=hp,addr=0x9,serial=a,,b");
    qemu_argv_free(argv);
}

/* --gdb: the stub on the listening socket QEMU inherits; none without. */
static void test_argv_gdb(void **state)
{
    (void)state;
    struct qemu_config qc = base();
    char **argv = qemu_argv(&qc);
    assert_int_equal(find(argv, "-gdb"), -1);
    qemu_argv_free(argv);
    qc.gdb = true;
    qc.gdb_fd = 9;
    argv = qemu_argv(&qc);
    int i = find(argv, "-gdb");
    assert_true(i > 0);
    assert_string_equal(argv[i + 1], "chardev:gdb0");
    assert_string_equal(argv[i - 1], "socket,id=gdb0,fd=9,server=on,wait=off");
    qemu_argv_free(argv);
}

static void test_cid_allocation(void **state)
{
    (void)state;
    uint32_t seen[64];
    for (int i = 0; i < 64; i++) {
        seen[i] = qemu_next_cid();
        assert_true(seen[i] >= 3);          /* 0-2 are reserved */
        assert_true(seen[i] < 0xfffffff0u); /* well below VMADDR_CID_ANY */
        for (int k = 0; k < i; k++)
            assert_int_not_equal(seen[i], seen[k]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argv_virtio_serial),
        cmocka_unit_test(test_argv_vsock_kvm),
        cmocka_unit_test(test_argv_ram_file),
        cmocka_unit_test(test_argv_disks),
        cmocka_unit_test(test_argv_attached_disks),
        cmocka_unit_test(test_cid_allocation),
        cmocka_unit_test(test_argv_gdb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
