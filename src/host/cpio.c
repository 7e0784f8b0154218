#include "cpio.h"

#include <stdio.h>
#include <sys/stat.h>

#define CPIO_MAGIC "070701"
/* The magic and thirteen 8-digit hex fields. */
#define CPIO_HEADER_LEN 110

static void cpio_pad(struct cpio *c, size_t align)
{
    static const char zeros[512];
    size_t rem = c->out.len % align;
    if (rem)
        buf_add(&c->out, zeros, align - rem);
}

static void cpio_entry(struct cpio *c, const char *path, uint32_t ino, uint32_t mode,
                       uint32_t nlink, uint32_t rmajor, uint32_t rminor, const void *data,
                       size_t len)
{
    if (len > UINT32_MAX)
        abort(); /* newc has no way to say it; no initramfs file is that big */
    while (*path == '/')
        path++;
    size_t namesize = strlen(path) + 1;
    char hdr[CPIO_HEADER_LEN + 1];
    snprintf(hdr, sizeof(hdr), "%s%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X", CPIO_MAGIC,
             ino, mode, 0u /* uid */, 0u /* gid */, nlink, 0u /* mtime */, (uint32_t)len,
             0u /* devmajor */, 0u /* devminor */, rmajor, rminor, (uint32_t)namesize,
             0u /* check */);
    buf_add(&c->out, hdr, CPIO_HEADER_LEN);
    buf_add(&c->out, path, namesize); /* with its NUL */
    cpio_pad(c, 4);
    buf_add(&c->out, data, len);
    cpio_pad(c, 4);
}

void cpio_init(struct cpio *c)
{
    c->out = (struct buf)BUF_INIT;
    c->ino = 0;
}

void cpio_add_dir(struct cpio *c, const char *path, uint32_t mode)
{
    cpio_entry(c, path, ++c->ino, S_IFDIR | (mode & 07777), 2, 0, 0, NULL, 0);
}

void cpio_add_file(struct cpio *c, const char *path, uint32_t mode, const void *data, size_t len)
{
    cpio_entry(c, path, ++c->ino, S_IFREG | (mode & 07777), 1, 0, 0, data, len);
}

void cpio_add_symlink(struct cpio *c, const char *path, const char *target)
{
    cpio_entry(c, path, ++c->ino, S_IFLNK | 0777, 1, 0, 0, target, strlen(target));
}

void cpio_add_node(struct cpio *c, const char *path, uint32_t mode_with_type, uint32_t rdev_major,
                   uint32_t rdev_minor)
{
    cpio_entry(c, path, ++c->ino, mode_with_type, 1, rdev_major, rdev_minor, NULL, 0);
}

void cpio_finish(struct cpio *c)
{
    cpio_entry(c, "TRAILER!!!", 0, 0, 1, 0, 0, NULL, 0);
    cpio_pad(c, 512);
}

void cpio_release(struct cpio *c)
{
    buf_release(&c->out);
    c->ino = 0;
}
