#include "events.h"

#include <fcntl.h>
#include <msgpack.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

#define MAX_CLIENTS 64

static struct {
    bool on;
    int file, out, listen; /* -1 when off */
    char *socket_path;
    int clients[MAX_CLIENTS];
    int nclients;
    int up; /* in a file's process: the pipe to the runner */
} ev = {.file = -1, .out = -1, .listen = -1, .up = -1};

bool events_enabled(void)
{
    return ev.on;
}

int events_open(const char *save_path, bool to_stdout, const char *socket_path,
                struct pv_err *err)
{
    if (save_path) {
        ev.file = open(save_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (ev.file < 0)
            return pv_err_set(err, errno, "--save-events %s: %s", save_path, strerror(errno));
    }
    if (to_stdout)
        ev.out = STDOUT_FILENO;
    if (socket_path) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        if (strlen(socket_path) >= sizeof(a.sun_path))
            return pv_err_set(err, ENAMETOOLONG, "--events-socket %s: path too long",
                              socket_path);
        strcpy(a.sun_path, socket_path);
        ev.listen = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        unlink(socket_path);
        if (ev.listen < 0 || bind(ev.listen, (struct sockaddr *)&a, sizeof(a)) < 0 ||
            listen(ev.listen, 16) < 0) {
            int e = errno;
            events_close();
            return pv_err_set(err, e, "--events-socket %s: %s", socket_path, strerror(e));
        }
        ev.socket_path = xstrdup(socket_path);
    }
    ev.on = ev.file >= 0 || ev.out >= 0 || ev.listen >= 0;
    return 0;
}

void events_child(int fd)
{
    /* the runner's outputs are the runner's: drop them without a word */
    if (ev.file >= 0)
        close(ev.file);
    if (ev.listen >= 0)
        close(ev.listen);
    for (int i = 0; i < ev.nclients; i++)
        close(ev.clients[i]);
    free(ev.socket_path);
    ev = (typeof(ev)){.file = -1, .out = -1, .listen = -1, .up = fd, .on = fd >= 0};
}

int events_pollfd(void)
{
    return ev.listen;
}

void events_accept(void)
{
    int c;
    while (ev.listen >= 0 && (c = accept4(ev.listen, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
        if (ev.nclients == MAX_CLIENTS) {
            close(c);
            continue;
        }
        ev.clients[ev.nclients++] = c;
    }
}

void events_restart(void)
{
    if (ev.file >= 0 && (ftruncate(ev.file, 0) < 0 || lseek(ev.file, 0, SEEK_SET) < 0)) {
        close(ev.file);
        ev.file = -1;
    }
}

void events_close(void)
{
    if (ev.file >= 0)
        close(ev.file);
    if (ev.listen >= 0)
        close(ev.listen);
    if (ev.socket_path)
        unlink(ev.socket_path);
    for (int i = 0; i < ev.nclients; i++)
        close(ev.clients[i]);
    free(ev.socket_path);
    ev = (typeof(ev)){.file = -1, .out = -1, .listen = -1, .up = -1};
}

json_t *events_amount(uint64_t memory, uint32_t cpus)
{
    return json_pack("{s:I, s:i}", "memory_bytes", (json_int_t)memory, "cpus", (int)cpus);
}

/* ---- msgpack ---- */

static void pack(msgpack_packer *pk, json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(j));
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            msgpack_pack_str_with_body(pk, k, strlen(k));
            pack(pk, v);
        }
        break;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(j));
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) pack(pk, v);
        break;
    }
    case JSON_STRING:
        msgpack_pack_str_with_body(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(j)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    case JSON_NULL: msgpack_pack_nil(pk); break;
    }
}

/* Write all of it, or give up on that output: false. */
static bool put(int fd, const void *p, size_t n, bool may_block)
{
    const char *s = p;
    while (n) {
        ssize_t w = may_block ? write(fd, s, n) : send(fd, s, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        s += w;
        n -= (size_t)w;
    }
    return true;
}

/* {ts, kind, payload} as one frame to every output. */
static void emit_frame(json_t *event)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    static const char *const keys[] = {"ts", "kind", "payload"};
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        msgpack_pack_str_with_body(&pk, keys[i], strlen(keys[i]));
        json_t *v = json_object_get(event, keys[i]);
        if (v)
            pack(&pk, v);
        else
            msgpack_pack_map(&pk, 0);
    }
    uint8_t len[4] = {(uint8_t)(sb.size >> 24), (uint8_t)(sb.size >> 16), (uint8_t)(sb.size >> 8),
                      (uint8_t)sb.size};
    struct buf frame = BUF_INIT;
    buf_add(&frame, len, 4);
    buf_add(&frame, sb.data, sb.size);
    if (ev.file >= 0 && !put(ev.file, frame.data, frame.len, true)) {
        close(ev.file);
        ev.file = -1;
    }
    if (ev.out >= 0 && !put(ev.out, frame.data, frame.len, true))
        ev.out = -1;
    /* a client that does not keep up is dropped: a half frame would break it */
    for (int i = 0; i < ev.nclients;) {
        if (put(ev.clients[i], frame.data, frame.len, false)) {
            i++;
            continue;
        }
        close(ev.clients[i]);
        ev.clients[i] = ev.clients[--ev.nclients];
    }
    buf_release(&frame);
    msgpack_sbuffer_destroy(&sb);
}

void events_emit(const char *kind, json_t *payload)
{
    if (!ev.on) {
        json_decref(payload);
        return;
    }
    json_t *e = json_pack("{s:I, s:s, s:o}", "ts", (json_int_t)wall_ns(), "kind", kind,
                          "payload", payload ? payload : json_object());
    if (ev.up >= 0) {
        char *s = json_dumps(e, JSON_COMPACT);
        if (s) {
            struct buf b = BUF_INIT;
            buf_adds(&b, s);
            buf_adds(&b, "\n");
            if (!put(ev.up, b.data, b.len, true)) {
                close(ev.up);
                ev.up = -1;
                ev.on = false;
            }
            buf_release(&b);
            free(s);
        }
    } else {
        emit_frame(e);
    }
    json_decref(e);
}

void events_forward(const char *line, size_t len)
{
    json_error_t je;
    /* a test's message may hold a NUL (a console excerpt): msgpack carries it */
    json_t *e = json_loadb(line, len, JSON_ALLOW_NUL, &je);
    if (json_is_object(e) && json_is_string(json_object_get(e, "kind")))
        emit_frame(e);
    json_decref(e);
}
