#include "events.h"

#include <fcntl.h>
#include <msgpack.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#define MAX_CLIENTS 64

static struct {
    bool on;
    int file, out, listen; /* -1 when off */
    char *socket_path;
    dev_t socket_dev; /* the socket we bound there, so that we remove only it */
    ino_t socket_ino;
    int clients[MAX_CLIENTS];
    int nclients;
    int up; /* in a file's process: the pipe to the runner */
} ev = {.file = -1, .out = -1, .listen = -1, .up = -1};

bool events_enabled(void)
{
    return ev.on;
}

/* Make room at path for our socket: nothing there, or a stale socket (one
 * nobody listens on, left by a run that was killed). A file of another kind
 * or a socket in use is not ours to remove. */
static int clear_socket_path(const struct sockaddr_un *a, struct pv_err *err)
{
    const char *path = a->sun_path;
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT
                   ? 0
                   : pv_err_set(err, errno, "--events-socket %s: %s", path, strerror(errno));
    if (!S_ISSOCK(st.st_mode))
        return pv_err_set(err, EEXIST,
                          "--events-socket %s: exists and is not a socket; not "
                          "replacing it",
                          path);
    _cleanup_close_ int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0)
        return pv_err_set(err, errno, "--events-socket %s: socket: %s", path, strerror(errno));
    if (connect(c, (const struct sockaddr *)a, sizeof(*a)) == 0)
        return pv_err_set(err, EADDRINUSE,
                          "--events-socket %s: another process listens on it (another run?)", path);
    if (errno != ECONNREFUSED)
        return pv_err_set(err, errno, "--events-socket %s: %s", path, strerror(errno));
    if (unlink(path) < 0 && errno != ENOENT)
        return pv_err_set(err, errno, "--events-socket %s: removing the stale socket: %s", path,
                          strerror(errno));
    return 0;
}

/* Listen on path, mode 0600: the events name every test and VM of the run,
 * for this user only. */
static int listen_socket(const char *path, struct pv_err *err)
{
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(a.sun_path))
        return pv_err_set(err, ENAMETOOLONG, "--events-socket %s: path too long", path);
    strcpy(a.sun_path, path);
    int r = clear_socket_path(&a, err);
    if (r < 0)
        return r;
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return pv_err_set(err, errno, "--events-socket %s: socket: %s", path, strerror(errno));
    /* bind creates the file with the umask's mode; a socket's mode cannot be
     * set before it exists, and a chmod after leaves a window. The runner
     * has no other thread yet, so the process-wide umask is safe to change. */
    mode_t old = umask(0177);
    r = bind(fd, (struct sockaddr *)&a, sizeof(a));
    umask(old);
    if (r < 0)
        return pv_err_set(err, errno, "--events-socket %s: %s", path, strerror(errno));
    struct stat st;
    if (lstat(path, &st) < 0 || listen(fd, 16) < 0) {
        int e = errno;
        unlink(path);
        return pv_err_set(err, e, "--events-socket %s: %s", path, strerror(e));
    }
    ev.socket_dev = st.st_dev;
    ev.socket_ino = st.st_ino;
    ev.socket_path = xstrdup(path);
    return steal_fd(&fd);
}

int events_open(const char *save_path, bool to_stdout, const char *socket_path, struct pv_err *err)
{
    if (save_path) {
        ev.file = open(save_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (ev.file < 0)
            return pv_err_set(err, errno, "--save-events %s: %s", save_path, strerror(errno));
    }
    if (to_stdout)
        ev.out = STDOUT_FILENO;
    if (socket_path) {
        ev.listen = listen_socket(socket_path, err);
        if (ev.listen < 0) {
            int r = ev.listen;
            events_close();
            return r;
        }
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
    struct stat st;
    if (ev.socket_path && lstat(ev.socket_path, &st) == 0 && st.st_dev == ev.socket_dev &&
        st.st_ino == ev.socket_ino)
        unlink(ev.socket_path); /* still ours, not what someone put there since */
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
    json_t *e = json_pack("{s:I, s:s, s:o}", "ts", (json_int_t)wall_ns(), "kind", kind, "payload",
                          payload ? payload : json_object());
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
