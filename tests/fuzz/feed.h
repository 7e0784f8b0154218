/* For fuzz targets that play a peer of the host over a socketpair: a
 * thread writes the whole input to one end (as much as the host reads, no
 * cap), then shuts it for writing, so every wait of the host ends at EOF. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct fuzz_feed {
    int host, peer; /* host: the end the code under test reads */
    const uint8_t *data;
    size_t size, off; /* off: written before the thread started */
    bool threaded;
    pthread_t thread;
};

/* Write from off on; blocking unless dontwait. Returns where it stopped. */
static size_t fuzz_feed_write(struct fuzz_feed *f, size_t off, bool dontwait)
{
    while (off < f->size) {
        /* MSG_NOSIGNAL: once the host closed its end, the send fails */
        ssize_t w = send(f->peer, f->data + off, f->size - off,
                         MSG_NOSIGNAL | (dontwait ? MSG_DONTWAIT : 0));
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    return off;
}

static void fuzz_feed_end(struct fuzz_feed *f)
{
    /* The peer stays open for reading, so that the host's requests still
     * have somewhere to go. */
    shutdown(f->peer, SHUT_WR);
}

static void *fuzz_feed_main(void *arg)
{
    struct fuzz_feed *f = arg;
    fuzz_feed_write(f, f->off, false); /* the host's reads pace it */
    fuzz_feed_end(f);
    return NULL;
}

/* What the socket takes at once goes now; a thread writes the rest (a
 * thread per input costs more than the whole run of a small one). */
static void fuzz_feed_start(struct fuzz_feed *f, const uint8_t *data, size_t size)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    *f = (struct fuzz_feed){.host = sv[0], .peer = sv[1], .data = data, .size = size};
    f->off = fuzz_feed_write(f, 0, true);
    if (f->off == size) {
        fuzz_feed_end(f);
        return;
    }
    f->threaded = true;
    if (pthread_create(&f->thread, NULL, fuzz_feed_main, f))
        abort();
}

/* After the host closed f->host (a writer still blocked then fails). */
static void fuzz_feed_join(struct fuzz_feed *f)
{
    if (f->threaded)
        pthread_join(f->thread, NULL);
    close(f->peer);
}
