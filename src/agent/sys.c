/* Raw system calls and the agent's own memory.
 *
 * PV_SYSCALL payload:
 *   u64 nr; u32 nargs (<= 6); nargs x i64 arg;
 *   u32 nbufs (<= 64); nbufs x bytes;                 buffers the agent allocates
 *   u32 nptrs; nptrs x {u32 buf, u32 slot};           arg[slot] = address of buf
 *   u32 nnested; nnested x {u32 parent, u32 child, u32 offset};
 *                                                     address of child written into
 *                                                     parent at offset (8 bytes, LE)
 * reply: i64 ret; u32 errno (0 unless ret == -1); u32 nbufs; nbufs x bytes (after the call).
 *
 * Each call runs on a worker thread, so a call that blocks (a read on a
 * pipe, a futex wait) never stalls the agent's loop; the thread sends the
 * reply itself (one wake-up of the loop less per call). Workers wait for the next call when done
 * (up to POOL_IDLE of them), because creating a thread costs more than the call; a call that finds
 * no idle worker gets a new one, so a blocked call never holds up the next. The agent is one
 * process: a file descriptor one call opens is valid in the next. */
#include <fcntl.h>
#include <linux/random.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>

#include "agent.h"

struct sys_job {
    struct sys_job *next;
    struct agent *agent;
    uint32_t id;
    long nr, args[PV_SYS_MAX_ARGS];
    uint32_t nbufs;
    char *bufs[PV_SYS_MAX_BUFS];
    size_t lens[PV_SYS_MAX_BUFS];
};

#define POOL_IDLE 8
#define POOL_MAX 64

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static struct sys_job *todo, **todo_tail = &todo;
static int ntodo, idle, running;
static int done_fd = -1;

int sys_pollfd(void)
{
    if (done_fd < 0)
        done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return done_fd;
}

static void job_free(struct sys_job *j)
{
    for (uint32_t i = 0; i < j->nbufs; i++)
        free(j->bufs[i]);
    free(j);
}

/* Make the call and send its reply. */
static void job_run(struct sys_job *j)
{
    errno = 0;
    long ret =
        syscall(j->nr, j->args[0], j->args[1], j->args[2], j->args[3], j->args[4], j->args[5]);
    int err = ret == -1 ? errno : 0;
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_i64(&w, ret);
    pv_put_u32(&w, (uint32_t)err);
    pv_put_u32(&w, j->nbufs);
    for (uint32_t i = 0; i < j->nbufs; i++)
        pv_put_bytes(&w, j->bufs[i], j->lens[i]);
    bool left = agent_send_from_thread(j->agent, j->id, &b);
    buf_release(&b);
    job_free(j);
    pthread_mutex_lock(&lock);
    running--;
    pthread_mutex_unlock(&lock);
    if (left) { /* the loop sends the rest */
        uint64_t one = 1;
        (void)!write(done_fd, &one, sizeof(one));
    }
}

/* Take calls off the queue; wait for more while fewer than POOL_IDLE wait. */
static void *worker(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        if (todo) {
            struct sys_job *j = todo;
            todo = j->next;
            if (!todo)
                todo_tail = &todo;
            ntodo--;
            pthread_mutex_unlock(&lock);
            job_run(j);
            pthread_mutex_lock(&lock);
            continue;
        }
        if (idle >= POOL_IDLE)
            break;
        idle++;
        while (!todo)
            pthread_cond_wait(&wake, &lock);
        idle--;
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

/* Queue a call; make sure some worker is free to take it. */
static int submit(struct sys_job *j)
{
    int e = 0;
    pthread_mutex_lock(&lock);
    if (running >= POOL_MAX) {
        pthread_mutex_unlock(&lock);
        return EAGAIN;
    }
    running++;
    j->next = NULL;
    *todo_tail = j;
    todo_tail = &j->next;
    ntodo++;
    if (ntodo > idle) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        e = pthread_create(&t, &attr, worker, NULL);
        pthread_attr_destroy(&attr);
        if (e) { /* take it back */
            struct sys_job **pp = &todo;
            while (*pp != j)
                pp = &(*pp)->next;
            *pp = NULL;
            todo_tail = pp;
            ntodo--;
            running--;
        }
    }
    pthread_cond_signal(&wake);
    pthread_mutex_unlock(&lock);
    return e;
}

void sys_completions(struct agent *a)
{
    (void)a;
    uint64_t n;
    (void)!read(done_fd, &n, sizeof(n));
}

int agent_op_syscall(struct agent *a, uint32_t id, struct pv_rd *r)
{
    struct sys_job *j = xcalloc(1, sizeof(*j));
    j->agent = a;
    j->id = id;
    j->nr = (long)pv_get_u64(r);
    uint32_t nargs = pv_get_count(r, 8);
    if (nargs > PV_SYS_MAX_ARGS)
        goto bad;
    for (uint32_t i = 0; i < nargs; i++)
        j->args[i] = (long)pv_get_i64(r);
    uint32_t nbufs = pv_get_count(r, 4);
    if (nbufs > PV_SYS_MAX_BUFS)
        goto bad;
    for (uint32_t i = 0; i < nbufs; i++) {
        size_t n;
        const void *p = pv_get_bytes(r, &n);
        /* +8: a nested pointer may sit at the very end of a buffer */
        j->bufs[i] = xcalloc(1, n + 8);
        memcpy(j->bufs[i], p, n);
        j->lens[i] = n;
        j->nbufs = i + 1;
    }
    uint32_t nptrs = pv_get_count(r, 8);
    for (uint32_t i = 0; i < nptrs && !r->bad; i++) {
        uint32_t buf = pv_get_u32(r), slot = pv_get_u32(r);
        if (buf >= j->nbufs || slot >= PV_SYS_MAX_ARGS)
            goto bad;
        j->args[slot] = (long)j->bufs[buf];
    }
    uint32_t nnested = pv_get_count(r, 12);
    for (uint32_t i = 0; i < nnested && !r->bad; i++) {
        uint32_t parent = pv_get_u32(r), child = pv_get_u32(r), off = pv_get_u32(r);
        if (parent >= j->nbufs || child >= j->nbufs || (uint64_t)off + 8 > j->lens[parent])
            goto bad;
        uint64_t addr = (uint64_t)(uintptr_t)j->bufs[child];
        memcpy(j->bufs[parent] + off, &addr, sizeof(addr));
    }
    if (pv_rd_done(r) < 0)
        goto bad;
    int e = submit(j);
    if (e) {
        job_free(j);
        return -e;
    }
    return 0;
bad:
    if (!r->bad) {
        r->bad = true;
        r->why = "a buffer index, argument slot or offset out of range";
    }
    job_free(j);
    return -EBADMSG;
}

/* The agent's own memory through process_vm_*: a bad address is EFAULT,
 * never a crash. */
int agent_op_read_mem(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint64_t addr = pv_get_u64(r);
    uint32_t len = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (len > PV_CHUNK * 4)
        return -E2BIG;
    _cleanup_free_ char *data = xmalloc(len ? len : 1);
    struct iovec local = {data, len}, remote = {(void *)(uintptr_t)addr, len};
    ssize_t n = len ? process_vm_readv(getpid(), &local, 1, &remote, 1, 0) : 0;
    if (n < 0)
        return -errno;
    agent_reply_bytes(a, id, data, (size_t)n);
    return 0;
}

int agent_op_write_mem(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint64_t addr = pv_get_u64(r);
    size_t len;
    const void *data = pv_get_bytes(r, &len);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    struct iovec local = {(void *)data, len}, remote = {(void *)(uintptr_t)addr, len};
    ssize_t n = len ? process_vm_writev(getpid(), &local, 1, &remote, 1, 0) : 0;
    if (n < 0)
        return -errno;
    agent_reply_u32(a, id, (uint32_t)n);
    return 0;
}

/* The guest's realtime clock (VM-wide): get, set, or advance by a signed
 * amount; replies with the time afterwards. */
/* Set CLOCK_REALTIME to t ns since the epoch (before it too). */
static int set_realtime(int64_t t)
{
    struct timespec ts;
    /* floor division, so times before the epoch work too */
    ts.tv_sec = (time_t)(t / 1000000000LL - (t % 1000000000LL < 0));
    ts.tv_nsec = (long)(t - (int64_t)ts.tv_sec * 1000000000LL);
    return clock_settime(CLOCK_REALTIME, &ts) < 0 ? -errno : 0;
}

int agent_op_clock(struct agent *a, uint32_t id, struct pv_rd *r)
{
    uint32_t op = pv_get_u32(r);
    int64_t ns = pv_get_i64(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (op > PV_CLOCK_ADVANCE)
        return -EINVAL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    if (op) {
        int ret = set_realtime(op == PV_CLOCK_SET ? ns : now + ns);
        if (ret < 0)
            return ret;
        clock_gettime(CLOCK_REALTIME, &ts);
        now = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
    agent_reply_u64(a, id, (uint64_t)now);
    return 0;
}

/* Credit seed to the kernel's pool and make the CRNG take it now, so
 * what the guest draws after a resume differs from what the cached boot
 * would have drawn. A kernel without RNDRESEEDCRNG (before 4.17) reseeds
 * at its next interval. */
static int reseed(const void *seed, size_t len)
{
    if (len > 512)
        return -EINVAL;
    _cleanup_close_ int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct {
        struct rand_pool_info info;
        uint32_t buf[128];
    } p;
    p.info.entropy_count = (int)len * 8;
    p.info.buf_size = (int)len;
    memcpy(p.buf, seed, len);
    if (ioctl(fd, RNDADDENTROPY, &p) < 0)
        return -errno;
    if (ioctl(fd, RNDRESEEDCRNG) < 0 && errno != ENOTTY && errno != EINVAL)
        return -errno;
    return 0;
}

/* One of the boot's files, as the initrd would have held it: parents made
 * 0755, the file replaced, its mode exact. */
static int put_boot_file(const char *path, uint32_t mode, const void *data, size_t len)
{
    _cleanup_free_ char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        int ret = mkdir_p(dir, 0755);
        if (ret < 0)
            return ret;
    }
    _cleanup_close_ int fd =
        open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOCTTY, (mode_t)(mode & 07777));
    if (fd < 0)
        return -errno;
    int ret = write_all(fd, data, len);
    if (ret == 0 && fchmod(fd, (mode_t)(mode & 07777)) < 0)
        ret = -errno;
    return ret;
}

int agent_op_freshen(struct agent *a, uint32_t id, struct pv_rd *r)
{
    int64_t now = pv_get_i64(r);
    size_t seed_len;
    const void *seed = pv_get_bytes(r, &seed_len);
    /* each file is at least an empty path, a mode and empty content */
    uint32_t n = pv_get_count(r, 13);
    if (r->bad)
        return -EBADMSG;
    if (seed_len > 512)
        return -EINVAL;
    /* the whole request is checked before anything is done */
    struct pv_rd files = *r;
    bool relative = false;
    for (uint32_t i = 0; i < n; i++) {
        const char *path = pv_get_str(r);
        pv_get_u32(r);
        size_t len;
        pv_get_bytes(r, &len);
        relative |= path && path[0] != '/';
    }
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    if (relative)
        return -EINVAL;
    int ret = set_realtime(now);
    if (ret < 0) {
        agent_send_err(a, id, -ret, "setting the clock: %s", strerror(-ret));
        return 0;
    }
    if (seed_len && (ret = reseed(seed, seed_len)) < 0) {
        agent_send_err(a, id, -ret, "reseeding the RNG: %s", strerror(-ret));
        return 0;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *path = pv_get_str(&files);
        uint32_t mode = pv_get_u32(&files);
        size_t len;
        const void *data = pv_get_bytes(&files, &len);
        if ((ret = put_boot_file(path, mode, data, len)) < 0) {
            agent_send_err(a, id, -ret, "writing %s: %s", path, strerror(-ret));
            return 0;
        }
    }
    agent_send_ok(a, id, NULL);
    return 0;
}
