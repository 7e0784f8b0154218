/* A disk's image as the guest and the host see it: the image file alone,
 * or (a disk restored from a snapshot) a read-only base, the frozen disk
 * of the snapshot, under a sparse overlay of this restore's own that holds
 * every sector written since (docs/snapshots.md#disks). A bitmap of the
 * written sectors says which file a sector is read from. And freezing a
 * disk's view into a new sparse file, which a snapshot keeps. Called
 * locked (disk_priv.h). */
#include "disk/disk_priv.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>

static bool written(const struct dk_disk *d, uint64_t s)
{
    return d->written[s / 64] >> (s % 64) & 1;
}

static void mark(struct dk_disk *d, uint64_t off, uint64_t len)
{
    for (uint64_t s = off / DISK_SECTOR; s < (off + len + DISK_SECTOR - 1) / DISK_SECTOR; s++)
        d->written[s / 64] |= 1ull << (s % 64);
}

/* The run of sectors from byte off that all come from one file: its end
 * (at most off + len), and in *ret_over whether that file is the overlay. */
static uint64_t run_end(const struct dk_disk *d, uint64_t off, uint64_t len, bool *ret_over)
{
    uint64_t s = off / DISK_SECTOR, end = off + len;
    bool over = written(d, s);
    while ((s + 1) * DISK_SECTOR < end && written(d, s + 1) == over)
        s++;
    *ret_over = over;
    return MIN((s + 1) * DISK_SECTOR, end);
}

int dk_img_read(const struct dk_disk *d, void *p, size_t len, uint64_t off)
{
    if (d->base_fd < 0)
        return dk_pread_all(d->fd, p, len, off);
    for (uint64_t at = off; at < off + len;) {
        bool over;
        uint64_t end = run_end(d, at, off + len - at, &over);
        int r = dk_pread_all(over ? d->fd : d->base_fd, (char *)p + (at - off), end - at, at);
        if (r < 0)
            return r;
        at = end;
    }
    return 0;
}

/* Before a write that covers the sector of byte at only in part: the
 * sector copied from the base into the overlay, if it is not there yet,
 * so that its other bytes stay. */
static int own_sector(struct dk_disk *d, uint64_t at)
{
    uint64_t s = at / DISK_SECTOR;
    if (written(d, s))
        return 0;
    unsigned char sec[DISK_SECTOR];
    int r = dk_pread_all(d->base_fd, sec, sizeof(sec), s * DISK_SECTOR);
    if (r == 0)
        r = dk_pwrite_all(d->fd, sec, sizeof(sec), s * DISK_SECTOR);
    if (r == 0)
        mark(d, s * DISK_SECTOR, DISK_SECTOR);
    return r;
}

static int own_ends(struct dk_disk *d, uint64_t off, uint64_t len)
{
    int r = 0;
    if (len && off % DISK_SECTOR)
        r = own_sector(d, off);
    if (r == 0 && len && (off + len) % DISK_SECTOR)
        r = own_sector(d, off + len - 1);
    return r;
}

int dk_img_write(struct dk_disk *d, const void *p, size_t len, uint64_t off)
{
    if (d->base_fd < 0)
        return dk_pwrite_all(d->fd, p, len, off);
    int r = own_ends(d, off, len);
    if (r == 0)
        r = dk_pwrite_all(d->fd, p, len, off);
    if (r == 0)
        mark(d, off, len);
    return r;
}

int dk_img_zero(struct dk_disk *d, uint64_t off, uint64_t len, bool may_punch)
{
    if (d->base_fd < 0)
        return dk_zero_range(d->fd, off, len, may_punch);
    /* a hole in the overlay reads as zeroes once its sectors are marked */
    int r = own_ends(d, off, len);
    if (r == 0)
        r = dk_zero_range(d->fd, off, len, true);
    if (r == 0)
        mark(d, off, len);
    return r;
}

void dk_img_trim(struct dk_disk *d, uint64_t off, uint64_t len)
{
    /* advisory: a file system that cannot punch holes keeps the data; over
     * a base, a hole would show the base's bytes again, so zeroes */
    if (d->base_fd < 0)
        fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
    else
        dk_img_zero(d, off, len, true);
}

/* Copy [off, off + len) of in to out at the same place: copy_file_range
 * where the kernel can (ext4 copies inside the kernel, XFS and btrfs share
 * the blocks), read and write otherwise. */
static int copy_range(int in, int out, uint64_t off, uint64_t len)
{
    enum { BUF = 1 << 20 };
    _cleanup_free_ char *buf = NULL; /* for the fallback only */
    while (len) {
        loff_t a = (loff_t)off, b = (loff_t)off;
        ssize_t n = copy_file_range(in, &a, out, &b, (size_t)MIN(len, 1ull << 30), 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 &&
            (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP)) {
            size_t m = (size_t)MIN(len, (uint64_t)BUF);
            if (!buf)
                buf = xmalloc(BUF);
            int r = dk_pread_all(in, buf, m, off);
            if (r == 0)
                r = dk_pwrite_all(out, buf, m, off);
            if (r < 0)
                return r;
            n = (ssize_t)m;
        } else if (n < 0) {
            return -errno;
        } else if (n == 0) {
            return 0; /* in ends here: the rest reads as zeroes in out too */
        }
        off += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return 0;
}

/* Every data extent of in (SEEK_DATA/SEEK_HOLE) within [from, to), into out. */
static int copy_extents(int in, int out, uint64_t from, uint64_t to)
{
    for (off_t at = (off_t)from; (uint64_t)at < to;) {
        off_t data = lseek(in, at, SEEK_DATA);
        if (data < 0)
            return errno == ENXIO ? 0 : -errno;
        if ((uint64_t)data >= to)
            return 0;
        off_t hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0)
            return -errno;
        uint64_t end = MIN((uint64_t)hole, to);
        int r = copy_range(in, out, (uint64_t)data, end - (uint64_t)data);
        if (r < 0)
            return r;
        at = (off_t)end;
    }
    return 0;
}

int dk_freeze(struct dk_disk *d, int out, uint64_t size)
{
    /* an image alone, nothing held: its blocks shared where the file
     * system can (btrfs, XFS), one ioctl */
    if (d->base_fd < 0 && TAILQ_EMPTY(&d->held) && ioctl(out, FICLONE, d->fd) == 0)
        return 0;
    if (ftruncate(out, (off_t)size) < 0)
        return -errno;
    int r = copy_extents(d->base_fd >= 0 ? d->base_fd : d->fd, out, 0, size);
    /* then the overlay's sectors over the base's: a run at a time (a hole
     * in the overlay is zeroes, so the copy's range is zeroed first) */
    for (uint64_t at = 0; r == 0 && d->base_fd >= 0 && at < size;) {
        bool over;
        uint64_t end = run_end(d, at, size - at, &over);
        if (over && (r = dk_zero_range(out, at, end - at, true)) == 0)
            r = copy_extents(d->fd, out, at, end);
        at = end;
    }
    /* and the writes a mediated disk holds (a flush that failed): the disk
     * as the guest sees it */
    if (r == 0)
        r = dk_apply_held(d, out);
    return r;
}
