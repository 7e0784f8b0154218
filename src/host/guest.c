/* Every agent request: encode, call, decode (see guest.h). The VM layer
 * (vm.c) owns the connection, the state checks and the deadlines; this file
 * owns what travels on it. */
#include "guest.h"

#include <stdio.h>
#include <string.h>

#include "vm.h"

void guest_who(const struct target *t, char *out, size_t n)
{
    if (t->worker)
        snprintf(out, n, "vm `%s` worker %llu", t->vm->name, (unsigned long long)t->worker);
    else
        snprintf(out, n, "vm `%s`", t->vm->name);
}

/* The agent's errno is the guest's answer, not a failure of the call. */
static int result(int r, struct pv_err *err)
{
    if (r > 0 && err)
        err->guest = true;
    return r > 0 ? -r : r;
}

static int bad_reply(const struct target *t, const char *op, struct pv_err *err)
{
    char who[128];
    guest_who(t, who, sizeof(who));
    return pv_err_set(err, EBADMSG, "%s: %s: malformed reply from the agent", who, op);
}

static int call(const struct target *t, const char *op, uint16_t type, const struct buf *req,
                double timeout_s, chan_chunk_fn fn, void *ctx, struct buf *reply,
                struct pv_err *err)
{
    return result(vm_call(t->vm, t->worker, op, type, req, timeout_s, fn, ctx, reply, err), err);
}

uint32_t guest_start(const struct target *t, const char *op, uint16_t type, const struct buf *req,
                     chan_chunk_fn fn, void *ctx, struct pv_err *err)
{
    return vm_start(t->vm, t->worker, op, type, req, fn, ctx, err);
}

int guest_finish(const struct target *t, uint32_t id, double timeout_s, struct buf *reply,
                 struct pv_err *err)
{
    return result(vm_finish(t->vm, id, timeout_s, reply, err), err);
}

void guest_drop(const struct target *t, uint32_t id)
{
    chan_drop(&t->vm->chan, id);
}

int guest_ping(const struct target *t, struct pv_err *err)
{
    return call(t, "ping", PV_PING, NULL, GUEST_SHORT_S, NULL, NULL, NULL, err);
}

int guest_test_misbehave(const struct target *t, uint32_t mode, uint64_t amount, uint32_t ms,
                         double timeout_s, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, mode);
    pv_put_u64(&w, amount);
    pv_put_u32(&w, ms);
    int r = call(t, "test_misbehave", PV_TEST_MISBEHAVE, &b, timeout_s, NULL, NULL, NULL, err);
    buf_release(&b);
    return r;
}

/* ---- processes ---- */

void guest_run_result_release(struct guest_run_result *r)
{
    buf_release(&r->out);
    buf_release(&r->err);
}

void guest_run_chunk(void *ctx, uint8_t stream, const void *p, size_t n)
{
    struct guest_run_result *res = ctx;
    struct buf *b = stream == PV_STDERR ? &res->err : &res->out;
    if (b->len + n <= GUEST_OUTPUT_CAP)
        buf_add(b, p, n);
}

void guest_encode_run(struct buf *b, const struct guest_run_req *req)
{
    struct pv_wr w = {b};
    pv_put_u32(&w, (req->env_clear ? PV_RUN_ENV_CLEAR : 0) | (req->pty ? PV_RUN_PTY : 0));
    size_t argc = 0, envc = 0;
    while (req->argv[argc])
        argc++;
    while (req->env && req->env[envc])
        envc++;
    pv_put_u32(&w, (uint32_t)argc);
    for (size_t i = 0; i < argc; i++)
        pv_put_str(&w, req->argv[i]);
    pv_put_u32(&w, (uint32_t)envc);
    for (size_t i = 0; i < envc; i++)
        pv_put_str(&w, req->env[i]);
    pv_put_str(&w, req->cwd);
    pv_put_bytes(&w, req->stdin_data, req->stdin_len);
    pv_put_u32(&w, req->timeout_ms);
    pv_put_u64(&w, req->output_cap ? req->output_cap : GUEST_OUTPUT_CAP);
    if (req->pty) { /* only then: a Run without is what it always was */
        pv_put_u32(&w, req->rows);
        pv_put_u32(&w, req->cols);
    }
}

/* The Run reply's fields, shared by Run, Wait and ProcStatus. */
static void get_status(struct pv_rd *rd, int *status, int *code, int *sig, uint64_t *out,
                       uint64_t *errb)
{
    *status = (int)pv_get_u32(rd);
    *code = (int32_t)pv_get_u32(rd);
    *sig = (int)pv_get_u32(rd);
    *out = pv_get_u64(rd);
    *errb = pv_get_u64(rd);
}

int guest_decode_status(const struct buf *reply, struct guest_run_result *res, struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    get_status(&rd, &res->status, &res->exit_code, &res->signal, &res->out_total, &res->err_total);
    if (pv_rd_done(&rd) < 0 || res->status < PV_EXITED || res->status > PV_TIMED_OUT)
        return pv_err_set(err, EBADMSG, "malformed exit status from the agent");
    return 0;
}

/* Run and Wait: the output as chunks, then the exit status. */
static int run_call(const struct target *t, const char *op, uint16_t type, const struct buf *req,
                    uint32_t timeout_ms, struct guest_run_result *res, struct pv_err *err)
{
    /* The agent enforces the timeout; the host waits a little longer.
     * Without one the command runs as long as the test allows. */
    double limit = timeout_ms ? timeout_ms / 1000.0 + GUEST_SHORT_S : 0;
    struct buf reply = BUF_INIT;
    int r = call(t, op, type, req, limit, guest_run_chunk, res, &reply, err);
    if (r == 0 && guest_decode_status(&reply, res, err) < 0)
        r = bad_reply(t, op, err);
    buf_release(&reply);
    return r;
}

int guest_run(const struct target *t, const struct guest_run_req *req, struct guest_run_result *res,
              struct pv_err *err)
{
    struct buf b = BUF_INIT;
    guest_encode_run(&b, req);
    int r = run_call(t, "run", PV_RUN, &b, req->timeout_ms, res, err);
    buf_release(&b);
    return r;
}

int guest_spawn(const struct target *t, const struct guest_run_req *req, uint64_t *ret_handle,
                uint32_t *ret_pid, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    guest_encode_run(&b, req);
    int r = call(t, "run_async", PV_SPAWN, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0) {
        struct pv_rd rd;
        pv_rd_init(&rd, reply.data, reply.len);
        *ret_handle = pv_get_u64(&rd);
        *ret_pid = pv_get_u32(&rd);
        if (pv_rd_done(&rd) < 0 || *ret_handle == 0)
            r = bad_reply(t, "run_async", err);
    }
    buf_release(&b);
    buf_release(&reply);
    return r;
}

int guest_wait(const struct target *t, uint64_t handle, uint32_t timeout_ms,
               struct guest_run_result *res, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, handle);
    pv_put_u32(&w, timeout_ms);
    int r = run_call(t, "proc:wait", PV_WAIT, &b, timeout_ms, res, err);
    buf_release(&b);
    return r;
}

int guest_signal(const struct target *t, uint64_t handle, uint32_t sig, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, handle);
    pv_put_u32(&w, sig);
    int r = call(t, "proc:kill", PV_SIGNAL, &b, GUEST_SHORT_S, NULL, NULL, NULL, err);
    buf_release(&b);
    return r;
}

int guest_decode_proc_status(const struct buf *reply, struct guest_proc_status *st,
                             struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    st->running = pv_get_u32(&rd) != 0;
    st->pid = pv_get_u32(&rd);
    get_status(&rd, &st->status, &st->exit_code, &st->signal, &st->out_total, &st->err_total);
    if (pv_rd_done(&rd) < 0 || st->status < PV_EXITED || st->status > PV_TIMED_OUT)
        return pv_err_set(err, EBADMSG, "malformed process status from the agent");
    return 0;
}

int guest_proc_status(const struct target *t, uint64_t handle, struct guest_proc_status *st,
                      struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, handle);
    int r = call(t, "proc:status", PV_PROC_STATUS, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0 && guest_decode_proc_status(&reply, st, err) < 0)
        r = bad_reply(t, "proc:status", err);
    buf_release(&b);
    buf_release(&reply);
    return r;
}

/* A reply that is one u32 (Stdin, FWrite) or one u64 (Open, Seek). */
static int get_u32_reply(const struct target *t, const char *op, const struct buf *reply,
                         uint32_t max, uint32_t *ret, struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    *ret = pv_get_u32(&rd);
    if (pv_rd_done(&rd) < 0 || *ret > max)
        return bad_reply(t, op, err);
    return 0;
}

static int get_u64_reply(const struct target *t, const char *op, const struct buf *reply,
                         uint64_t *ret, struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    *ret = pv_get_u64(&rd);
    return pv_rd_done(&rd) < 0 ? bad_reply(t, op, err) : 0;
}

int guest_power_button(const struct target *t, uint32_t *ret_state, struct pv_err *err)
{
    struct buf reply = BUF_INIT;
    int r = call(t, "power_button", PV_POWER_BUTTON, NULL, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0)
        r = get_u32_reply(t, "power_button", &reply, PV_BUTTON_INIT, ret_state, err);
    buf_release(&reply);
    return r;
}

int guest_stdin(const struct target *t, uint64_t handle, const void *data, size_t len, bool close,
                uint32_t *ret_accepted, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, handle);
    pv_put_bytes(&w, data, len);
    pv_put_u32(&w, close);
    const char *op = "proc:stdin_write";
    int r = call(t, op, PV_STDIN, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0)
        r = get_u32_reply(t, op, &reply, (uint32_t)MIN(len, UINT32_MAX), ret_accepted, err);
    buf_release(&b);
    buf_release(&reply);
    return r;
}

int guest_pty_resize(const struct target *t, uint64_t handle, uint16_t rows, uint16_t cols,
                     struct pv_err *err)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, handle);
    pv_put_u32(&w, rows);
    pv_put_u32(&w, cols);
    int r = call(t, "proc:resize", PV_PTY_RESIZE, &b, GUEST_SHORT_S, NULL, NULL, NULL, err);
    buf_release(&b);
    return r;
}

/* ---- files ---- */

struct read_ctx {
    struct buf *out;
    uint64_t max;
    bool too_big;
};

static void data_chunk(void *ctx, uint8_t stream, const void *p, size_t n)
{
    struct read_ctx *rc = ctx;
    if (stream != PV_DATA || rc->too_big)
        return;
    if (rc->out->len + n > rc->max)
        rc->too_big = true;
    else
        buf_add(rc->out, p, n);
}

void guest_encode_path(struct buf *b, const char *path)
{
    struct pv_wr w = {b};
    pv_put_str(&w, path);
}

int guest_read_file(const struct target *t, const char *path, uint64_t max, struct buf *out,
                    struct pv_err *err)
{
    struct buf b = BUF_INIT;
    guest_encode_path(&b, path);
    struct read_ctx rc = {out, max, false};
    int r = call(t, "read_file", PV_READ_FILE, &b, GUEST_FILE_S, data_chunk, &rc, NULL, err);
    buf_release(&b);
    if (r == 0 && rc.too_big) {
        char who[128];
        guest_who(t, who, sizeof(who));
        buf_release(out);
        return pv_err_set(err, EFBIG,
                          "%s: read_file: %s: larger than max_size (%llu bytes); pass "
                          "{max_size = N} to read more",
                          who, path, (unsigned long long)max);
    }
    return r;
}

void guest_encode_write_piece(struct buf *b, const char *path, const void *data, size_t len,
                              uint32_t mode, bool append, size_t off)
{
    struct pv_wr w = {b};
    uint32_t flags = PV_WR_CREATE;
    flags |= (off == 0 && !append) ? PV_WR_TRUNC : PV_WR_APPEND;
    if (off == 0 && mode != GUEST_DEFAULT_MODE)
        flags |= PV_WR_MODE;
    pv_put_str(&w, path);
    pv_put_u32(&w, mode);
    pv_put_u32(&w, flags);
    pv_put_bytes(&w, data, len);
}

int guest_write_file(const struct target *t, const char *path, const void *data, size_t len,
                     uint32_t mode, bool append, struct pv_err *err)
{
    size_t off = 0;
    int r;
    do {
        size_t n = MIN(len - off, GUEST_WRITE_PIECE);
        struct buf b = BUF_INIT;
        guest_encode_write_piece(&b, path, (const char *)data + off, n, mode, append, off);
        r = call(t, "write_file", PV_WRITE_FILE, &b, GUEST_FILE_S, NULL, NULL, NULL, err);
        buf_release(&b);
        off += n;
    } while (r == 0 && off < len);
    return r;
}

void guest_encode_stat(struct buf *b, const char *path, bool nofollow)
{
    struct pv_wr w = {b};
    pv_put_str(&w, path);
    pv_put_u32(&w, nofollow ? PV_STAT_NOFOLLOW : 0);
}

int guest_decode_stat(const struct buf *reply, struct guest_stat *st, struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    st->type = (int)pv_get_u32(&rd);
    st->perm = pv_get_u32(&rd);
    st->size = pv_get_u64(&rd);
    st->mtime_ns = pv_get_i64(&rd);
    st->uid = pv_get_u32(&rd);
    st->gid = pv_get_u32(&rd);
    st->ino = pv_get_u64(&rd);
    st->nlink = pv_get_u32(&rd);
    if (pv_rd_done(&rd) < 0)
        return pv_err_set(err, EBADMSG, "malformed Stat reply from the agent");
    if (st->type < PV_FT_FILE || st->type > PV_FT_OTHER)
        st->type = PV_FT_OTHER;
    return 0;
}

int guest_stat(const struct target *t, const char *path, bool nofollow, struct guest_stat *st,
               struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    guest_encode_stat(&b, path, nofollow);
    int r = call(t, "stat", PV_STAT, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0 && guest_decode_stat(&reply, st, err) < 0)
        r = bad_reply(t, "stat", err);
    buf_release(&b);
    buf_release(&reply);
    return r;
}

int guest_open(const struct target *t, const char *path, uint32_t bits, uint32_t perm,
               uint64_t *ret_handle, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_str(&w, path);
    pv_put_u32(&w, bits);
    pv_put_u32(&w, perm);
    int r = call(t, "open_file", PV_OPEN, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0)
        r = get_u64_reply(t, "open_file", &reply, ret_handle, err);
    buf_release(&b);
    buf_release(&reply);
    return r;
}

/* FRead and ReadMem: u64 what, u32 max -> bytes, at most max of them. */
static int bytes_call(const struct target *t, const char *op, uint16_t type, uint64_t what,
                      uint32_t max, struct buf *out, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, what);
    pv_put_u32(&w, max);
    int r = call(t, op, type, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0) {
        struct pv_rd rd;
        pv_rd_init(&rd, reply.data, reply.len);
        size_t n;
        const void *p = pv_get_bytes(&rd, &n);
        if (pv_rd_done(&rd) < 0 || n > max)
            r = bad_reply(t, op, err);
        else
            buf_add(out, p, n);
    }
    buf_release(&b);
    buf_release(&reply);
    return r;
}

int guest_fread(const struct target *t, uint64_t handle, uint32_t max, struct buf *out,
                struct pv_err *err)
{
    return bytes_call(t, "file:read", PV_FREAD, handle, MIN(max, GUEST_FREAD_MAX), out, err);
}

int guest_fwrite(const struct target *t, uint64_t handle, const void *data, size_t len,
                 uint32_t *ret_n, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    len = MIN(len, GUEST_FWRITE_MAX);
    pv_put_u64(&w, handle);
    pv_put_bytes(&w, data, len);
    int r = call(t, "file:write", PV_FWRITE, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0)
        r = get_u32_reply(t, "file:write", &reply, (uint32_t)len, ret_n, err);
    buf_release(&b);
    buf_release(&reply);
    return r;
}

int guest_seek(const struct target *t, uint64_t handle, int64_t off, uint32_t whence,
               uint64_t *ret_pos, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, handle);
    pv_put_i64(&w, off);
    pv_put_u32(&w, whence);
    int r = call(t, "file:seek", PV_SEEK, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0)
        r = get_u64_reply(t, "file:seek", &reply, ret_pos, err);
    buf_release(&b);
    buf_release(&reply);
    return r;
}

int guest_close(const struct target *t, uint64_t handle, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, handle);
    int r = call(t, "file:close", PV_CLOSE, &b, GUEST_SHORT_S, NULL, NULL, NULL, err);
    buf_release(&b);
    return r;
}

int guest_decode_listdir(const struct buf *reply,
                         void (*fn)(void *ctx, const struct guest_dirent *e), void *ctx,
                         struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    uint32_t n = pv_get_count(&rd, 9);
    for (uint32_t i = 0; i < n && !rd.bad; i++) {
        struct guest_dirent e = {.name = pv_get_str(&rd)};
        e.type = (int)pv_get_u32(&rd);
        if (e.type < PV_FT_FILE || e.type > PV_FT_OTHER)
            e.type = PV_FT_OTHER;
        if (!rd.bad)
            fn(ctx, &e);
    }
    if (pv_rd_done(&rd) < 0)
        return pv_err_set(err, EBADMSG, "malformed ListDir reply from the agent");
    return 0;
}

int guest_listdir(const struct target *t, const char *path, struct buf *reply, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    guest_encode_path(&b, path);
    int r = call(t, "listdir", PV_LISTDIR, &b, GUEST_SHORT_S, NULL, NULL, reply, err);
    buf_release(&b);
    return r;
}

void guest_encode_mkdir(struct buf *b, const char *path, uint32_t perm, bool parents)
{
    struct pv_wr w = {b};
    pv_put_str(&w, path);
    pv_put_u32(&w, perm);
    pv_put_u32(&w, parents ? 1 : 0);
}

int guest_mkdir(const struct target *t, const char *path, uint32_t perm, bool parents,
                struct pv_err *err)
{
    struct buf b = BUF_INIT;
    guest_encode_mkdir(&b, path, perm, parents);
    int r = call(t, "mkdir", PV_MKDIR, &b, GUEST_SHORT_S, NULL, NULL, NULL, err);
    buf_release(&b);
    return r;
}

int guest_unlink(const struct target *t, const char *path, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    guest_encode_path(&b, path);
    int r = call(t, "unlink", PV_UNLINK, &b, GUEST_SHORT_S, NULL, NULL, NULL, err);
    buf_release(&b);
    return r;
}

void guest_encode_rename(struct buf *b, const char *from, const char *to)
{
    struct pv_wr w = {b};
    pv_put_str(&w, from);
    pv_put_str(&w, to);
}

int guest_rename(const struct target *t, const char *from, const char *to, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    guest_encode_rename(&b, from, to);
    int r = call(t, "rename", PV_RENAME, &b, GUEST_SHORT_S, NULL, NULL, NULL, err);
    buf_release(&b);
    return r;
}

/* ---- system calls, memory, the clock ---- */

void guest_syscall_res_release(struct guest_syscall_res *res)
{
    for (uint32_t i = 0; i < res->nout; i++)
        buf_release(&res->out[i]);
    res->nout = 0;
}

void guest_encode_syscall(struct buf *b, const struct guest_syscall_req *req)
{
    struct pv_wr w = {b};
    pv_put_u64(&w, (uint64_t)req->nr);
    pv_put_u32(&w, req->nargs);
    for (uint32_t i = 0; i < req->nargs; i++)
        pv_put_i64(&w, req->args[i]);
    pv_put_u32(&w, req->nbufs);
    for (uint32_t i = 0; i < req->nbufs; i++)
        pv_put_bytes(&w, req->bufs[i], req->lens[i]);
    pv_put_u32(&w, req->nptrs);
    for (uint32_t i = 0; i < req->nptrs; i++) {
        pv_put_u32(&w, req->ptrs[i].buf);
        pv_put_u32(&w, req->ptrs[i].slot);
    }
    pv_put_u32(&w, req->nnested);
    for (uint32_t i = 0; i < req->nnested; i++) {
        pv_put_u32(&w, req->nested[i].parent);
        pv_put_u32(&w, req->nested[i].child);
        pv_put_u32(&w, req->nested[i].offset);
    }
}

int guest_decode_syscall(const struct buf *reply, struct guest_syscall_res *res, struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    res->ret = pv_get_i64(&rd);
    res->err = (int)pv_get_u32(&rd);
    uint32_t n = pv_get_count(&rd, 4);
    for (uint32_t i = 0; i < n && i < PV_SYS_MAX_BUFS && !rd.bad; i++) {
        size_t len;
        const void *p = pv_get_bytes(&rd, &len);
        buf_add(&res->out[i], p, len);
        res->nout = i + 1;
    }
    if (n > PV_SYS_MAX_BUFS || pv_rd_done(&rd) < 0 || res->err < 0 || res->err > 4095) {
        guest_syscall_res_release(res);
        return pv_err_set(err, EBADMSG, "malformed Syscall reply from the agent");
    }
    return 0;
}

uint32_t guest_syscall_start(const struct target *t, const struct guest_syscall_req *req,
                             struct pv_err *err)
{
    struct buf b = BUF_INIT;
    guest_encode_syscall(&b, req);
    uint32_t id = guest_start(t, "syscall", PV_SYSCALL, &b, NULL, NULL, err);
    buf_release(&b);
    return id;
}

int guest_syscall_finish(const struct target *t, uint32_t id, double timeout_s,
                         struct guest_syscall_res *res, struct pv_err *err)
{
    struct buf reply = BUF_INIT;
    int r = guest_finish(t, id, timeout_s, &reply, err);
    if (r == 0 && guest_decode_syscall(&reply, res, err) < 0)
        r = bad_reply(t, "syscall", err);
    buf_release(&reply);
    return r;
}

int guest_syscall(const struct target *t, const struct guest_syscall_req *req,
                  struct guest_syscall_res *res, struct pv_err *err)
{
    uint32_t id = guest_syscall_start(t, req, err);
    if (!id)
        return err ? -err->code : -EIO;
    int r = guest_syscall_finish(t, id, 0, res, err);
    if (r == -ETIMEDOUT && !(err && err->guest)) { /* the test's deadline: named like vm_call's */
        guest_drop(t, id);
        pv_err_wrap(err, "vm `%s`: syscall", t->vm->name);
    }
    return r;
}

int guest_read_mem(const struct target *t, uint64_t addr, uint32_t len, struct buf *out,
                   struct pv_err *err)
{
    return bytes_call(t, "read_mem", PV_READ_MEM, addr, len, out, err);
}

int guest_write_mem(const struct target *t, uint64_t addr, const void *data, size_t len,
                    struct pv_err *err)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, addr);
    pv_put_bytes(&w, data, len);
    int r = call(t, "write_mem", PV_WRITE_MEM, &b, GUEST_SHORT_S, NULL, NULL, NULL, err);
    buf_release(&b);
    return r;
}

int guest_clock(const struct target *t, uint32_t op, int64_t ns, int64_t *ret_now,
                struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, op);
    pv_put_i64(&w, ns);
    int r = call(t, "clock", PV_CLOCK, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    uint64_t now = 0;
    if (r == 0)
        r = get_u64_reply(t, "clock", &reply, &now, err);
    *ret_now = (int64_t)now;
    buf_release(&b);
    buf_release(&reply);
    return r;
}

int guest_freshen(const struct target *t, const struct guest_freshen *f, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_i64(&w, f->realtime_ns);
    pv_put_bytes(&w, f->seed, f->seed_len);
    pv_put_u32(&w, (uint32_t)f->nfiles);
    for (size_t i = 0; i < f->nfiles; i++) {
        pv_put_str(&w, f->files[i].path);
        pv_put_u32(&w, f->files[i].mode);
        pv_put_bytes(&w, f->files[i].content, f->files[i].len);
    }
    int r = call(t, "boot", PV_FRESHEN, &b, GUEST_SHORT_S, NULL, NULL, NULL, err);
    buf_release(&b);
    return r;
}

/* ---- network interfaces ---- */

void guest_encode_net_config(struct buf *b, const struct guest_net_config *c)
{
    struct pv_wr w = {b};
    pv_put_bytes(&w, c->mac, sizeof(c->mac));
    pv_put_u32(&w, c->ipv4);
    pv_put_u32(&w, c->prefix);
    pv_put_u32(&w, c->up ? PV_NET_UP : 0);
    pv_put_u32(&w, c->wait_ms);
}

int guest_decode_net_config(const struct buf *reply, char ifname[GUEST_IFNAME_MAX],
                            struct pv_err *err)
{
    struct pv_rd rd;
    pv_rd_init(&rd, reply->data, reply->len);
    const char *name = pv_get_str(&rd);
    size_t n = name ? strlen(name) : 0;
    bool ok = pv_rd_done(&rd) == 0 && n > 0 && n < GUEST_IFNAME_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = (unsigned char)name[i] > ' ' && name[i] != 0x7f && name[i] != '/' && name[i] != ':';
    if (!ok)
        return pv_err_set(err, EBADMSG, "malformed NetConfig reply from the agent");
    memcpy(ifname, name, n + 1);
    return 0;
}

int guest_net_config(const struct target *t, const struct guest_net_config *c,
                     char ifname[GUEST_IFNAME_MAX], struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    guest_encode_net_config(&b, c);
    /* the agent gives up at wait_ms; the host waits a little longer */
    int r = call(t, "net_config", PV_NET_CONFIG, &b, c->wait_ms / 1000.0 + GUEST_SHORT_S, NULL,
                 NULL, &reply, err);
    if (r == 0 && guest_decode_net_config(&reply, ifname, err) < 0)
        r = bad_reply(t, "net_config", err);
    if (r == -ETIMEDOUT && err && err->guest) {
        /* the agent's "no network interface with MAC ... appeared in N ms" */
        char who[128];
        guest_who(t, who, sizeof(who));
        _cleanup_free_ char *msg = xstrdup(err->msg);
        r = pv_err_set(err, ETIMEDOUT, "%s: %s (is virtio_net in the kernel or in the modules?)",
                       who, msg);
    }
    buf_release(&b);
    buf_release(&reply);
    return r;
}

void guest_encode_net_route(struct buf *b, const struct guest_net_route *rt)
{
    struct pv_wr w = {b};
    pv_put_u32(&w, rt->dst);
    pv_put_u32(&w, rt->prefix);
    pv_put_u32(&w, rt->gateway);
    pv_put_u32(&w, rt->del ? PV_ROUTE_DELETE : 0);
}

int guest_decode_net_route(const struct buf *reply, struct pv_err *err)
{
    if (reply->len)
        return pv_err_set(err, EBADMSG, "malformed NetRoute reply from the agent");
    return 0;
}

int guest_net_route(const struct target *t, const struct guest_net_route *rt, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    guest_encode_net_route(&b, rt);
    int r = call(t, "net_route", PV_NET_ROUTE, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0 && guest_decode_net_route(&reply, err) < 0)
        r = bad_reply(t, "net_route", err);
    buf_release(&b);
    buf_release(&reply);
    return r;
}

/* ---- workers ---- */

int guest_worker(const struct target *t, const struct guest_worker_req *req, uint64_t *ret_handle,
                 uint32_t *ret_pid, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, req->flags);
    pv_put_u32(&w, req->uid);
    pv_put_u32(&w, req->gid);
    pv_put_u32(&w, (uint32_t)req->ngroups);
    for (size_t i = 0; i < req->ngroups; i++)
        pv_put_u32(&w, req->groups[i]);
    pv_put_u64(&w, req->caps);
    pv_put_str(&w, req->cwd);
    pv_put_u32(&w, (uint32_t)req->nenv);
    for (size_t i = 0; i < req->nenv; i++)
        pv_put_str(&w, req->env[i]);
    int r = call(t, "spawn_worker", PV_WORKER, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0) {
        struct pv_rd rd;
        pv_rd_init(&rd, reply.data, reply.len);
        *ret_handle = pv_get_u64(&rd);
        *ret_pid = pv_get_u32(&rd);
        if (pv_rd_done(&rd) < 0 || *ret_handle == 0)
            r = bad_reply(t, "spawn_worker", err);
    }
    buf_release(&b);
    buf_release(&reply);
    return r;
}

int guest_worker_end(const struct target *t, uint64_t worker, int *ret_status, struct pv_err *err)
{
    struct buf b = BUF_INIT, reply = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u64(&w, worker);
    uint32_t status = 0;
    int r = call(t, "worker:close", PV_WORKER_END, &b, GUEST_SHORT_S, NULL, NULL, &reply, err);
    if (r == 0)
        r = get_u32_reply(t, "worker:close", &reply, UINT32_MAX, &status, err);
    *ret_status = (int)status;
    buf_release(&b);
    buf_release(&reply);
    return r;
}

/* ---- streams ---- */

uint32_t guest_tail(const struct target *t, const struct guest_tail_req *req, chan_chunk_fn fn,
                    void *ctx, struct pv_err *err)
{
    struct buf b = BUF_INIT;
    struct pv_wr w = {&b};
    pv_put_u32(&w, req->kind);
    if (req->kind == PV_TAIL_PATH) {
        pv_put_str(&w, req->path);
        pv_put_i64(&w, req->offset);
        pv_put_u32(&w, req->from_end);
    } else {
        pv_put_u64(&w, req->fd_or_handle);
        if (req->kind == PV_TAIL_PROC)
            pv_put_u32(&w, req->stream);
    }
    const char *op = req->kind == PV_TAIL_PATH ? "tail_file"
                     : req->kind == PV_TAIL_FD ? "fd_stream"
                                               : "output stream";
    uint32_t id = guest_start(t, op, PV_TAIL, &b, fn, ctx, err);
    buf_release(&b);
    if (!id)
        return 0;
    /* The agent serves requests in order: once the ping is answered, a Tail
     * that failed to start has answered too. */
    int r = guest_ping(t, err);
    struct chan_req *q = chan_find(&t->vm->chan, id);
    if (r == 0 && q && q->done && q->ret > 0) {
        if (err)
            *err = q->err;
        r = result(q->ret, err);
    }
    if (r < 0) {
        guest_drop(t, id);
        return 0;
    }
    return id;
}
