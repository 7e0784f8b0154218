/* libFuzzer target for the event lines a file's process sends up its pipe
 * (events.c, events_forward): the input is split into lines as the runner
 * splits them, each is forwarded, and what reaches the stream (here a
 * memfd, as --save-events) must be whole frames: a 4-byte big-endian length
 * and one msgpack map {ts, kind, payload} of exactly that length, kind a
 * string. */
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "host/events.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int stream_fd = -1;

static void open_stream(void)
{
    if (stream_fd >= 0)
        return;
    stream_fd = memfd_create("fuzz-events", MFD_CLOEXEC);
    if (stream_fd < 0)
        abort();
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", stream_fd);
    struct pv_err err = {0};
    if (events_open(path, false, NULL, &err) < 0) {
        fprintf(stderr, "fuzz_events: %s\n", err.msg);
        abort();
    }
}

static bool is_key(const msgpack_object *o, const char *k)
{
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(k) &&
           !memcmp(o->via.str.ptr, k, o->via.str.size);
}

static void check_frame(const char *p, size_t n)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t used = 0;
    if (msgpack_unpack_next(&u, p, n, &used) != MSGPACK_UNPACK_SUCCESS || used != n)
        abort();
    const msgpack_object *m = &u.data;
    if (m->type != MSGPACK_OBJECT_MAP || m->via.map.size != 3)
        abort();
    static const char *const keys[] = {"ts", "kind", "payload"};
    for (size_t i = 0; i < 3; i++)
        if (!is_key(&m->via.map.ptr[i].key, keys[i]))
            abort();
    if (m->via.map.ptr[1].val.type != MSGPACK_OBJECT_STR)
        abort();
    msgpack_unpacked_destroy(&u);
}

static void check_stream(void)
{
    struct stat st;
    if (fstat(stream_fd, &st) < 0)
        abort();
    size_t n = (size_t)st.st_size;
    char *all = xmalloc(n + 1);
    if (pread(stream_fd, all, n, 0) != (ssize_t)n)
        abort();
    for (size_t off = 0; off < n;) {
        if (n - off < 4)
            abort();
        const uint8_t *h = (const uint8_t *)all + off;
        size_t len = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
        if (len > n - off - 4)
            abort();
        check_frame(all + off + 4, len);
        off += 4 + len;
    }
    free(all);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    open_stream();
    const char *text = (const char *)data;
    for (size_t off = 0; off < size;) {
        const char *nl = memchr(text + off, '\n', size - off);
        if (!nl)
            break; /* the runner waits for the rest of the line */
        size_t len = (size_t)(nl - text - off);
        events_forward(text + off, len);
        off += len + 1;
    }
    check_stream();
    events_restart(); /* the stream starts afresh for the next input */
    return 0;
}
