/* A bzImage booted without its decompressor (docs/boot-cache.md#the-cold-boot).
 *
 * A bzImage is a real-mode set-up part followed by the kernel proper, an ELF
 * vmlinux, compressed; on a cold boot the firmware's Linux loader copies it
 * into the guest and the kernel's own decompressor unpacks it there. Under
 * TCG that emulated work is a large share of a cold boot. QEMU can instead
 * load an uncompressed ELF kernel that carries the Xen PVH entry note
 * (XEN_ELFNOTE_PHYS32_ENTRY, a kernel built with CONFIG_PVH) and jump to it
 * directly. pvh_kernel unpacks the ELF once per kernel file, on the host,
 * into <cache root>/pvh/; anything else (no note, a compression this does
 * not read, a damaged file) leaves the boot as it was. */
#include "pvh.h"

#include <elf.h>
#include <fcntl.h>
#include <lz4.h>
#include <lzma.h>
#include <stdio.h>
#include <sys/stat.h>
#include <zlib.h>
#include <zstd.h>

#include "cache.h"
#include "hash.h"
#include "kernel.h"

/* Far above any kernel's vmlinux (Debian's is 53 MiB), far below harm. */
#define PVH_MAX_ELF (512u << 20)
/* Unpacked kernels kept: one per kernel file a developer boots, ~50 MiB each. */
#define PVH_KEEP 4
#define XEN_ELFNOTE_PHYS32_ENTRY 18

/* Room in out for the next piece of an unpacking that must end at want
 * bytes (the size the image announced): as much as came so far, from
 * 16 KiB up to 1 MiB at a time, so a lying size costs nothing up front (a
 * short stream does not take a megabyte either), and always a byte more
 * than want, so that a decoder holding its last bytes can finish (zstd
 * makes no progress into no room) and an overlong stream shows. */
static size_t room(struct buf *out, size_t want)
{
    size_t step = MIN(MAX(out->len, (size_t)16384), (size_t)1 << 20);
    size_t n = MIN(want + 1 - MIN(want, out->len), step);
    buf_reserve(out, n);
    return n;
}

static int unpack_gzip(const uint8_t *in, size_t n, size_t want, struct buf *out)
{
    z_stream z = {.next_in = (Bytef *)in, .avail_in = (uInt)MIN(n, UINT32_MAX)};
    if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)
        return -ENOMEM;
    int zr = Z_OK;
    while (zr == Z_OK) {
        z.avail_out = (uInt)room(out, want);
        z.next_out = (Bytef *)out->data + out->len;
        zr = inflate(&z, Z_NO_FLUSH);
        out->len = (size_t)((char *)z.next_out - out->data);
    }
    inflateEnd(&z);
    return zr == Z_STREAM_END ? 0 : -EBADMSG;
}

static int unpack_xz(const uint8_t *in, size_t n, size_t want, struct buf *out)
{
    lzma_stream s = LZMA_STREAM_INIT;
    if (lzma_stream_decoder(&s, 256u << 20, 0) != LZMA_OK) /* the kernel's dictionary is 32 MiB */
        return -ENOMEM;
    s.next_in = in;
    s.avail_in = n;
    lzma_ret lr = LZMA_OK;
    while (lr == LZMA_OK) {
        s.avail_out = room(out, want);
        s.next_out = (uint8_t *)out->data + out->len;
        lr = lzma_code(&s, LZMA_FINISH);
        out->len = (size_t)((char *)s.next_out - out->data);
    }
    lzma_end(&s);
    return lr == LZMA_STREAM_END ? 0 : -EBADMSG;
}

static int unpack_zstd(const uint8_t *in, size_t n, size_t want, struct buf *out)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return -ENOMEM;
    /* the kernel's build compresses with a window of up to 2^27 bytes */
    ZSTD_DCtx_setParameter(d, ZSTD_d_windowLogMax, 27);
    ZSTD_inBuffer ib = {in, n, 0};
    size_t zr = 1;
    while (zr != 0 && !ZSTD_isError(zr)) {
        size_t at = ib.pos, made = out->len;
        size_t space = room(out, want); /* before out->data is read: it may move */
        ZSTD_outBuffer ob = {out->data + out->len, space, 0};
        zr = ZSTD_decompressStream(d, &ob, &ib);
        out->len += ob.pos;
        if (ib.pos == at && out->len == made && zr != 0)
            break; /* no progress: out of input, or past want */
    }
    ZSTD_freeDCtx(d);
    return zr == 0 ? 0 : -EBADMSG;
}

/* LZ4's legacy format, as the kernel's build writes it: blocks of a 32-bit
 * compressed length and up to 8 MiB of output each, then the size. */
static int unpack_lz4(const uint8_t *in, size_t n, size_t want, struct buf *out)
{
    const uint32_t magic = 0x184c2102, block = 8u << 20;
    for (size_t off = 4; n - off >= 4;) {
        uint32_t len = (uint32_t)in[off] | (uint32_t)in[off + 1] << 8 |
                       (uint32_t)in[off + 2] << 16 | (uint32_t)in[off + 3] << 24;
        off += 4;
        if (len == magic)
            continue;
        if (off == n)
            break; /* that was the appended size */
        if (len > n - off || len > (uint32_t)LZ4_compressBound((int)block))
            return -EBADMSG;
        size_t cap = MIN(want - MIN(want, out->len), (size_t)block);
        buf_reserve(out, cap);
        int got =
            LZ4_decompress_safe((const char *)in + off, out->data + out->len, (int)len, (int)cap);
        if (got < 0)
            return -EBADMSG;
        out->len += (size_t)got;
        off += len;
    }
    return 0;
}

/* Does the ELF at p have the PVH entry note? */
static bool pvh_note(const uint8_t *p, size_t n)
{
    if (n < sizeof(Elf64_Ehdr) || memcmp(p, ELFMAG, SELFMAG) || p[EI_CLASS] != ELFCLASS64)
        return false;
    Elf64_Ehdr eh;
    memcpy(&eh, p, sizeof(eh));
    if (eh.e_machine != EM_X86_64 || eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phoff > n ||
        (n - eh.e_phoff) / sizeof(Elf64_Phdr) < eh.e_phnum)
        return false;
    for (size_t i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, p + eh.e_phoff + i * sizeof(ph), sizeof(ph));
        if (ph.p_type != PT_NOTE || ph.p_offset > n || ph.p_filesz > n - ph.p_offset)
            continue;
        for (size_t o = 0; ph.p_filesz - o >= sizeof(Elf64_Nhdr);) {
            Elf64_Nhdr nh;
            memcpy(&nh, p + ph.p_offset + o, sizeof(nh));
            size_t name = (nh.n_namesz + 3u) & ~3u, desc = (nh.n_descsz + 3u) & ~3u;
            if (name > ph.p_filesz || desc > ph.p_filesz ||
                ph.p_filesz - o - sizeof(nh) < name + desc)
                break;
            if (nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY && nh.n_namesz == 4 &&
                !memcmp(p + ph.p_offset + o + sizeof(nh), "Xen", 4))
                return true;
            o += sizeof(nh) + name + desc;
        }
    }
    return false;
}

int pvh_unpack(const uint8_t *img, size_t n, struct buf *out)
{
    /* the boot protocol's header: "HdrS", version 2.08 or later for the
     * payload's place (Documentation/arch/x86/boot.rst in the kernel) */
    if (n < 0x250 || memcmp(img + 0x202, "HdrS", 4) || (img[0x206] | img[0x207] << 8) < 0x208)
        return -ENOEXEC;
    size_t setup = ((size_t)(img[0x1f1] ? img[0x1f1] : 4) + 1) * 512;
    uint32_t poff, plen;
    memcpy(&poff, img + 0x248, 4);
    memcpy(&plen, img + 0x24c, 4);
    if (setup > n || poff > n - setup || plen > n - setup - poff || plen < 8)
        return -ENOEXEC;
    const uint8_t *p = img + setup + poff;
    static const struct {
        const char *magic;
        size_t len;
        int (*unpack)(const uint8_t *, size_t, size_t, struct buf *);
    } formats[] = {
        {"\x1f\x8b", 2, unpack_gzip},
        {"\xfd"
         "7zXZ\0",
         6, unpack_xz},
        {"\x28\xb5\x2f\xfd", 4, unpack_zstd},
        {"\x02\x21\x4c\x18", 4, unpack_lz4},
    };
    for (size_t i = 0; i < ARRAY_SIZE(formats); i++) {
        if (memcmp(p, formats[i].magic, formats[i].len))
            continue;
        /* The build appends the unpacked size (gzip's trailer has it too);
         * the payload must unpack to exactly that. */
        const uint8_t *e = p + plen - 4;
        uint32_t size =
            (uint32_t)e[0] | (uint32_t)e[1] << 8 | (uint32_t)e[2] << 16 | (uint32_t)e[3] << 24;
        if (size > PVH_MAX_ELF)
            return -EBADMSG;
        buf_consume(out, out->len);
        int r = formats[i].unpack(p, plen, size, out);
        if (r == 0 && out->len != size)
            r = -EBADMSG;
        if (r == 0 && !pvh_note((const uint8_t *)out->data, out->len))
            r = -ENOEXEC;
        return r;
    }
    return -ENOEXEC; /* bzip2, lzma, lzo: the firmware's loader it is */
}

char *pvh_kernel(const char *kernel)
{
    _cleanup_free_ char *root = kernel_cache_root();
    if (!root || !kernel)
        return NULL;
    struct sha256 *h = sha256_new();
    sha256_update_str(h, "pvh 1");
    cache_hash_file(h, kernel);
    char hex[65];
    sha256_final_hex(h, hex);
    _cleanup_free_ char *dir = xasprintf("%s/pvh", root);
    char *elf = xasprintf("%s/%.32s.elf", dir, hex);
    _cleanup_free_ char *none = xasprintf("%s/%.32s.none", dir, hex);
    /* used: the atime orders the trim (cache_trim) */
    if (cache_has(elf, false)) {
        cache_touch(elf);
        return elf;
    }
    if (cache_has(none, false)) {
        cache_touch(none);
        goto no;
    }
    if (mkdir_p(dir, 0700) < 0)
        goto no;
    struct buf img = BUF_INIT, out = BUF_INIT;
    int r = read_file(kernel, 256u << 20, &img);
    if (r == 0)
        r = pvh_unpack((const uint8_t *)img.data, img.len, &out);
    buf_release(&img);
    if (r == 0)
        r = write_file_atomic(elf, out.data, out.len, 0600);
    else if (r == -ENOEXEC || r == -EBADMSG) /* the file says no: remember it */
        write_file_atomic(none, "", 0, 0600);
    buf_release(&out);
    cache_trim(dir, PVH_KEEP * 2); /* a kernel has an .elf or a .none */
    if (r == 0)
        return elf;
no:
    free(elf);
    return NULL;
}
