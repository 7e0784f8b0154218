#include "wire.h"

static void le32(uint8_t *o, uint32_t v)
{
    o[0] = (uint8_t)v;
    o[1] = (uint8_t)(v >> 8);
    o[2] = (uint8_t)(v >> 16);
    o[3] = (uint8_t)(v >> 24);
}

static uint32_t rd32(const uint8_t *i)
{
    return (uint32_t)i[0] | (uint32_t)i[1] << 8 | (uint32_t)i[2] << 16 | (uint32_t)i[3] << 24;
}

void pv_hdr_encode(const struct pv_hdr *h, uint8_t out[PV_HDR_SIZE])
{
    le32(out, h->magic);
    out[4] = (uint8_t)h->version;
    out[5] = (uint8_t)(h->version >> 8);
    out[6] = (uint8_t)h->type;
    out[7] = (uint8_t)(h->type >> 8);
    le32(out + 8, h->flags);
    le32(out + 12, h->id);
    le32(out + 16, h->len);
}

int pv_hdr_decode(const uint8_t in[PV_HDR_SIZE], struct pv_hdr *h, const char **ret_why)
{
    h->magic = rd32(in);
    h->version = (uint16_t)(in[4] | in[5] << 8);
    h->type = (uint16_t)(in[6] | in[7] << 8);
    h->flags = rd32(in + 8);
    h->id = rd32(in + 12);
    h->len = rd32(in + 16);
    if (h->magic != PV_MAGIC) {
        *ret_why = "bad magic";
        return -EBADMSG;
    }
    if (h->len > PV_MAX_PAYLOAD) {
        *ret_why = "frame larger than the 16 MiB limit";
        return -EBADMSG;
    }
    return 0;
}

size_t pv_sync_scan(const uint8_t *data, size_t len)
{
    for (size_t i = 0; i + 4 <= len; i++)
        if (rd32(data + i) == PV_MAGIC)
            return i;
    return len > 3 ? len - 3 : 0;
}

void pv_put_u8(struct pv_wr *w, uint8_t v)
{
    buf_add(w->b, &v, 1);
}

void pv_put_u32(struct pv_wr *w, uint32_t v)
{
    uint8_t o[4];
    le32(o, v);
    buf_add(w->b, o, 4);
}

void pv_put_u64(struct pv_wr *w, uint64_t v)
{
    pv_put_u32(w, (uint32_t)v);
    pv_put_u32(w, (uint32_t)(v >> 32));
}

void pv_put_i64(struct pv_wr *w, int64_t v)
{
    pv_put_u64(w, (uint64_t)v);
}

void pv_put_bytes(struct pv_wr *w, const void *p, size_t n)
{
    pv_put_u32(w, (uint32_t)n);
    buf_add(w->b, p, n);
}

void pv_put_str(struct pv_wr *w, const char *s)
{
    if (!s)
        s = "";
    pv_put_bytes(w, s, strlen(s) + 1);
}

void pv_frame(struct buf *out, uint16_t type, uint32_t id, const void *payload, size_t len)
{
    struct pv_hdr h = {PV_MAGIC, PV_PROTO_VERSION, type, 0, id, (uint32_t)len};
    uint8_t hdr[PV_HDR_SIZE];
    pv_hdr_encode(&h, hdr);
    buf_add(out, hdr, sizeof(hdr));
    buf_add(out, payload, len);
}

void pv_rd_init(struct pv_rd *r, const void *p, size_t len)
{
    *r = (struct pv_rd){.p = p, .len = len};
}

static const uint8_t *take(struct pv_rd *r, size_t n, const char *what)
{
    if (r->bad)
        return NULL;
    if (n > r->len - r->off) {
        r->bad = true;
        r->why = what;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

uint8_t pv_get_u8(struct pv_rd *r)
{
    const uint8_t *p = take(r, 1, "truncated u8");
    return p ? p[0] : 0;
}

uint32_t pv_get_u32(struct pv_rd *r)
{
    const uint8_t *p = take(r, 4, "truncated u32");
    return p ? rd32(p) : 0;
}

uint64_t pv_get_u64(struct pv_rd *r)
{
    const uint8_t *p = take(r, 8, "truncated u64");
    return p ? (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32 : 0;
}

int64_t pv_get_i64(struct pv_rd *r)
{
    return (int64_t)pv_get_u64(r);
}

const void *pv_get_bytes(struct pv_rd *r, size_t *ret_len)
{
    uint32_t n = pv_get_u32(r);
    const uint8_t *p = take(r, n, "byte field longer than the frame");
    *ret_len = p ? n : 0;
    return p ? p : (const uint8_t *)"";
}

const char *pv_get_str(struct pv_rd *r)
{
    size_t n;
    const char *s = pv_get_bytes(r, &n);
    if (r->bad)
        return "";
    if (n == 0 || s[n - 1] != 0 || memchr(s, 0, n - 1)) {
        r->bad = true;
        r->why = "malformed string field";
        return "";
    }
    return s;
}

uint32_t pv_get_count(struct pv_rd *r, size_t min_item)
{
    uint32_t n = pv_get_u32(r);
    if (r->bad)
        return 0;
    if (min_item && n > (r->len - r->off) / min_item) {
        r->bad = true;
        r->why = "item count larger than the frame";
        return 0;
    }
    return n;
}

int pv_rd_done(struct pv_rd *r)
{
    if (!r->bad && r->off != r->len) {
        r->bad = true;
        r->why = "trailing bytes after the last field";
    }
    return r->bad ? -EBADMSG : 0;
}

const char *pv_type_name(uint16_t type)
{
    switch (type) {
    case PV_HELLO: return "Hello";
    case PV_PING: return "Ping";
    case PV_RUN: return "Run";
    case PV_READ_FILE: return "ReadFile";
    case PV_WRITE_FILE: return "WriteFile";
    case PV_STAT: return "Stat";
    case PV_POWEROFF: return "PowerOff";
    case PV_CANCEL: return "Cancel";
    case PV_TEST_MISBEHAVE: return "TestMisbehave";
    case PV_SYSCALL: return "Syscall";
    case PV_READ_MEM: return "ReadMem";
    case PV_WRITE_MEM: return "WriteMem";
    case PV_OPEN: return "Open";
    case PV_FREAD: return "Read";
    case PV_FWRITE: return "Write";
    case PV_SEEK: return "Seek";
    case PV_CLOSE: return "Close";
    case PV_LISTDIR: return "ListDir";
    case PV_MKDIR: return "MkDir";
    case PV_UNLINK: return "Unlink";
    case PV_RENAME: return "Rename";
    case PV_CLOCK: return "Clock";
    case PV_SPAWN: return "Spawn";
    case PV_WAIT: return "Wait";
    case PV_SIGNAL: return "Signal";
    case PV_PROC_STATUS: return "ProcStatus";
    case PV_STDIN: return "Stdin";
    case PV_TAIL: return "Tail";
    case PV_WORKER: return "Worker";
    case PV_VIA: return "Via";
    case PV_WORKER_END: return "WorkerEnd";
    case PV_FRESHEN: return "Freshen";
    case PV_NET_CONFIG: return "NetConfig";
    case PV_NET_ROUTE: return "NetRoute";
    case PV_POWER_BUTTON: return "PowerButton";
    case PV_PTY_RESIZE: return "PtyResize";
    case PV_OK: return "Ok";
    case PV_ERR: return "Err";
    case PV_HELLO_OK: return "HelloOk";
    case PV_HELLO_ERR: return "HelloErr";
    case PV_EV_CHUNK: return "Chunk";
    case PV_EV_KMSG: return "Kmsg";
    default: return "unknown";
    }
}
