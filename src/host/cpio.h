/* An in-memory writer for "newc" (SVR4, magic 070701) cpio archives, the
 * format the kernel unpacks as an initramfs. The output is deterministic:
 * mtime 0, uid/gid 0, inode numbers counted from 1 in the order of the
 * calls, so the same calls give the same bytes. */
#pragma once

#include "util.h"

struct cpio {
    struct buf out; /* the archive so far; complete after cpio_finish() */
    uint32_t ino;   /* the last inode number handed out */
};

void cpio_init(struct cpio *c);
/* path: without a leading "/" (leading slashes are dropped), non-empty, and
 * parents are added before their children by the caller. mode: permission
 * bits (e.g. 0755); the type bits are added here. Directories get nlink 2,
 * everything else nlink 1. File data must be below 4 GiB (the format's
 * limit; larger aborts). */
void cpio_add_dir(struct cpio *c, const char *path, uint32_t mode);
void cpio_add_file(struct cpio *c, const char *path, uint32_t mode, const void *data, size_t len);
/* A symlink (mode 0777) whose content is target. */
void cpio_add_symlink(struct cpio *c, const char *path, const char *target);
/* Any other inode, mode including its type: S_IFCHR | 0600 with rdev 5:1
 * for /dev/console, S_IFIFO, S_IFBLK ... */
void cpio_add_node(struct cpio *c, const char *path, uint32_t mode_with_type, uint32_t rdev_major,
                   uint32_t rdev_minor);
/* Append the TRAILER!!! entry and pad the archive with zeros to a multiple
 * of 512 bytes. c->out.data / c->out.len are then the archive. */
void cpio_finish(struct cpio *c);
void cpio_release(struct cpio *c);
