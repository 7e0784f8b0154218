/* The wire format: field round trips, the exact little-endian encoding,
 * headers, frames, and a corpus of malformed payloads and headers that must
 * fail cleanly with the reason the decoder promises. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "proto/wire.h"

/* Decode n bytes given as a string literal (which may hold NULs). */
#define RD(r, lit) pv_rd_init((r), (lit), sizeof(lit) - 1)

static void test_proto_u8_u32_u64_i64_round_trip(void **state)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u8(&w, 0);
    pv_put_u8(&w, 0xff);
    pv_put_u32(&w, 0);
    pv_put_u32(&w, 0xdeadbeefu);
    pv_put_u32(&w, UINT32_MAX);
    pv_put_u64(&w, 0x0123456789abcdefull);
    pv_put_u64(&w, UINT64_MAX);
    pv_put_i64(&w, -1);
    pv_put_i64(&w, INT64_MIN);
    pv_put_i64(&w, INT64_MAX);
    assert_int_equal(b.len, 2 + 3 * 4 + 2 * 8 + 3 * 8);

    struct pv_rd r;
    pv_rd_init(&r, b.data, b.len);
    assert_int_equal(pv_get_u8(&r), 0);
    assert_int_equal(pv_get_u8(&r), 0xff);
    assert_int_equal(pv_get_u32(&r), 0);
    assert_int_equal(pv_get_u32(&r), 0xdeadbeefu);
    assert_int_equal(pv_get_u32(&r), UINT32_MAX);
    assert_int_equal(pv_get_u64(&r), 0x0123456789abcdefull);
    assert_int_equal(pv_get_u64(&r), UINT64_MAX);
    assert_int_equal(pv_get_i64(&r), -1);
    assert_int_equal(pv_get_i64(&r), INT64_MIN);
    assert_int_equal(pv_get_i64(&r), INT64_MAX);
    assert_int_equal(pv_rd_done(&r), 0);
    assert_false(r.bad);
    assert_null(r.why);
    buf_release(&b);
}

/* The encoding is little-endian whatever the host: pin the bytes. */
static void test_proto_little_endian_bytes(void **state)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, 0x04030201u);
    pv_put_u64(&w, 0x0c0b0a0908070605ull);
    pv_put_i64(&w, -2);
    static const uint8_t want[] = {1,  2,  3,    4,    5,    6,    7,    8,    9,    10,
                                   11, 12, 0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(b.len, sizeof(want));
    assert_memory_equal(b.data, want, sizeof(want));
    buf_release(&b);
}

static void test_proto_bytes_and_str_round_trip(void **state)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    static const uint8_t bin[] = {0, 1, 0, 0xff, 0x80, 0};
    pv_put_bytes(&w, bin, sizeof(bin));
    pv_put_bytes(&w, NULL, 0);
    pv_put_str(&w, "hello");
    pv_put_str(&w, "");
    pv_put_str(&w, NULL);

    /* bytes: u32 length + data; str: the NUL is counted in the length */
    assert_int_equal(b.len, (4 + 6) + 4 + (4 + 6) + (4 + 1) + (4 + 1));
    static const uint8_t str_hdr[] = {6, 0, 0, 0, 'h', 'e', 'l', 'l', 'o', 0};
    assert_memory_equal(b.data + 14, str_hdr, sizeof(str_hdr));

    struct pv_rd r;
    pv_rd_init(&r, b.data, b.len);
    size_t n = 99;
    const uint8_t *p = pv_get_bytes(&r, &n);
    assert_int_equal(n, sizeof(bin));
    assert_memory_equal(p, bin, sizeof(bin));
    /* Returned pointers point into the payload, not into a copy. */
    assert_ptr_equal(p, (const uint8_t *)b.data + 4);
    n = 99;
    p = pv_get_bytes(&r, &n);
    assert_int_equal(n, 0);
    assert_non_null(p);
    assert_string_equal(pv_get_str(&r), "hello");
    assert_string_equal(pv_get_str(&r), "");
    assert_string_equal(pv_get_str(&r), "");
    assert_int_equal(pv_rd_done(&r), 0);
    buf_release(&b);
}

static void test_proto_header_encode_decode(void **state)
{
    struct pv_hdr h = {PV_MAGIC, PV_PROTO_VERSION, PV_RUN, 0x11223344u, 0xa1b2c3d4u, 1234};
    uint8_t raw[PV_HDR_SIZE];
    pv_hdr_encode(&h, raw);
    static const uint8_t want[PV_HDR_SIZE] = {
        'P',  'R',  'V',  'M',  1,    0,    3,    0,    0x44, 0x33,
        0x22, 0x11, 0xd4, 0xc3, 0xb2, 0xa1, 0xd2, 0x04, 0,    0,
    };
    assert_memory_equal(raw, want, PV_HDR_SIZE);

    struct pv_hdr d;
    const char *why = NULL;
    assert_int_equal(pv_hdr_decode(raw, &d, &why), 0);
    assert_null(why);
    assert_int_equal(d.magic, PV_MAGIC);
    assert_int_equal(d.version, PV_PROTO_VERSION);
    assert_int_equal(d.type, PV_RUN);
    assert_int_equal(d.flags, 0x11223344u);
    assert_int_equal(d.id, 0xa1b2c3d4u);
    assert_int_equal(d.len, 1234);

    /* 16-bit fields keep their high byte. */
    h = (struct pv_hdr){PV_MAGIC, 0xbeef, PV_EV_CHUNK, 0, UINT32_MAX, PV_MAX_PAYLOAD};
    pv_hdr_encode(&h, raw);
    assert_int_equal(pv_hdr_decode(raw, &d, &why), 0);
    assert_int_equal(d.version, 0xbeef);
    assert_int_equal(d.type, PV_EV_CHUNK);
    assert_int_equal(d.id, UINT32_MAX);
    assert_int_equal(d.len, PV_MAX_PAYLOAD);
}

static void test_proto_frame(void **state)
{
    struct buf f = BUF_INIT;
    pv_frame(&f, PV_PING, 42, "abc", 3);
    pv_frame(&f, PV_OK, 43, NULL, 0);
    assert_int_equal(f.len, 2 * PV_HDR_SIZE + 3);

    struct pv_hdr h;
    const char *why = NULL;
    assert_int_equal(pv_hdr_decode((const uint8_t *)f.data, &h, &why), 0);
    assert_int_equal(h.magic, PV_MAGIC);
    assert_int_equal(h.version, PV_PROTO_VERSION);
    assert_int_equal(h.type, PV_PING);
    assert_int_equal(h.flags, 0);
    assert_int_equal(h.id, 42);
    assert_int_equal(h.len, 3);
    assert_memory_equal(f.data + PV_HDR_SIZE, "abc", 3);

    const uint8_t *second = (const uint8_t *)f.data + PV_HDR_SIZE + 3;
    assert_int_equal(pv_hdr_decode(second, &h, &why), 0);
    assert_int_equal(h.type, PV_OK);
    assert_int_equal(h.id, 43);
    assert_int_equal(h.len, 0);
    buf_release(&f);
}

/* One decode step that must fail; checks the reason, the zero value and
 * that pv_rd_done() reports it. */
static void expect_bad(struct pv_rd *r, const char *why)
{
    assert_true(r->bad);
    assert_non_null(r->why);
    assert_string_equal(r->why, why);
    assert_int_equal(pv_rd_done(r), -EBADMSG);
    /* pv_rd_done() keeps the first reason */
    assert_string_equal(r->why, why);
}

static void test_proto_truncated_fields(void **state)
{
    struct pv_rd r;

    pv_rd_init(&r, "", 0);
    assert_int_equal(pv_get_u8(&r), 0);
    expect_bad(&r, "truncated u8");

    RD(&r, "\x01\x02\x03");
    assert_int_equal(pv_get_u32(&r), 0);
    expect_bad(&r, "truncated u32");

    RD(&r, "\x01\x02\x03\x04\x05\x06\x07");
    assert_int_equal(pv_get_u64(&r), 0);
    expect_bad(&r, "truncated u64");

    RD(&r, "\xff\xff\xff\xff\xff\xff\xff");
    assert_int_equal(pv_get_i64(&r), 0);
    expect_bad(&r, "truncated u64");

    /* the length prefix of a bytes field itself cut short */
    size_t n = 7;
    RD(&r, "\x05\x00");
    pv_get_bytes(&r, &n);
    assert_int_equal(n, 0);
    expect_bad(&r, "truncated u32");

    RD(&r, "\x05\x00");
    assert_string_equal(pv_get_str(&r), "");
    expect_bad(&r, "truncated u32");
}

static void test_proto_bytes_longer_than_frame(void **state)
{
    struct pv_rd r;
    size_t n = 7;
    RD(&r, "\x0a\x00\x00\x00"
           "abc");
    const void *p = pv_get_bytes(&r, &n);
    assert_non_null(p);
    assert_int_equal(n, 0);
    expect_bad(&r, "byte field longer than the frame");

    /* a length that would wrap a 32-bit offset */
    RD(&r, "\xff\xff\xff\xff"
           "abcd");
    n = 7;
    pv_get_bytes(&r, &n);
    assert_int_equal(n, 0);
    expect_bad(&r, "byte field longer than the frame");

    RD(&r, "\x04\x00\x00\x00"
           "ab\0");
    assert_string_equal(pv_get_str(&r), "");
    expect_bad(&r, "byte field longer than the frame");
}

static void test_proto_malformed_strings(void **state)
{
    struct pv_rd r;

    RD(&r, "\x03\x00\x00\x00"
           "abc"); /* no NUL */
    assert_string_equal(pv_get_str(&r), "");
    expect_bad(&r, "malformed string field");

    RD(&r, "\x04\x00\x00\x00"
           "a\0b\0"); /* NUL inside */
    assert_string_equal(pv_get_str(&r), "");
    expect_bad(&r, "malformed string field");

    RD(&r, "\x00\x00\x00\x00"); /* not even the NUL */
    assert_string_equal(pv_get_str(&r), "");
    expect_bad(&r, "malformed string field");

    RD(&r, "\x02\x00\x00\x00"
           "\0\0");
    assert_string_equal(pv_get_str(&r), "");
    expect_bad(&r, "malformed string field");

    /* the same bytes are a fine bytes field */
    size_t n;
    RD(&r, "\x04\x00\x00\x00"
           "a\0b\0");
    assert_memory_equal(pv_get_bytes(&r, &n), "a\0b\0", 4);
    assert_int_equal(n, 4);
    assert_int_equal(pv_rd_done(&r), 0);
}

static void test_proto_trailing_bytes(void **state)
{
    struct pv_rd r;
    RD(&r, "\x01\x00\x00\x00"
           "x");
    assert_int_equal(pv_get_u32(&r), 1);
    assert_false(r.bad);
    assert_int_equal(pv_rd_done(&r), -EBADMSG);
    assert_string_equal(r.why, "trailing bytes after the last field");

    /* an empty payload read as nothing is fine */
    pv_rd_init(&r, NULL, 0);
    assert_int_equal(pv_rd_done(&r), 0);
}

/* After the first failure every get returns a zero value and the first
 * reason sticks, so a handler can decode everything then check once. */
static void test_proto_failure_is_sticky(void **state)
{
    struct pv_rd r;
    RD(&r, "\x20\x00\x00\x00"
           "ab"
           "\x07\x00\x00\x00\x00\x00\x00\x00");
    size_t n = 9;
    pv_get_bytes(&r, &n);
    assert_true(r.bad);
    assert_int_equal(pv_get_u8(&r), 0);
    assert_int_equal(pv_get_u32(&r), 0);
    assert_int_equal(pv_get_u64(&r), 0);
    assert_string_equal(pv_get_str(&r), "");
    assert_int_equal(pv_get_count(&r, 1), 0);
    assert_non_null(pv_get_bytes(&r, &n));
    assert_int_equal(n, 0);
    expect_bad(&r, "byte field longer than the frame");
}

static void test_proto_count(void **state)
{
    struct pv_rd r;
    /* 1000 items of at least 5 bytes cannot fit in 10 bytes */
    RD(&r, "\xe8\x03\x00\x00"
           "0123456789");
    assert_int_equal(pv_get_count(&r, 5), 0);
    expect_bad(&r, "item count larger than the frame");

    /* 2 items of 5 bytes fit exactly */
    RD(&r, "\x02\x00\x00\x00"
           "0123456789");
    assert_int_equal(pv_get_count(&r, 5), 2);
    assert_false(r.bad);

    /* 3 do not */
    RD(&r, "\x03\x00\x00\x00"
           "0123456789");
    assert_int_equal(pv_get_count(&r, 5), 0);
    expect_bad(&r, "item count larger than the frame");

    /* a huge count against an empty rest */
    RD(&r, "\xff\xff\xff\xff");
    assert_int_equal(pv_get_count(&r, 1), 0);
    expect_bad(&r, "item count larger than the frame");

    /* min_item 0: no bound to check */
    RD(&r, "\xff\xff\xff\xff");
    assert_int_equal(pv_get_count(&r, 0), UINT32_MAX);
    assert_int_equal(pv_rd_done(&r), 0);

    RD(&r, "\x01\x00");
    assert_int_equal(pv_get_count(&r, 1), 0);
    expect_bad(&r, "truncated u32");
}

static void test_proto_bad_headers(void **state)
{
    uint8_t raw[PV_HDR_SIZE];
    struct pv_hdr h, d;
    const char *why;

    h = (struct pv_hdr){PV_MAGIC ^ 0x20, PV_PROTO_VERSION, PV_PING, 0, 1, 0};
    pv_hdr_encode(&h, raw);
    why = NULL;
    assert_int_equal(pv_hdr_decode(raw, &d, &why), -EBADMSG);
    assert_non_null(why);
    assert_string_equal(why, "bad magic");

    memset(raw, 0, sizeof(raw));
    why = NULL;
    assert_int_equal(pv_hdr_decode(raw, &d, &why), -EBADMSG);
    assert_string_equal(why, "bad magic");

    h = (struct pv_hdr){PV_MAGIC, PV_PROTO_VERSION, PV_OK, 0, 1, PV_MAX_PAYLOAD + 1};
    pv_hdr_encode(&h, raw);
    why = NULL;
    assert_int_equal(pv_hdr_decode(raw, &d, &why), -EBADMSG);
    assert_non_null(why);
    assert_string_equal(why, "frame larger than the 16 MiB limit");

    h.len = UINT32_MAX;
    pv_hdr_encode(&h, raw);
    why = NULL;
    assert_int_equal(pv_hdr_decode(raw, &d, &why), -EBADMSG);
    assert_string_equal(why, "frame larger than the 16 MiB limit");

    /* The version is the handshake's business: decoding reports it. */
    h = (struct pv_hdr){PV_MAGIC, 99, PV_HELLO, 0, 5, 4};
    pv_hdr_encode(&h, raw);
    why = NULL;
    assert_int_equal(pv_hdr_decode(raw, &d, &why), 0);
    assert_null(why);
    assert_int_equal(d.version, 99);
    assert_int_equal(d.type, PV_HELLO);
    assert_int_equal(d.id, 5);
    assert_int_equal(d.len, 4);
}

static void test_proto_sync_scan(void **state)
{
    struct buf b = BUF_INIT;
    buf_add(&b, "garbage\0\xffPRV", 12); /* includes a false start "PRV" */
    size_t garbage = b.len;
    pv_frame(&b, PV_HELLO_OK, 1, "x", 1);
    assert_int_equal(pv_sync_scan((const uint8_t *)b.data, b.len), garbage);

    /* a header right at the start */
    assert_int_equal(pv_sync_scan((const uint8_t *)b.data + garbage, b.len - garbage), 0);

    /* only the first 4 bytes of the header are needed to find it */
    assert_int_equal(pv_sync_scan((const uint8_t *)b.data, garbage + 4), garbage);

    /* none: keep the last 3 bytes, a magic may be split across reads */
    static const char junk[] = "no header in here at all";
    size_t jl = sizeof(junk) - 1;
    assert_int_equal(pv_sync_scan((const uint8_t *)junk, jl), jl - 3);
    assert_int_equal(pv_sync_scan((const uint8_t *)b.data, garbage + 3), garbage);
    assert_int_equal(pv_sync_scan((const uint8_t *)"abc", 3), 0);
    assert_int_equal(pv_sync_scan((const uint8_t *)"", 0), 0);
    assert_int_equal(pv_sync_scan((const uint8_t *)"abcd", 4), 1);

    /* the kept tail plus the next read finds the header at 0 */
    struct buf s = BUF_INIT;
    buf_add(&s, "xyzPRV", 6);
    size_t skip = pv_sync_scan((const uint8_t *)s.data, s.len);
    assert_int_equal(skip, 3);
    buf_consume(&s, skip);
    buf_add(&s, "M", 1);
    assert_int_equal(pv_sync_scan((const uint8_t *)s.data, s.len), 0);
    assert_memory_equal(s.data, "PRVM", 4);

    buf_release(&s);
    buf_release(&b);
}

static void test_proto_type_names(void **state)
{
    assert_string_equal(pv_type_name(PV_HELLO), "Hello");
    assert_string_equal(pv_type_name(PV_RUN), "Run");
    assert_string_equal(pv_type_name(PV_CANCEL), "Cancel");
    assert_string_equal(pv_type_name(PV_HELLO_ERR), "HelloErr");
    assert_string_equal(pv_type_name(PV_EV_CHUNK), "Chunk");
    assert_string_equal(pv_type_name(0), "unknown");
    assert_string_equal(pv_type_name(0xffff), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proto_u8_u32_u64_i64_round_trip),
        cmocka_unit_test(test_proto_little_endian_bytes),
        cmocka_unit_test(test_proto_bytes_and_str_round_trip),
        cmocka_unit_test(test_proto_header_encode_decode),
        cmocka_unit_test(test_proto_frame),
        cmocka_unit_test(test_proto_truncated_fields),
        cmocka_unit_test(test_proto_bytes_longer_than_frame),
        cmocka_unit_test(test_proto_malformed_strings),
        cmocka_unit_test(test_proto_trailing_bytes),
        cmocka_unit_test(test_proto_failure_is_sticky),
        cmocka_unit_test(test_proto_count),
        cmocka_unit_test(test_proto_bad_headers),
        cmocka_unit_test(test_proto_sync_scan),
        cmocka_unit_test(test_proto_type_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
