/* pvh_unpack on synthetic bzImages: a small ELF with (or without) the PVH
 * entry note, compressed as the kernel's build does (gzip, xz, zstd, LZ4's
 * legacy format), behind a boot-protocol header; and, when one is cached,
 * on a real Debian kernel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "host/kernel.h"
#include "host/pvh.h"

#include <elf.h>
#include <lz4.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

/* An ELF64 x86-64 file with one PT_NOTE holding a note of type `type`
 * named "Xen", and some bytes after it to compress. */
static void make_elf(struct buf *out, uint32_t type)
{
    Elf64_Ehdr eh = {.e_type = ET_EXEC,
                     .e_machine = EM_X86_64,
                     .e_version = EV_CURRENT,
                     .e_phoff = sizeof(Elf64_Ehdr),
                     .e_ehsize = sizeof(Elf64_Ehdr),
                     .e_phentsize = sizeof(Elf64_Phdr),
                     .e_phnum = 1};
    memcpy(eh.e_ident, ELFMAG, SELFMAG);
    eh.e_ident[EI_CLASS] = ELFCLASS64;
    eh.e_ident[EI_DATA] = ELFDATA2LSB;
    Elf64_Nhdr nh = {.n_namesz = 4, .n_descsz = 8, .n_type = type};
    Elf64_Phdr ph = {
        .p_type = PT_NOTE, .p_offset = sizeof(eh) + sizeof(ph), .p_filesz = sizeof(nh) + 4 + 8};
    buf_add(out, &eh, sizeof(eh));
    buf_add(out, &ph, sizeof(ph));
    buf_add(out, &nh, sizeof(nh));
    buf_add(out, "Xen\0\x50\x08\x00\x01\0\0\0\0", 12);
    for (int i = 0; i < 20000; i++)
        buf_addf(out, "kernel text %d\n", i);
}

static void compress_gzip(const struct buf *in, struct buf *out)
{
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
    buf_reserve(out, deflateBound(&z, in->len));
    z.next_in = (Bytef *)in->data;
    z.avail_in = (uInt)in->len;
    z.next_out = (Bytef *)out->data;
    z.avail_out = (uInt)(out->cap - 1);
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    out->len = z.total_out;
    deflateEnd(&z);
}

static void compress_xz(const struct buf *in, struct buf *out)
{
    buf_reserve(out, lzma_stream_buffer_bound(in->len));
    size_t pos = 0;
    assert_int_equal(lzma_easy_buffer_encode(6, LZMA_CHECK_CRC32, NULL, (const uint8_t *)in->data,
                                             in->len, (uint8_t *)out->data, &pos, out->cap - 1),
                     LZMA_OK);
    out->len = pos;
}

static void compress_zstd(const struct buf *in, struct buf *out)
{
    buf_reserve(out, ZSTD_compressBound(in->len));
    size_t n = ZSTD_compress(out->data, out->cap - 1, in->data, in->len, 19);
    assert_false(ZSTD_isError(n));
    out->len = n;
}

static void le32(struct buf *b, uint32_t v)
{
    uint8_t o[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    buf_add(b, o, 4);
}

/* The legacy frame: a magic, then blocks of 8 MiB of input at most, each
 * behind its compressed length (here in blocks of 64 KiB, to have several). */
static void compress_lz4(const struct buf *in, struct buf *out)
{
    le32(out, 0x184c2102);
    for (size_t off = 0; off < in->len; off += 65536) {
        int n = (int)MIN(in->len - off, 65536);
        char tmp[LZ4_COMPRESSBOUND(65536)];
        int c = LZ4_compress_default(in->data + off, tmp, n, (int)sizeof(tmp));
        assert_true(c > 0);
        le32(out, (uint32_t)c);
        buf_add(out, tmp, (size_t)c);
    }
}

/* A bzImage: 4 set-up sectors and the boot sector, the header, then the
 * payload and the unpacked size the kernel's build appends. */
static void make_bzimage(struct buf *img, const struct buf *payload, size_t unpacked)
{
    uint8_t head[5 * 512] = {0};
    head[0x1f1] = 4;
    memcpy(head + 0x202, "HdrS", 4);
    head[0x206] = 0x0f;
    head[0x207] = 0x02;
    uint32_t poff = 0, plen = (uint32_t)payload->len + 4;
    memcpy(head + 0x248, &poff, 4);
    memcpy(head + 0x24c, &plen, 4);
    buf_add(img, head, sizeof(head));
    buf_add(img, payload->data, payload->len);
    le32(img, (uint32_t)unpacked);
}

static void roundtrip(void (*compress)(const struct buf *, struct buf *))
{
    struct buf elf = BUF_INIT, z = BUF_INIT, img = BUF_INIT, out = BUF_INIT;
    make_elf(&elf, 18);
    compress(&elf, &z);
    make_bzimage(&img, &z, elf.len);
    assert_int_equal(pvh_unpack((const uint8_t *)img.data, img.len, &out), 0);
    assert_int_equal(out.len, elf.len);
    assert_memory_equal(out.data, elf.data, elf.len);
    buf_release(&out);
    /* a payload cut short anywhere is damaged, never a shorter kernel */
    for (size_t cut = 8; cut < z.len; cut += 997) {
        struct buf short_z = BUF_INIT, short_img = BUF_INIT, part = BUF_INIT;
        buf_add(&short_z, z.data, cut);
        make_bzimage(&short_img, &short_z, elf.len);
        int r = pvh_unpack((const uint8_t *)short_img.data, short_img.len, &part);
        assert_true(r == -EBADMSG || r == -ENOEXEC);
        buf_release(&short_z);
        buf_release(&short_img);
        buf_release(&part);
    }
    /* the whole file cut short: the header's payload is outside it */
    assert_int_equal(pvh_unpack((const uint8_t *)img.data, img.len - 1, &out), -ENOEXEC);
    buf_release(&elf);
    buf_release(&z);
    buf_release(&img);
    buf_release(&out);
}

static void test_gzip(void **state)
{
    roundtrip(compress_gzip);
}

static void test_xz(void **state)
{
    roundtrip(compress_xz);
}

static void test_zstd(void **state)
{
    roundtrip(compress_zstd);
}

static void test_lz4(void **state)
{
    roundtrip(compress_lz4);
}

/* A kernel without CONFIG_PVH (no note of type 18) boots as a bzImage. */
static void test_no_pvh_note(void **state)
{
    struct buf elf = BUF_INIT, z = BUF_INIT, img = BUF_INIT, out = BUF_INIT;
    make_elf(&elf, 17);
    compress_gzip(&elf, &z);
    make_bzimage(&img, &z, elf.len);
    assert_int_equal(pvh_unpack((const uint8_t *)img.data, img.len, &out), -ENOEXEC);
    buf_release(&elf);
    buf_release(&z);
    buf_release(&img);
    buf_release(&out);
}

/* Not a bzImage, an old header, a payload outside the file, bzip2. */
static void test_not_bzimage(void **state)
{
    struct buf payload = BUF_INIT, img = BUF_INIT, out = BUF_INIT;
    buf_adds(&payload, "BZh91AY&SY not read here");
    make_bzimage(&img, &payload, 100);
    assert_int_equal(pvh_unpack((const uint8_t *)img.data, img.len, &out), -ENOEXEC);
    assert_int_equal(pvh_unpack((const uint8_t *)img.data, 0x240, &out), -ENOEXEC);
    img.data[0x206] = 0x07; /* protocol 2.07: no payload fields */
    assert_int_equal(pvh_unpack((const uint8_t *)img.data, img.len, &out), -ENOEXEC);
    img.data[0x206] = 0x0f;
    uint32_t huge = 0xfffffff0;
    memcpy(img.data + 0x24c, &huge, 4);
    assert_int_equal(pvh_unpack((const uint8_t *)img.data, img.len, &out), -ENOEXEC);
    memcpy(img.data + 0x202, "HdrX", 4);
    assert_int_equal(pvh_unpack((const uint8_t *)img.data, img.len, &out), -ENOEXEC);
    assert_int_equal(out.len, 0);
    buf_release(&payload);
    buf_release(&img);
    buf_release(&out);
}

/* Debian's kernels have CONFIG_PVH: the cached one unpacks to an ELF. */
static void test_real_kernel(void **state)
{
    _cleanup_free_ char *root = kernel_cache_root();
    struct kernel_info k = {0};
    if (!root || kernel_find_default(root, &k, NULL) < 0)
        skip();
    struct buf img = BUF_INIT, out = BUF_INIT;
    assert_int_equal(read_file(k.vmlinuz, 256u << 20, &img), 0);
    assert_int_equal(pvh_unpack((const uint8_t *)img.data, img.len, &out), 0);
    assert_memory_equal(out.data, ELFMAG, SELFMAG);
    assert_true(out.len > img.len);
    buf_release(&img);
    buf_release(&out);
    kernel_info_release(&k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gzip),        cmocka_unit_test(test_xz),
        cmocka_unit_test(test_zstd),        cmocka_unit_test(test_lz4),
        cmocka_unit_test(test_no_pvh_note), cmocka_unit_test(test_not_bzimage),
        cmocka_unit_test(test_real_kernel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
