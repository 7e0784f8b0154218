#include "evloop.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

int evloop_open(struct evloop *l, const char *what, uint64_t timer_data, uint64_t wake_data,
                struct pv_err *err)
{
    int r = 0;
    *l = (struct evloop)EVLOOP_INIT;
    if ((l->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        r = pv_err_set(err, errno, "%s: epoll_create1: %m", what);
    else if ((l->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)) < 0)
        r = pv_err_set(err, errno, "%s: timerfd_create: %m", what);
    else if ((l->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        r = pv_err_set(err, errno, "%s: eventfd: %m", what);
    struct epoll_event t = {.events = EPOLLIN, .data.u64 = timer_data};
    struct epoll_event w = {.events = EPOLLIN, .data.u64 = wake_data};
    if (r == 0 && (epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->timerfd, &t) < 0 ||
                   epoll_ctl(l->epfd, EPOLL_CTL_ADD, l->wakefd, &w) < 0))
        r = pv_err_set(err, errno, "%s: epoll_ctl: %m", what);
    if (r < 0)
        evloop_close(l);
    return r;
}

void evloop_close(struct evloop *l)
{
    int *fds[] = {&l->epfd, &l->timerfd, &l->wakefd};
    for (size_t i = 0; i < ARRAY_SIZE(fds); i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}

void evloop_wake(const struct evloop *l)
{
    uint64_t one = 1;
    if (write(l->wakefd, &one, sizeof(one)) < 0) {
        /* EAGAIN: a wake-up is pending already, which is all this asks */
    }
}

void evloop_set(const struct evloop *l, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev) < 0 && errno == ENOENT)
        epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int evloop_thread(void *(*fn)(void *), void *arg, const char *what, struct pv_err *err)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    int e = pthread_create(&t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e)
        return pv_err_set(err, e, "%s: starting its thread: %s", what, strerror(e));
    pthread_detach(t);
    return 0;
}
