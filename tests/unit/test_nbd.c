/* The disks' NBD server (src/host/disk/), driven through the end QEMU would
 * get: a client written here from the protocol, real image files, the real
 * serving thread. And the decoder alone (nbd.h), fed bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "disk/disk.h"
#include "disk/nbd.h"

#include <endian.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define REPLY_MAGIC 0x67446698u

static char image[64];

static int setup(void **st)
{
    snprintf(image, sizeof(image), "/tmp/test_nbd.%d.img", (int)getpid());
    unlink(image);
    return 0;
}

static int teardown(void **st)
{
    unlink(image);
    return 0;
}

static void put16(unsigned char *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, 2);
}
static void put32(unsigned char *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, 4);
}
static void put64(unsigned char *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}
static uint32_t get32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return be32toh(v);
}
static uint64_t get64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

/* Exactly n bytes within 5 s, or fail. */
static void readn(int fd, void *p, size_t n)
{
    size_t done = 0;
    while (done < n) {
        struct pollfd pf = {fd, POLLIN, 0};
        assert_int_equal(poll(&pf, 1, 5000), 1);
        ssize_t k = read(fd, (char *)p + done, n - done);
        assert_true(k > 0);
        done += (size_t)k;
    }
}

static void writen(int fd, const void *p, size_t n)
{
    assert_int_equal(write(fd, p, n), (ssize_t)n);
}

/* The greeting, then fixed newstyle with no zeroes, then NBD_OPT_GO asking
 * for the block sizes; returns the export's size and flags. */
static void handshake(int fd, uint64_t *ret_size, uint16_t *ret_flags)
{
    unsigned char g[18];
    readn(fd, g, sizeof(g));
    assert_memory_equal(g, "NBDMAGIC", 8);
    assert_memory_equal(g + 8, "IHAVEOPT", 8);
    assert_int_equal(g[17] & 3, 3);
    unsigned char cf[4];
    put32(cf, 3);
    writen(fd, cf, 4);
    unsigned char opt[16 + 4 + 3 + 2 + 2];
    memcpy(opt, "IHAVEOPT", 8);
    put32(opt + 8, 7); /* GO */
    put32(opt + 12, sizeof(opt) - 16);
    put32(opt + 16, 3);
    memcpy(opt + 20, "abc", 3);
    put16(opt + 23, 1);
    put16(opt + 25, 3); /* NBD_INFO_BLOCK_SIZE */
    writen(fd, opt, sizeof(opt));
    bool info = false, block = false;
    for (;;) {
        unsigned char h[20];
        readn(fd, h, sizeof(h));
        assert_int_equal(get64(h), 0x3e889045565a9ull);
        assert_int_equal(get32(h + 8), 7);
        uint32_t type = get32(h + 12), len = get32(h + 16);
        unsigned char d[64];
        assert_true(len <= sizeof(d));
        readn(fd, d, len);
        if (type == 1)
            break;
        assert_int_equal(type, 3);
        if (d[1] == 0) {
            assert_int_equal(len, 12);
            *ret_size = get64(d + 2);
            *ret_flags = (uint16_t)(d[10] << 8 | d[11]);
            info = true;
        } else {
            assert_int_equal(d[1], 3);
            assert_int_equal(get32(d + 10), NBD_MAX_REQUEST);
            block = true;
        }
    }
    assert_true(info && block);
}

static void request(int fd, uint16_t type, uint16_t flags, uint64_t handle, uint64_t off,
                    uint32_t len, const void *data)
{
    unsigned char r[28];
    put32(r, 0x25609513u);
    put16(r + 4, flags);
    put16(r + 6, type);
    put64(r + 8, handle);
    put64(r + 16, off);
    put32(r + 24, len);
    writen(fd, r, sizeof(r));
    if (data)
        writen(fd, data, len);
}

/* A simple reply's error (its handle checked). */
static uint32_t reply(int fd, uint64_t handle)
{
    unsigned char h[16];
    readn(fd, h, sizeof(h));
    assert_int_equal(get32(h), REPLY_MAGIC);
    assert_int_equal(get64(h + 8), handle);
    return get32(h + 4);
}

/* A disk of 1 MiB at image, connected: the client's fd. */
static int connect_disk(int *ret_disk, bool readonly)
{
    struct pv_err err = {0};
    int d = disk_open(image, 1 << 20, readonly, &err);
    assert_true(d > 0);
    int fd = -1;
    assert_true(disk_connect(d, &fd, &err) > 0);
    *ret_disk = d;
    return fd;
}

static void test_handshake_read_write_flush(void **st)
{
    int d;
    int fd = connect_disk(&d, false);
    uint64_t size = 0;
    uint16_t flags = 0;
    handshake(fd, &size, &flags);
    assert_int_equal(size, 1 << 20);
    assert_int_equal(flags & 3, 1); /* has flags, not read-only */
    assert_true(flags & (1 << 2));  /* flush */

    unsigned char w[4096], r[4096];
    for (size_t i = 0; i < sizeof(w); i++)
        w[i] = (unsigned char)(i * 7);
    request(fd, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 1, 8192, sizeof(w), w);
    assert_int_equal(reply(fd, 1), 0);
    request(fd, NBD_CMD_READ, 0, 2, 8192, sizeof(r), NULL);
    assert_int_equal(reply(fd, 2), 0);
    readn(fd, r, sizeof(r));
    assert_memory_equal(w, r, sizeof(r));
    request(fd, NBD_CMD_FLUSH, 0, 3, 0, 0, NULL);
    assert_int_equal(reply(fd, 3), 0);
    request(fd, NBD_CMD_WRITE_ZEROES, 0, 4, 8192, 512, NULL);
    assert_int_equal(reply(fd, 4), 0);
    request(fd, NBD_CMD_TRIM, 0, 5, 0, 4096, NULL);
    assert_int_equal(reply(fd, 5), 0);

    /* the host sees the guest's bytes, and the zeroes */
    unsigned char h[1024];
    struct pv_err err = {0};
    assert_int_equal(disk_read(d, 8192, h, sizeof(h), &err), 0);
    assert_true(h[0] == 0 && h[511] == 0);
    assert_memory_equal(h + 512, w + 512, 512);

    /* past the end, and a read over the bound */
    request(fd, NBD_CMD_READ, 0, 6, (1 << 20) - 512, 1024, NULL);
    assert_int_equal(reply(fd, 6), NBD_EINVAL);
    request(fd, NBD_CMD_READ, 0, 7, 0, NBD_MAX_REQUEST + 1, NULL);
    assert_int_equal(reply(fd, 7), NBD_EINVAL);
    request(fd, 99, 0, 8, 0, 512, NULL);
    assert_int_equal(reply(fd, 8), NBD_EINVAL);
    request(fd, NBD_CMD_DISC, 0, 9, 0, 0, NULL);
    char c;
    struct pollfd pf = {fd, POLLIN, 0};
    assert_int_equal(poll(&pf, 1, 5000), 1);
    assert_int_equal(read(fd, &c, 1), 0); /* the server closed its end */
    close(fd);
    disk_close(d);
}

/* A WRITE over the bound: its payload is read and dropped, the connection
 * goes on. */
static void test_oversized_write(void **st)
{
    int d;
    int fd = connect_disk(&d, false);
    uint64_t size;
    uint16_t flags;
    handshake(fd, &size, &flags);
    size_t n = NBD_MAX_REQUEST + 4096;
    unsigned char *big = calloc(1, n);
    pid_t pid = fork();
    if (pid == 0) { /* the payload is larger than the socket's buffers */
        request(fd, NBD_CMD_WRITE, 0, 1, 0, (uint32_t)n, big);
        _exit(0);
    }
    assert_int_equal(reply(fd, 1), NBD_EINVAL);
    int status;
    waitpid(pid, &status, 0);
    assert_int_equal(status, 0);
    free(big);
    request(fd, NBD_CMD_READ, 0, 2, 0, 512, NULL);
    assert_int_equal(reply(fd, 2), 0);
    unsigned char r[512];
    readn(fd, r, sizeof(r));
    close(fd);
    disk_close(d);
}

static void test_faults(void **st)
{
    int d;
    int fd = connect_disk(&d, false);
    uint64_t size;
    uint16_t flags;
    handshake(fd, &size, &flags);
    unsigned char buf[8192];
    memset(buf, 0x5a, sizeof(buf));

    /* eio_read on sectors 16..23 only */
    struct disk_fault f = {.first = 16, .count = 8};
    assert_int_equal(disk_fault_set(d, DISK_EIO_READ, &f), 0);
    request(fd, NBD_CMD_READ, 0, 1, 16 * 512, 512, NULL);
    assert_int_equal(reply(fd, 1), NBD_EIO);
    request(fd, NBD_CMD_READ, 0, 2, 0, 512, NULL);
    assert_int_equal(reply(fd, 2), 0);
    readn(fd, buf, 512);
    request(fd, NBD_CMD_READ, 0, 3, 15 * 512, 1024, NULL); /* overlaps by one sector */
    assert_int_equal(reply(fd, 3), NBD_EIO);
    unsigned modes = 0;
    assert_int_equal(disk_faults(d, &modes), 0);
    assert_int_equal(modes, 1u << DISK_EIO_READ);
    struct pv_err err = {0};
    assert_int_equal(disk_read(d, 16 * 512, buf, 512, &err), -EIO);
    assert_string_equal(err.msg, "EIO (fault_inject)");

    /* eio_write, eio_flush */
    assert_int_equal(disk_fault_set(d, DISK_EIO_WRITE, &(struct disk_fault){0}), 0);
    memset(buf, 0x5a, sizeof(buf));
    request(fd, NBD_CMD_WRITE, 0, 4, 0, 512, buf);
    assert_int_equal(reply(fd, 4), NBD_EIO);
    assert_int_equal(disk_fault_set(d, DISK_EIO_FLUSH, &(struct disk_fault){0}), 0);
    request(fd, NBD_CMD_FLUSH, 0, 5, 0, 0, NULL);
    assert_int_equal(reply(fd, 5), NBD_EIO);
    assert_int_equal(disk_faults_clear(d), 0);
    request(fd, NBD_CMD_FLUSH, 0, 6, 0, 0, NULL);
    assert_int_equal(reply(fd, 6), 0);

    /* torn_write: 8 sectors, the first 4 land */
    assert_int_equal(disk_fault_set(d, DISK_TORN_WRITE, &(struct disk_fault){0}), 0);
    request(fd, NBD_CMD_WRITE, 0, 7, 65536, sizeof(buf), buf);
    assert_int_equal(reply(fd, 7), NBD_EIO);
    disk_faults_clear(d);
    unsigned char back[8192];
    assert_int_equal(disk_read(d, 65536, back, sizeof(back), &err), 0);
    assert_memory_equal(back, buf, 4096);
    assert_int_equal(back[4096], 0);
    assert_int_equal(back[8191], 0);

    /* slow: a reply 200 ms late; a request outside the range is not */
    assert_int_equal(disk_fault_set(d, DISK_SLOW, &(struct disk_fault){0, 8, 200}), 0);
    int64_t t0 = now_ns();
    request(fd, NBD_CMD_READ, 0, 8, 0, 512, NULL);
    request(fd, NBD_CMD_READ, 0, 9, 4096, 512, NULL);
    assert_int_equal(reply(fd, 9), 0); /* the fast one overtakes */
    readn(fd, buf, 512);
    assert_true(now_ns() - t0 < 150 * 1000000LL);
    assert_int_equal(reply(fd, 8), 0);
    readn(fd, buf, 512);
    int64_t took = now_ns() - t0;
    assert_true(took >= 200 * 1000000LL);
    t0 = now_ns();
    assert_int_equal(disk_read(d, 0, buf, 512, &err), 0); /* the host's read sleeps too */
    assert_true(now_ns() - t0 >= 200 * 1000000LL);
    disk_faults_clear(d);
    assert_int_equal(disk_fault_set(d, DISK_SLOW, &(struct disk_fault){.ms = 600001}), -EINVAL);
    assert_int_equal(disk_fault_set(d, DISK_NMODES, &(struct disk_fault){0}), -EINVAL);
    close(fd);
    disk_close(d);
}

static void test_readonly_and_garbage(void **st)
{
    int d;
    int fd = connect_disk(&d, true);
    uint64_t size;
    uint16_t flags;
    handshake(fd, &size, &flags);
    assert_true(flags & 2);
    unsigned char buf[512] = {0};
    request(fd, NBD_CMD_WRITE, 0, 1, 0, 512, buf);
    assert_int_equal(reply(fd, 1), NBD_EPERM);
    struct pv_err err = {0};
    assert_int_equal(disk_write(d, 0, buf, 512, &err), -EROFS);
    /* a request without its magic ends the connection */
    writen(fd, "garbage garbage garbage garbage!", 32);
    char c;
    struct pollfd pf = {fd, POLLIN, 0};
    assert_int_equal(poll(&pf, 1, 5000), 1);
    assert_int_equal(read(fd, &c, 1), 0);
    close(fd);
    /* the disk outlives its connection; a closed one is stale */
    uint64_t sz;
    assert_int_equal(disk_size(d, &sz), 0);
    assert_int_equal(sz, 1 << 20);
    disk_close(d);
    assert_int_equal(disk_size(d, &sz), -ENOENT);
    assert_int_equal(disk_connect(d, &fd, &err), -ENOENT);
}

/* A disk closed under its QEMU: the connection stays, every request fails
 * with EIO (QEMU would take a closed connection as a cue to reconnect). */
static void test_closed_disk_answers_eio(void **st)
{
    int d;
    int fd = connect_disk(&d, false);
    uint64_t size;
    uint16_t flags;
    handshake(fd, &size, &flags);
    disk_close(d);
    request(fd, NBD_CMD_READ, 0, 1, 0, 512, NULL);
    assert_int_equal(reply(fd, 1), NBD_EIO);
    request(fd, NBD_CMD_FLUSH, 0, 2, 0, 0, NULL);
    assert_int_equal(reply(fd, 2), NBD_EIO);
    close(fd);
}

/* A new image is sparse; an existing one keeps its size. */
static void test_sparse_and_scratch(void **st)
{
    struct pv_err err = {0};
    int d = disk_open(image, 4ull << 30, false, &err);
    assert_true(d > 0);
    struct stat sb;
    assert_int_equal(stat(image, &sb), 0);
    assert_int_equal(sb.st_size, 4ll << 30);
    assert_true(sb.st_blocks < 64);
    assert_int_equal(disk_write(d, (4ull << 30) - 512, "x", 1, &err), 0);
    assert_int_equal(disk_write(d, (4ull << 30) - 511, "xxxxxxxxxx", 512, &err), -EINVAL);
    disk_close(d);
    d = disk_open(image, 1 << 20, false, &err);
    uint64_t sz;
    assert_int_equal(disk_size(d, &sz), 0);
    assert_int_equal(sz, 4ull << 30);
    disk_close(d);
    assert_true(disk_open(image, 1000, false, &err) == -EINVAL);
    d = disk_open_scratch("/tmp", 1 << 20, &err);
    assert_true(d > 0);
    assert_int_equal(disk_write(d, 0, "hello", 5, &err), 0);
    char back[5];
    assert_int_equal(disk_read(d, 0, back, 5, &err), 0);
    assert_memory_equal(back, "hello", 5);
    disk_close(d);
}

/* The decoder alone: options it does not know are refused and the
 * negotiation goes on; EXPORT_NAME answers with the size and 124 zeroes;
 * NBD_OPT_ABORT ends it. */
static void test_decoder_options(void **st)
{
    struct nbd_conn c;
    nbd_init(&c, 1 << 20, false);
    assert_int_equal(c.out.len, 18);
    c.out.len = 0;
    struct nbd_req r;
    unsigned char b[64];
    put32(b, 1); /* fixed newstyle, zeroes wanted */
    buf_add(&c.in, b, 4);
    memcpy(b, "IHAVEOPT", 8);
    put32(b + 8, 8); /* structured replies: unsupported */
    put32(b + 12, 0);
    buf_add(&c.in, b, 16);
    assert_int_equal(nbd_next(&c, &r), 0);
    assert_int_equal(c.out.len, 20);
    assert_int_equal(get32((unsigned char *)c.out.data + 12), (1u << 31) | 1);
    c.out.len = 0;
    put32(b + 8, 1); /* EXPORT_NAME "x" */
    put32(b + 12, 1);
    b[16] = 'x';
    buf_add(&c.in, b, 17);
    assert_int_equal(nbd_next(&c, &r), 0);
    assert_int_equal(c.out.len, 8 + 2 + 124);
    assert_int_equal(get64((unsigned char *)c.out.data), 1 << 20);
    assert_int_equal(c.phase, NBD_TRANSMISSION);
    nbd_release(&c);

    nbd_init(&c, 4096, false);
    put32(b, 1);
    buf_add(&c.in, b, 4);
    memcpy(b, "IHAVEOPT", 8);
    put32(b + 8, 2);
    put32(b + 12, 0);
    buf_add(&c.in, b, 16);
    assert_int_equal(nbd_next(&c, &r), -ECONNRESET);
    nbd_release(&c);

    /* a client without fixed newstyle, an option too long: the end */
    nbd_init(&c, 4096, false);
    put32(b, 0);
    buf_add(&c.in, b, 4);
    assert_int_equal(nbd_next(&c, &r), -EPROTO);
    assert_non_null(c.error);
    nbd_release(&c);
    nbd_init(&c, 4096, false);
    put32(b, 1);
    memcpy(b + 4, "IHAVEOPT", 8);
    put32(b + 12, 7);
    put32(b + 16, NBD_MAX_OPTION + 1);
    buf_add(&c.in, b, 20);
    assert_int_equal(nbd_next(&c, &r), -EPROTO);
    nbd_release(&c);
}

/* Requests split at every byte come out whole, once. */
static void test_decoder_split(void **st)
{
    struct nbd_conn c;
    nbd_init(&c, 1 << 20, false);
    unsigned char b[28 + 1024 + 28];
    put32(b, 3);
    buf_add(&c.in, b, 4);
    memcpy(b, "IHAVEOPT", 8);
    put32(b + 8, 1);
    put32(b + 12, 0);
    buf_add(&c.in, b, 16);
    struct nbd_req r;
    assert_int_equal(nbd_next(&c, &r), 0);
    assert_int_equal(c.phase, NBD_TRANSMISSION);
    put32(b, 0x25609513u);
    put16(b + 4, 0);
    put16(b + 6, NBD_CMD_WRITE);
    put64(b + 8, 42);
    put64(b + 16, 512);
    put32(b + 24, 1024);
    memset(b + 28, 0x33, 1024);
    memcpy(b + 28 + 1024, b, 28);
    put16(b + 28 + 1024 + 6, NBD_CMD_FLUSH);
    put32(b + 28 + 1024 + 24, 0);
    put64(b + 28 + 1024 + 16, 0);
    int got = 0;
    for (size_t i = 0; i < sizeof(b); i++) {
        buf_add(&c.in, b + i, 1);
        int k;
        while ((k = nbd_next(&c, &r)) > 0) {
            got++;
            if (got == 1) {
                assert_int_equal(r.type, NBD_CMD_WRITE);
                assert_int_equal(r.len, 1024);
                assert_int_equal(r.handle, 42);
                assert_int_equal(r.data[1023], 0x33);
            } else {
                assert_int_equal(r.type, NBD_CMD_FLUSH);
            }
        }
        assert_int_equal(k, 0);
    }
    assert_int_equal(got, 2);
    nbd_release(&c);
}

/* A forked child forgets the parent's disks; the parent's keep serving. */
static void test_forget_in_child(void **st)
{
    int d;
    int fd = connect_disk(&d, false);
    pid_t pid = fork();
    if (pid == 0) {
        disk_forget();
        uint64_t sz;
        _exit(disk_size(d, &sz) == -ENOENT ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_int_equal(status, 0);
    uint64_t size;
    uint16_t flags;
    handshake(fd, &size, &flags);
    request(fd, NBD_CMD_READ, 0, 1, 0, 512, NULL);
    assert_int_equal(reply(fd, 1), 0);
    close(fd);
    disk_close(d);
}

/* A READ of len bytes at off through the server: its bytes in p. */
static void nbd_read(int fd, uint64_t handle, uint64_t off, void *p, uint32_t len)
{
    request(fd, NBD_CMD_READ, 0, handle, off, len, NULL);
    assert_int_equal(reply(fd, handle), 0);
    readn(fd, p, len);
}

/* A mediated disk of 1 MiB at image, connected and negotiated. */
static int connect_mediated(int *ret_disk, uint64_t hold_max)
{
    int fd = connect_disk(ret_disk, false);
    uint64_t size;
    uint16_t flags;
    handshake(fd, &size, &flags);
    assert_int_equal(disk_mediate(*ret_disk, hold_max), 0);
    return fd;
}

static void assert_pending(int d, uint64_t count, uint64_t bytes)
{
    struct disk_pending p;
    assert_int_equal(disk_pending(d, &p), 0);
    assert_int_equal(p.count, count);
    assert_int_equal(p.bytes, bytes);
}

/* Held writes are invisible in the image until a FLUSH, visible to the
 * guest's READs meanwhile, applied in order; a FUA write commits them. */
static void test_mediated_flush_and_fua(void **st)
{
    int d;
    int fd = connect_mediated(&d, DISK_HOLD_MAX_DEFAULT);
    unsigned char a[4096], b[512], r[4096], h[4096];
    memset(a, 'A', sizeof(a));
    memset(b, 'B', sizeof(b));
    request(fd, NBD_CMD_WRITE, 0, 1, 8192, sizeof(a), a);
    assert_int_equal(reply(fd, 1), 0);
    request(fd, NBD_CMD_WRITE, 0, 2, 8192 + 1024, sizeof(b), b); /* over A, later */
    assert_int_equal(reply(fd, 2), 0);
    request(fd, NBD_CMD_WRITE_ZEROES, 0, 3, 8192 + 3072, 512, NULL);
    assert_int_equal(reply(fd, 3), 0);
    assert_pending(d, 3, 4096 + 512 + 512);

    /* the image: nothing yet */
    struct pv_err err = {0};
    static const unsigned char zero[4096];
    assert_int_equal(disk_read(d, 8192, h, sizeof(h), &err), 0);
    assert_memory_equal(h, zero, sizeof(h));
    /* the guest: A, then B over it, then zeroes, in order */
    unsigned char want[4096];
    memcpy(want, a, sizeof(a));
    memcpy(want + 1024, b, sizeof(b));
    memset(want + 3072, 0, 512);
    nbd_read(fd, 4, 8192 - 512, r, 1024); /* straddles the held range */
    assert_memory_equal(r, zero, 512);
    assert_memory_equal(r + 512, want, 512);
    nbd_read(fd, 5, 8192, r, sizeof(r));
    assert_memory_equal(r, want, sizeof(r));

    request(fd, NBD_CMD_FLUSH, 0, 6, 0, 0, NULL);
    assert_int_equal(reply(fd, 6), 0);
    assert_pending(d, 0, 0);
    assert_int_equal(disk_read(d, 8192, h, sizeof(h), &err), 0);
    assert_memory_equal(h, want, sizeof(h));

    /* a FUA write commits what is held before it, and itself */
    request(fd, NBD_CMD_WRITE, 0, 7, 0, sizeof(b), b);
    assert_int_equal(reply(fd, 7), 0);
    request(fd, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 8, 65536, sizeof(a), a);
    assert_int_equal(reply(fd, 8), 0);
    assert_pending(d, 0, 0);
    assert_int_equal(disk_read(d, 0, h, 512, &err), 0);
    assert_memory_equal(h, b, 512);
    assert_int_equal(disk_read(d, 65536, h, sizeof(a), &err), 0);
    assert_memory_equal(h, a, sizeof(a));

    /* eio_flush: the flush fails and the writes stay held */
    request(fd, NBD_CMD_WRITE, 0, 9, 4096, sizeof(b), b);
    assert_int_equal(reply(fd, 9), 0);
    assert_int_equal(disk_fault_set(d, DISK_EIO_FLUSH, &(struct disk_fault){0}), 0);
    request(fd, NBD_CMD_FLUSH, 0, 10, 0, 0, NULL);
    assert_int_equal(reply(fd, 10), NBD_EIO);
    assert_pending(d, 1, 512);
    disk_faults_clear(d);
    close(fd);
    disk_close(d);
}

/* A power cut drops what is held; the connection answers EIO from then
 * on (its QEMU is being killed); a new one serves what was committed. */
static void test_power_cut_drops(void **st)
{
    int d;
    int fd = connect_mediated(&d, DISK_HOLD_MAX_DEFAULT);
    unsigned char a[512], b[512], r[512];
    memset(a, 'A', sizeof(a));
    memset(b, 'B', sizeof(b));
    request(fd, NBD_CMD_WRITE, 0, 1, 0, sizeof(a), a);
    assert_int_equal(reply(fd, 1), 0);
    request(fd, NBD_CMD_FLUSH, 0, 2, 0, 0, NULL);
    assert_int_equal(reply(fd, 2), 0);
    request(fd, NBD_CMD_WRITE, 0, 3, 512, sizeof(b), b);
    assert_int_equal(reply(fd, 3), 0);
    request(fd, NBD_CMD_TRIM, 0, 4, 0, 512, NULL); /* reads as zeroes while held */
    assert_int_equal(reply(fd, 4), 0);
    nbd_read(fd, 5, 0, r, sizeof(r));
    assert_int_equal(r[0], 0);
    struct disk_cut cut;
    assert_int_equal(disk_power_cut(d, false, 0, &cut), 0);
    assert_int_equal(cut.applied, 0);
    assert_int_equal(cut.dropped, 2);
    assert_pending(d, 0, 0);
    request(fd, NBD_CMD_READ, 0, 6, 0, 512, NULL);
    assert_int_equal(reply(fd, 6), NBD_EIO);
    close(fd);

    struct pv_err err = {0};
    int fd2 = -1;
    assert_true(disk_connect(d, &fd2, &err) > 0);
    uint64_t size;
    uint16_t flags;
    handshake(fd2, &size, &flags);
    nbd_read(fd2, 1, 0, r, sizeof(r));
    assert_memory_equal(r, a, sizeof(r));
    nbd_read(fd2, 2, 512, r, sizeof(r));
    assert_int_equal(r[0], 0);
    close(fd2);
    disk_close(d);
}

/* 32 held one-sector writes, cut with reorder = seed: which survived, one
 * bit per write (write i puts i + 1 in sector i). */
static uint32_t cut_survivors(uint64_t seed, struct disk_cut *cut)
{
    unlink(image);
    int d;
    int fd = connect_mediated(&d, DISK_HOLD_MAX_DEFAULT);
    unsigned char s[512];
    for (int i = 0; i < 32; i++) {
        memset(s, i + 1, sizeof(s));
        request(fd, NBD_CMD_WRITE, 0, (uint64_t)i, (uint64_t)i * 512, sizeof(s), s);
        assert_int_equal(reply(fd, (uint64_t)i), 0);
    }
    /* a 33rd write over sector 0: if both are kept, the later one wins */
    memset(s, 0xee, sizeof(s));
    request(fd, NBD_CMD_WRITE, 0, 99, 0, sizeof(s), s);
    assert_int_equal(reply(fd, 99), 0);
    assert_int_equal(disk_power_cut(d, true, seed, cut), 0);
    assert_int_equal(cut->applied + cut->dropped, 33);
    uint32_t mask = 0;
    struct pv_err err = {0};
    for (int i = 0; i < 32; i++) {
        assert_int_equal(disk_read(d, (uint64_t)i * 512, s, sizeof(s), &err), 0);
        if (i == 0 && s[0] == 0xee)
            continue;
        assert_true(s[0] == 0 || s[0] == i + 1);
        if (s[0])
            mask |= 1u << i;
    }
    close(fd);
    disk_close(d);
    return mask;
}

/* reorder: a seed gives the same survivors every time; another seed may
 * differ; the kept writes land in order. */
static void test_power_cut_reorder(void **st)
{
    struct disk_cut c1, c2;
    uint32_t m1 = cut_survivors(42, &c1);
    uint32_t m2 = cut_survivors(42, &c2);
    assert_int_equal(m1, m2);
    assert_int_equal(c1.applied, c2.applied);
    assert_true(c1.applied > 0 && c1.dropped > 0); /* 2^-32 odds otherwise, and fixed */
    bool differs = false;
    for (uint64_t seed = 1; seed <= 8 && !differs; seed++)
        differs = cut_survivors(seed, &c2) != m1;
    assert_true(differs);
}

/* Faults on a mediated disk: a torn write holds the half that landed; a
 * FUA write under eio_flush is held, not committed, and fails. */
static void test_mediated_faults(void **st)
{
    int d;
    int fd = connect_mediated(&d, DISK_HOLD_MAX_DEFAULT);
    unsigned char a[4096], r[4096];
    memset(a, 'A', sizeof(a));
    assert_int_equal(disk_fault_set(d, DISK_TORN_WRITE, &(struct disk_fault){0}), 0);
    request(fd, NBD_CMD_WRITE, 0, 1, 0, sizeof(a), a);
    assert_int_equal(reply(fd, 1), NBD_EIO);
    disk_faults_clear(d);
    assert_pending(d, 1, 2048);
    nbd_read(fd, 2, 0, r, sizeof(r));
    assert_memory_equal(r, a, 2048);
    assert_int_equal(r[2048], 0);

    assert_int_equal(disk_fault_set(d, DISK_EIO_FLUSH, &(struct disk_fault){0}), 0);
    request(fd, NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 3, 8192, sizeof(a), a);
    assert_int_equal(reply(fd, 3), NBD_EIO);
    disk_faults_clear(d);
    assert_pending(d, 2, 2048 + 4096);
    unsigned char h[512];
    struct pv_err err = {0};
    assert_int_equal(disk_read(d, 8192, h, sizeof(h), &err), 0);
    assert_int_equal(h[0], 0);
    close(fd);
    disk_close(d);
}

/* Past the bound, what is held is committed as if flushed, and counted. */
static void test_mediated_bound(void **st)
{
    int d;
    int fd = connect_mediated(&d, 8192);
    unsigned char a[4096];
    memset(a, 'A', sizeof(a));
    for (int i = 0; i < 3; i++) {
        request(fd, NBD_CMD_WRITE, 0, (uint64_t)i, (uint64_t)i * 4096, sizeof(a), a);
        assert_int_equal(reply(fd, (uint64_t)i), 0);
    }
    struct disk_pending p;
    assert_int_equal(disk_pending(d, &p), 0);
    assert_int_equal(p.count, 1); /* the third, held after the first two went out */
    assert_int_equal(p.bytes, 4096);
    assert_int_equal(p.overflows, 1);
    unsigned char h[4096];
    struct pv_err err = {0};
    assert_int_equal(disk_read(d, 4096, h, sizeof(h), &err), 0);
    assert_memory_equal(h, a, sizeof(h));
    assert_int_equal(disk_read(d, 8192, h, sizeof(h), &err), 0);
    assert_int_equal(h[0], 0);
    /* turning it off commits the rest */
    assert_int_equal(disk_mediate(d, 0), 0);
    assert_int_equal(disk_read(d, 8192, h, sizeof(h), &err), 0);
    assert_memory_equal(h, a, sizeof(h));
    close(fd);
    disk_close(d);
}

/* Held bytes live in chunks reused after each commit: many writes across
 * chunk boundaries and one larger than a chunk, read back while held and
 * after the flush, twice, the second round over the first's chunks. */
static void test_mediated_chunks(void **st)
{
    struct pv_err err = {0};
    enum { MIB = 1 << 20, SIZE = 24 * MIB };
    int d = disk_open(image, SIZE, false, &err);
    assert_true(d > 0);
    int fd = -1;
    assert_true(disk_connect(d, &fd, &err) > 0);
    uint64_t size;
    uint16_t flags;
    handshake(fd, &size, &flags);
    assert_int_equal(disk_mediate(d, DISK_HOLD_MAX_DEFAULT), 0);
    unsigned char *w = malloc(9 * MIB), *r = malloc(9 * MIB);
    uint64_t h = 1;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 13; i++) { /* 13 MiB: two chunks and a half */
            memset(w, 'a' + i + round, MIB);
            request(fd, NBD_CMD_WRITE, 0, h, (uint64_t)i * MIB, MIB, w);
            assert_int_equal(reply(fd, h++), 0);
        }
        memset(w, 'Z' - round, 9 * MIB); /* larger than a chunk */
        request(fd, NBD_CMD_WRITE, 0, h, 14 * MIB, 9 * MIB, w);
        assert_int_equal(reply(fd, h++), 0);
        assert_pending(d, 14, 22 * MIB);
        for (int pass = 0; pass < 2; pass++) { /* held, then committed */
            for (int i = 0; i < 13; i++) {
                if (pass)
                    assert_int_equal(disk_read(d, (uint64_t)i * MIB, r, MIB, &err), 0);
                else
                    nbd_read(fd, h++, (uint64_t)i * MIB, r, MIB);
                assert_int_equal(r[0], 'a' + i + round);
                assert_int_equal(r[MIB - 1], 'a' + i + round);
            }
            if (pass)
                assert_int_equal(disk_read(d, 14 * MIB, r, 9 * MIB, &err), 0);
            else
                nbd_read(fd, h++, 14 * MIB, r, 9 * MIB);
            assert_memory_equal(r, w, 9 * MIB);
            if (!pass) {
                request(fd, NBD_CMD_FLUSH, 0, h, 0, 0, NULL);
                assert_int_equal(reply(fd, h++), 0);
                assert_pending(d, 0, 0);
            }
        }
    }
    free(w);
    free(r);
    close(fd);
    disk_close(d);
}

/* A disk restored from a snapshot: a frozen base under an overlay. Writes
 * (the guest's and the host's, whole sectors or not, zeroes) land in the
 * overlay only; reads take each sector from where it is now; a freeze
 * holds the whole view, sparse; the base never changes. */
static void test_layered_and_freeze(void **st)
{
    struct pv_err err = {0};
    char frozen[80], frozen2[80];
    snprintf(frozen, sizeof(frozen), "%s.frozen", image);
    snprintf(frozen2, sizeof(frozen2), "%s.frozen2", image);
    unlink(frozen);
    unlink(frozen2);
    /* the base: 'X' in sectors 0..7, a hole after, 'Y' at 512 KiB */
    int d = disk_open(image, 1 << 20, false, &err);
    assert_true(d > 0);
    unsigned char x[4096], y[4096], buf[8192];
    memset(x, 'X', sizeof(x));
    memset(y, 'Y', sizeof(y));
    assert_int_equal(disk_write(d, 0, x, sizeof(x), &err), 0);
    assert_int_equal(disk_write(d, 512 << 10, y, sizeof(y), &err), 0);
    struct disk_frozen f;
    assert_int_equal(disk_freeze(d, frozen, &f, &err), 0);
    assert_int_equal(f.size, 1 << 20);
    assert_false(f.mediated);
    disk_close(d);
    struct stat st0;
    assert_int_equal(stat(frozen, &st0), 0);
    assert_true(st0.st_blocks * 512 < 256 << 10); /* sparse */

    d = disk_open_layered(frozen, "/tmp", false, &err);
    assert_true(d > 0);
    uint64_t size;
    assert_int_equal(disk_size(d, &size), 0);
    assert_int_equal(size, 1 << 20);
    /* the host writes 3 bytes into sector 1: the rest of it stays the base's */
    assert_int_equal(disk_write(d, 512 + 100, "abc", 3, &err), 0);
    assert_int_equal(disk_read(d, 0, buf, 2048, &err), 0);
    assert_memory_equal(buf, x, 612);
    assert_memory_equal(buf + 612, "abc", 3);
    assert_memory_equal(buf + 615, x, 2048 - 615);
    /* the guest: a write straddling the base's data and its hole, zeroes
     * over the base's data, a read across all of it */
    int fd = -1;
    assert_true(disk_connect(d, &fd, &err) > 0);
    uint64_t esize;
    uint16_t eflags;
    handshake(fd, &esize, &eflags);
    request(fd, NBD_CMD_WRITE, 0, 1, 3072, 2048, y);
    assert_int_equal(reply(fd, 1), 0);
    request(fd, NBD_CMD_WRITE_ZEROES, 0, 2, 1024, 1024, NULL);
    assert_int_equal(reply(fd, 2), 0);
    unsigned char want[8192];
    memset(want, 0, sizeof(want));
    memcpy(want, x, sizeof(x));
    memcpy(want + 612, "abc", 3);
    memset(want + 1024, 0, 1024);
    memcpy(want + 3072, y, 2048);
    nbd_read(fd, 3, 0, buf, sizeof(buf));
    assert_memory_equal(buf, want, sizeof(buf));
    /* the base has none of it */
    struct stat st1;
    assert_int_equal(stat(frozen, &st1), 0);
    assert_int_equal(st1.st_mtim.tv_nsec, st0.st_mtim.tv_nsec);
    assert_int_equal(st1.st_mtim.tv_sec, st0.st_mtim.tv_sec);
    /* a freeze of the layered disk: the view, 'Y' at 512 KiB included */
    assert_int_equal(disk_freeze(d, frozen2, &f, &err), 0);
    close(fd);
    disk_close(d);
    int fz = open(frozen2, O_RDONLY | O_CLOEXEC);
    assert_true(fz >= 0);
    assert_int_equal(pread(fz, buf, sizeof(buf), 0), (ssize_t)sizeof(buf));
    assert_memory_equal(buf, want, sizeof(buf));
    assert_int_equal(pread(fz, buf, sizeof(y), 512 << 10), (ssize_t)sizeof(y));
    assert_memory_equal(buf, y, sizeof(y));
    close(fz);
    /* a base that is not a whole number of sectors, or not there */
    assert_int_equal(disk_open_layered("/nonexistent/base", "/tmp", false, &err), -ENOENT);
    unlink(frozen);
    unlink(frozen2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_handshake_read_write_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readonly_and_garbage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_disk_answers_eio, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sparse_and_scratch, setup, teardown),
        cmocka_unit_test(test_decoder_options),
        cmocka_unit_test(test_decoder_split),
        cmocka_unit_test_setup_teardown(test_forget_in_child, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mediated_flush_and_fua, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_cut_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_power_cut_reorder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mediated_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mediated_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mediated_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_layered_and_freeze, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
