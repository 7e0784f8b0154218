/* The event loop that the switch (net/) and the disk server (disk/) each
 * run in a thread of the file's process: epoll over their descriptors, a
 * timerfd for what is due later, an eventfd to wake the thread when the Lua
 * thread changed something (docs/architecture.md#the-switch). */
#pragma once

#include <stdint.h>

#include "util.h"

struct evloop {
    int epfd, timerfd, wakefd;
};
#define EVLOOP_INIT                                                                                \
    {                                                                                              \
        -1, -1, -1                                                                                 \
    }

/* The three descriptors (O_CLOEXEC, the timer and the wake-up non-blocking),
 * the timer and the wake-up in epoll with these data. On failure nothing is
 * left open; what names the owner in the message ("the switch"). */
int evloop_open(struct evloop *l, const char *what, uint64_t timer_data, uint64_t wake_data,
                struct pv_err *err);
void evloop_close(struct evloop *l);
void evloop_wake(const struct evloop *l);
/* fd in epoll for events, added or changed. */
void evloop_set(const struct evloop *l, int fd, uint32_t events, uint64_t data);
/* fn(arg) in a detached thread with every signal blocked: they are the Lua
 * thread's to handle, and EPIPE tells a writer whose reader left. */
int evloop_thread(void *(*fn)(void *), void *arg, const char *what, struct pv_err *err);
