#include "zpipe.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <zstd.h>

/* Wait until fd is ready, at most until the copy's deadline: a QEMU that
 * neither reads nor closes its end cannot hold the thread, nor its join. */
static int ready(const struct zpipe *z, int fd, short events)
{
    for (;;) {
        int64_t left = (z->deadline_ns - now_ns()) / 1000000;
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, (int)MIN(left, INT32_MAX));
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

static int put(const struct zpipe *z, int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n) {
        int r = ready(z, fd, POLLOUT);
        if (r < 0)
            return r;
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? -errno : -EPIPE;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int fail(struct zpipe *z, int r, const char *fmt, const char *detail)
{
    snprintf(z->why, sizeof(z->why), fmt, detail);
    return r;
}

static int copy_compress(struct zpipe *z)
{
    ZSTD_CCtx *c = ZSTD_createCCtx();
    if (!c)
        return fail(z, -ENOMEM, "%s", "no memory for zstd");
    ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel, 1);
    /* a damaged file then fails its restore, rather than feeding QEMU noise */
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    size_t inlen = ZSTD_CStreamInSize(), outlen = ZSTD_CStreamOutSize();
    char *ibuf = xmalloc(inlen), *obuf = xmalloc(outlen);
    int r = 0;
    for (bool last = false; !last && r == 0;) {
        int w = ready(z, z->in, POLLIN);
        if (w < 0) {
            r = fail(z, w, "%s",
                     w == -ETIMEDOUT ? "the stream stalled past its deadline" : strerror(-w));
            break;
        }
        ssize_t n = read(z->in, ibuf, inlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = fail(z, -errno, "reading the stream: %s", strerror(errno));
            break;
        }
        last = n == 0;
        z->bytes_in += (uint64_t)n;
        ZSTD_inBuffer in = {ibuf, (size_t)n, 0};
        for (bool done = false; !done && r == 0;) {
            ZSTD_outBuffer out = {obuf, outlen, 0};
            size_t left = ZSTD_compressStream2(c, &out, &in, last ? ZSTD_e_end : ZSTD_e_continue);
            if (ZSTD_isError(left))
                r = fail(z, -EIO, "zstd: %s", ZSTD_getErrorName(left));
            else if ((r = put(z, z->out, obuf, out.pos)) < 0)
                fail(z, r, "writing: %s", strerror(-r));
            z->bytes_out += out.pos;
            done = last ? left == 0 : in.pos == in.size;
        }
    }
    ZSTD_freeCCtx(c);
    free(ibuf);
    free(obuf);
    return r;
}

static int copy_decompress(struct zpipe *z)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    if (!d)
        return fail(z, -ENOMEM, "%s", "no memory for zstd");
    size_t inlen = ZSTD_DStreamInSize(), outlen = ZSTD_DStreamOutSize();
    char *ibuf = xmalloc(inlen), *obuf = xmalloc(outlen);
    int r = 0;
    size_t pending = 1; /* zstd's hint: 0 once a frame is complete */
    for (;;) {
        int w = ready(z, z->in, POLLIN);
        if (w < 0) {
            r = fail(z, w, "%s",
                     w == -ETIMEDOUT ? "the stream stalled past its deadline" : strerror(-w));
            break;
        }
        ssize_t n = read(z->in, ibuf, inlen);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = fail(z, -errno, "reading the snapshot: %s", strerror(errno));
            break;
        }
        if (n == 0) {
            if (pending)
                r = fail(z, -EBADMSG, "%s", "the compressed stream is cut short");
            break;
        }
        z->bytes_in += (uint64_t)n;
        ZSTD_inBuffer in = {ibuf, (size_t)n, 0};
        while (in.pos < in.size && r == 0) {
            ZSTD_outBuffer out = {obuf, outlen, 0};
            pending = ZSTD_decompressStream(d, &out, &in);
            if (ZSTD_isError(pending))
                r = fail(z, -EBADMSG, "zstd: %s", ZSTD_getErrorName(pending));
            else if ((r = put(z, z->out, obuf, out.pos)) < 0)
                fail(z, r, "writing: %s", strerror(-r));
            z->bytes_out += out.pos;
        }
        if (r)
            break;
    }
    ZSTD_freeDCtx(d);
    free(ibuf);
    free(obuf);
    return r;
}

static void *run(void *arg)
{
    struct zpipe *z = arg;
    z->result = z->compress ? copy_compress(z) : copy_decompress(z);
    close(z->in);
    close(z->out);
    return NULL;
}

int zpipe_start(struct zpipe *z, int in, int out, bool compress, int64_t deadline_ns,
                struct pv_err *err)
{
    *z = (struct zpipe){.in = in, .out = out, .compress = compress, .deadline_ns = deadline_ns};
    /* a bigger pipe: fewer hand-offs between the thread and QEMU */
    fcntl(compress ? in : out, F_SETPIPE_SZ, 1 << 20);
    int e = pthread_create(&z->thread, NULL, run, z);
    if (e) {
        close(in);
        close(out);
        return pv_err_set(err, e, "cannot start a thread: %s", strerror(e));
    }
    return 0;
}

int zpipe_join(struct zpipe *z, const char *what, struct pv_err *err)
{
    pthread_join(z->thread, NULL);
    if (z->result < 0)
        return pv_err_set(err, -z->result, "%s: %s", what, z->why);
    return 0;
}
