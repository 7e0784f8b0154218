/* PV_TEST_MISBEHAVE: an agent that breaks the protocol on command, so that
 * tests/vm/hostile.test.lua can check that a guest cannot hurt provium
 * (docs/architecture.md, "A misbehaving agent"). Served only when the
 * kernel command line holds provium.test_hostile=1; any other agent answers
 * ENOSYS, as for a type it does not know. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>

#include "agent.h"

/* The defaults of amount and ms (wire.h) per mode. */
#define WRONG_ID_BYTES (64ull << 20)
#define FLOOD_SENDING_BYTES (200ull << 20)
#define FLOOD_CONSOLE_BYTES (300ull << 20)
#define FLOOD_MS 10000u
/* How long flood_while_sending waits for the host's next request. */
#define FLOOD_WAIT_MS 10000
/* Ids no host asks for soon: its ids count up from 1 (docs/architecture.md). */
#define WRONG_ID_BASE 0x80000000u

static void header(uint8_t out[PV_HDR_SIZE], uint16_t type, uint32_t id, uint32_t len)
{
    struct pv_hdr h = {PV_MAGIC, PV_PROTO_VERSION, type, 0, id, len};
    pv_hdr_encode(&h, out);
}

/* A Chunk (stdout) or Ok frame of about n bytes of filler, to send again
 * and again. */
static void filler_frame(struct buf *f, uint16_t type, uint32_t id, size_t n)
{
    struct buf p = BUF_INIT;
    struct pv_wr w = {&p};
    char *fill = xmalloc(n);
    memset(fill, 'z', n);
    if (type == PV_EV_CHUNK) {
        pv_put_u8(&w, PV_STDOUT);
        pv_put_bytes(&w, fill, n);
    } else {
        buf_add(&p, fill, n);
    }
    pv_frame(f, type, id, p.data, p.len);
    free(fill);
    buf_release(&p);
}

/* A frame's header and the first bytes of its payload, then nothing. */
static int partial_frame(struct agent *a, uint32_t id)
{
    uint8_t raw[PV_HDR_SIZE + 16];
    header(raw, PV_OK, id, 4096);
    memset(raw + PV_HDR_SIZE, 'p', 16);
    return agent_send_raw(a, raw, sizeof(raw), now_ms() + 10000);
}

/* Frames of about 1 MiB each, for `bytes` in all, until end_ms. */
static void flood(struct agent *a, uint16_t type, uint32_t id, bool next_id, uint64_t bytes,
                  int64_t end_ms)
{
    struct buf f = BUF_INIT;
    filler_frame(&f, type, id, 1u << 20);
    for (uint64_t sent = 0; sent < bytes && now_ms() < end_ms; sent += f.len) {
        if (agent_send_raw(a, f.data, f.len, end_ms) < 0)
            break;
        if (next_id) { /* the id field is at offset 12 */
            id++;
            memcpy(f.data + 12,
                   (uint8_t[4]){(uint8_t)id, (uint8_t)(id >> 8), (uint8_t)(id >> 16),
                                (uint8_t)(id >> 24)},
                   4);
        }
    }
    buf_release(&f);
}

/* The primary console: the device of the last console= of the kernel
 * command line, else /dev/console. Under TCG either takes 140 to 220 KB/s
 * (serial or hvc0), so a flood is bounded by time (ms) as well. */
static int open_console(void)
{
    char cmdline[4096], path[64] = "/dev/console";
    int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, cmdline, sizeof(cmdline) - 1) : -1;
    if (fd >= 0)
        close(fd);
    cmdline[n > 0 ? n : 0] = 0;
    for (char *p = cmdline; (p = strstr(p, "console=")); p += 8) {
        if (p != cmdline && p[-1] != ' ')
            continue;
        size_t len = strcspn(p + 8, " ,\n");
        if (len > 0 && len < 32)
            snprintf(path, sizeof(path), "/dev/%.*s", (int)len, p + 8);
    }
    fd = open(path, O_WRONLY | O_NOCTTY | O_CLOEXEC);
    return fd >= 0 ? fd : open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
}

/* Write amount bytes of text lines to the console, as a kernel that prints
 * without end would; the number written. */
static uint64_t flood_console(uint64_t amount, int64_t end_ms)
{
    int fd = open_console();
    if (fd < 0)
        return 0;
    char block[65536];
    for (size_t i = 0; i < sizeof(block); i += 64)
        snprintf(block + i, 65, "%-63s\n", "provium.test_hostile: console flood");
    uint64_t done = 0;
    while (done < amount && now_ms() < end_ms) {
        ssize_t n = write(fd, block, (size_t)MIN(sizeof(block), amount - done));
        if (n <= 0 && errno != EINTR)
            break;
        if (n > 0)
            done += (uint64_t)n;
    }
    close(fd);
    return done;
}

int agent_op_test_misbehave(struct agent *a, uint32_t id, struct pv_rd *r)
{
    if (!a->opts.test_hostile) {
        agent_send_err(a, id, ENOSYS, "unknown request type %u", PV_TEST_MISBEHAVE);
        return 0;
    }
    uint32_t mode = pv_get_u32(r);
    uint64_t amount = pv_get_u64(r);
    uint32_t ms = pv_get_u32(r);
    if (pv_rd_done(r) < 0)
        return -EBADMSG;
    int64_t end = now_ms() + (ms ? ms : FLOOD_MS);
    switch (mode) {
    case PV_MB_GARBAGE: {
        static const char junk[] = "provium.test_hostile: these bytes are not a frame\n";
        agent_send_raw(a, junk, sizeof(junk) - 1, now_ms() + 10000);
        return 0;
    }
    case PV_MB_WRONG_ID:
        flood(a, PV_OK, WRONG_ID_BASE, true, amount ? amount : WRONG_ID_BYTES, end);
        return 0; /* and no answer to id */
    case PV_MB_HUGE_LEN: {
        uint8_t raw[PV_HDR_SIZE];
        header(raw, PV_OK, id, 0xfffffff0u);
        agent_send_raw(a, raw, sizeof(raw), now_ms() + 10000);
        return 0;
    }
    case PV_MB_MID_FRAME: partial_frame(a, id); return 0; /* the agent goes on serving, silently */
    case PV_MB_FLOOD_SENDING: {
        agent_send_ok(a, id, NULL);
        /* Flood once the host's next request starts to arrive: the host is
         * then busy sending it, and must keep reading meanwhile. */
        struct pollfd p = {a->fd, POLLIN, 0};
        poll(&p, 1, FLOOD_WAIT_MS);
        end = now_ms() + (ms ? ms : FLOOD_MS);
        flood(a, PV_EV_CHUNK, id, false, amount ? amount : FLOOD_SENDING_BYTES, end);
        return 0;
    }
    case PV_MB_FLOOD_CONSOLE:
        agent_reply_u64(a, id, flood_console(amount ? amount : FLOOD_CONSOLE_BYTES, end));
        return 0;
    case PV_MB_DIE_MID_REPLY: partial_frame(a, id); _exit(3);
    default: return -EINVAL;
    }
}
