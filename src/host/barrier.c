#include "barrier.h"

#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>

/* Packets, at most BARRIER_PKT bytes. File to runner: "A<count> <name>"
 * (arrive), "T<name>" (my wait timed out). Runner to file: "G" (go),
 * "E<message>" (an error), "T<who arrived>" (the answer to a T). Each A
 * gets exactly one G or E; a T gets a T, or nothing when its G was already
 * sent (the file reads that G). */
#define BARRIER_PKT 4096

int barrier_fd = -1;

static int send_pkt(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int send_pkt(int fd, const char *fmt, ...)
{
    char pkt[BARRIER_PKT];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(pkt, sizeof(pkt), fmt, ap);
    va_end(ap);
    n = MIN(n, (int)sizeof(pkt) - 1);
    return send(fd, pkt, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -errno;
}

/* The next packet within ms (-1: no limit): its length, or -errno. A
 * signal (a child of the file's process ending) does not cut the wait. */
static ssize_t recv_pkt(char *pkt, int ms)
{
    int64_t until = ms < 0 ? 0 : now_ns() + (int64_t)ms * 1000000;
    for (;;) {
        struct pollfd p = {barrier_fd, POLLIN, 0};
        int left = ms < 0 ? -1 : (int)MAX(0, (until - now_ns()) / 1000000);
        int r = poll(&p, 1, left);
        if (r == 0)
            return -ETIMEDOUT;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        ssize_t n = recv(barrier_fd, pkt, BARRIER_PKT - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n == 0 ? -EPIPE : -errno;
        pkt[n] = 0;
        return n;
    }
}

int barrier_wait(const char *name, long count, double timeout, struct pv_err *err)
{
    if (count == 1)
        return 0;
    if (barrier_fd < 0)
        return pv_err_set(err, EPIPE,
                          "barrier `%s` wants %ld files, but this process was not started by "
                          "provium's runner (a REPL, a fixture build): nothing else can arrive",
                          name, count);
    if (strlen(name) > 512)
        return pv_err_set(err, EINVAL, "barrier names are at most 512 bytes");
    int r = send_pkt(barrier_fd, "A%ld %s", count, name);
    if (r < 0)
        return pv_err_set(err, -r, "barrier `%s`: telling the runner: %s", name, strerror(-r));
    char pkt[BARRIER_PKT];
    ssize_t n = recv_pkt(pkt, timeout > 2e9 / 1000 ? -1 : (int)(timeout * 1000));
    if (n == -ETIMEDOUT) {
        send_pkt(barrier_fd, "T%s", name);
        n = recv_pkt(pkt, 5000);
        if (n > 0 && pkt[0] == 'T')
            return pv_err_set(err, ETIMEDOUT, "barrier `%s` timed out after %gs: %s", name, timeout,
                              pkt + 1);
    }
    if (n < 0)
        return pv_err_set(err, (int)-n, "barrier `%s`: the runner: %s", name, strerror((int)-n));
    if (pkt[0] == 'G')
        return 0;
    return pv_err_set(err, pkt[0] == 'E' && !strncmp(pkt + 1, ": count", 7) ? EINVAL : EPIPE,
                      "barrier `%s`%s", name,
                      pkt[0] == 'E' ? pkt + 1 : ": a bad answer from the runner");
}

/* ---- the runner's side ---- */

struct barrier {
    char *name;
    long count;
    size_t n;
    int fds[64];
    char *who[64];
};

static struct barrier *bars;
static size_t nbars;
static size_t files_left = SIZE_MAX; /* the run's files that have not ended */

/* "a.test.lua, b.test.lua" */
static void arrived(const struct barrier *b, char *out, size_t len)
{
    size_t k = 0;
    out[0] = 0;
    for (size_t i = 0; i < b->n && k + 1 < len; i++)
        k += (size_t)snprintf(out + k, len - k, "%s%s", i ? ", " : "", b->who[i]);
}

static void drop(size_t i)
{
    struct barrier *b = &bars[i];
    for (size_t k = 0; k < b->n; k++)
        free(b->who[k]);
    free(b->name);
    bars[i] = bars[--nbars];
}

/* Release every waiter of barrier i with packet kind and text, and drop it. */
static void release(size_t i, const char *text)
{
    struct barrier *b = &bars[i];
    for (size_t k = 0; k < b->n; k++)
        send_pkt(b->fds[k], text ? "E%s" : "G", text);
    drop(i);
}

/* The barriers that need more files than the run has left. */
static void check_left(void)
{
    for (size_t i = 0; i < nbars;) {
        struct barrier *b = &bars[i];
        if ((size_t)b->count <= files_left) {
            i++;
            continue;
        }
        char who[2048], msg[3072];
        arrived(b, who, sizeof(who));
        snprintf(msg, sizeof(msg),
                 " cannot complete: it wants %ld files, %zu arrived (%s), and no other file of "
                 "the run is left to arrive",
                 b->count, b->n, who);
        release(i, msg);
    }
}

static struct barrier *find(const char *name, size_t *ret_i)
{
    for (size_t i = 0; i < nbars; i++)
        if (!strcmp(bars[i].name, name)) {
            *ret_i = i;
            return &bars[i];
        }
    return NULL;
}

void barrier_packet(int fd, const char *who, const char *pkt, size_t len)
{
    char text[BARRIER_PKT];
    memcpy(text, pkt, MIN(len, sizeof(text) - 1));
    text[MIN(len, sizeof(text) - 1)] = 0;
    size_t i;
    if (text[0] == 'T') {
        struct barrier *b = find(text + 1, &i);
        for (size_t k = 0; b && k < b->n; k++) {
            if (b->fds[k] != fd)
                continue;
            char names[2048];
            arrived(b, names, sizeof(names));
            send_pkt(fd, "T%zu of %ld arrived (%s)", b->n, b->count, names);
            free(b->who[k]);
            b->fds[k] = b->fds[b->n - 1];
            b->who[k] = b->who[--b->n];
            if (!b->n)
                drop(i);
            return;
        }
        return; /* released already: the file reads its G */
    }
    char *name = NULL;
    long count = strtol(text + 1, &name, 10);
    if (text[0] != 'A' || *name != ' ' || count < 2 || count > 64) {
        send_pkt(fd, "E: a bad request (counts are 1 to 64)");
        return;
    }
    name++;
    struct barrier *b = find(name, &i);
    if (b && b->count != count) {
        char names[2048];
        arrived(b, names, sizeof(names));
        send_pkt(fd, "E: count %ld differs from the %ld of the files waiting (%s)", count, b->count,
                 names);
        return;
    }
    if (!b) {
        bars = xrealloc(bars, (nbars + 1) * sizeof(*bars));
        b = &bars[nbars];
        i = nbars++;
        *b = (struct barrier){.name = xstrdup(name), .count = count};
    }
    b->fds[b->n] = fd;
    b->who[b->n++] = xstrdup(who);
    if ((long)b->n == b->count)
        release(i, NULL);
    else
        check_left();
}

size_t barrier_waiting(void)
{
    size_t n = 0;
    for (size_t i = 0; i < nbars; i++)
        n += bars[i].n;
    return n;
}

void barrier_file_ended(int fd, size_t left)
{
    files_left = left;
    for (size_t i = 0; fd >= 0 && i < nbars; i++) {
        struct barrier *b = &bars[i];
        for (size_t k = 0; k < b->n; k++) {
            if (b->fds[k] != fd)
                continue;
            free(b->who[k]);
            b->fds[k] = b->fds[b->n - 1];
            b->who[k] = b->who[--b->n];
            break;
        }
    }
    for (size_t i = 0; i < nbars;) {
        if (bars[i].n == 0)
            drop(i);
        else
            i++;
    }
    check_left();
}
