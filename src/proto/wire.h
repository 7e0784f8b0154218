/* The host <-> agent wire format. No I/O and no logging here: this file is
 * linked into both the host and the static agent.
 *
 * A frame is a fixed 20-byte little-endian header followed by `len` payload
 * bytes:
 *
 *   u32 magic   PV_MAGIC
 *   u16 version PV_PROTO_VERSION
 *   u16 type    enum pv_type
 *   u32 flags   reserved, 0
 *   u32 id      request id; replies and per-request events echo it
 *   u32 len     payload length, at most PV_MAX_PAYLOAD
 *
 * A payload is a sequence of fields, each of a fixed shape: u8, u32, u64,
 * i64 (little-endian), bytes (u32 length + data) and str (u32 length + data
 * + NUL, the NUL counted in the length, no NUL inside). Decoders check every
 * length against the bytes actually present; the guest is hostile. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define PV_MAGIC 0x4d565250u /* "PRVM" on the wire */
#define PV_PROTO_VERSION 1
#define PV_HDR_SIZE 20
#define PV_MAX_PAYLOAD (16u << 20)
/* Data travels in chunks of at most this much, well below PV_MAX_PAYLOAD. */
#define PV_CHUNK (256u << 10)

enum pv_type {
    /* requests, host -> agent */
    PV_HELLO = 1,
    PV_PING = 2,
    PV_RUN = 3,
    PV_READ_FILE = 4,
    PV_WRITE_FILE = 5,
    PV_STAT = 6,
    PV_POWEROFF = 7,
    PV_CANCEL = 8,
    PV_SYSCALL = 9,      /* u64 nr, args, bufs, ptrs, nested: see sys.c */
    PV_READ_MEM = 10,    /* u64 addr, u32 len -> bytes */
    PV_WRITE_MEM = 11,   /* u64 addr, bytes -> u32 written */
    PV_OPEN = 12,        /* str path, u32 OpenMode bits, u32 perm -> u64 handle (the guest fd) */
    PV_FREAD = 13,       /* u64 handle, u32 max -> bytes ("" at end of file) */
    PV_FWRITE = 14,      /* u64 handle, bytes -> u32 written */
    PV_SEEK = 15,        /* u64 handle, i64 offset, u32 whence (0 set, 1 cur, 2 end) -> u64 pos */
    PV_CLOSE = 16,       /* u64 handle */
    PV_LISTDIR = 17,     /* str path -> u32 n, n x {str name, u32 type} */
    PV_MKDIR = 18,       /* str path, u32 perm, u32 flags (1: parents) */
    PV_UNLINK = 19,      /* str path: a file, or an empty directory */
    PV_RENAME = 20,      /* str from, str to */
    PV_CLOCK = 21,       /* u32 op (0 get, 1 set, 2 advance), i64 ns -> i64 realtime ns after */
    PV_SPAWN = 22,       /* as PV_RUN (timeout 0) -> u64 handle, u32 pid; output is captured */
    PV_WAIT = 23,        /* u64 handle, u32 timeout_ms (0: none; at it, SIGKILL) -> as PV_RUN,
                            the captured output first as chunks; the handle is gone after */
    PV_SIGNAL = 24,      /* u64 handle, u32 signal: to the process group; exited is no error */
    PV_PROC_STATUS = 25, /* u64 handle -> u32 running, u32 pid, u32 status, u32 exit_code,
                            u32 signal, u64 stdout bytes, u64 stderr bytes */
    PV_STDIN = 26,       /* u64 handle, bytes, u32 close -> u32 accepted */
    PV_TAIL = 27,        /* u32 kind, then per kind (enum pv_tail): chunks (PV_DATA) as bytes
                            come, PV_OK at the end of the source; runs until cancelled */
    PV_WORKER = 28,      /* u32 flags (enum pv_worker), u32 uid, u32 gid, u32 n + n x u32
                            groups, u64 caps (bit per capability), str cwd, u32 n + n x str
                            env -> u64 worker, u32 pid: another agent process, see worker.c */
    PV_VIA = 29,         /* u64 worker, u32 type, bytes payload: the request (type, payload)
                            with this frame's id, served by that worker; its replies come
                            back as if the agent had served it */
    PV_WORKER_END = 30,  /* u64 worker: hang up on it (it kills its processes and exits;
                            SIGKILL after 2 s) -> u32 wait status */
    PV_FRESHEN = 31,     /* i64 realtime ns, bytes seed, u32 n + n x {str path, u32 mode, bytes
                            content}: a boot resumed from the boot cache made fresh (clock set,
                            RNG reseeded, the boot's files written) -> nothing */
    PV_NET_CONFIG = 32,  /* bytes mac (6), u32 ipv4 (network order; 0: none), u32 prefix (0..32),
                            u32 flags (enum pv_net_flags), u32 wait_ms (for the NIC to appear)
                            -> str ifname: see net.c */
    PV_NET_ROUTE = 33,   /* u32 dst (network order), u32 prefix (0..32; 0.0.0.0/0: default), u32
                            gateway (network order, nonzero), u32 flags (enum pv_route_flags;
                            none: add or replace) -> nothing: see net.c */
    /* -> u32 enum pv_button: the ACPI power button made ready for a press (its
     * modules load only for this; src/agent/main.c) */
    PV_POWER_BUTTON = 34,
    PV_PTY_RESIZE = 35, /* u64 handle, u32 rows, u32 cols: the window size of a process's
                           terminal (PV_RUN_PTY); its foreground group gets SIGWINCH */
    PV_REQ_MAX,

    /* Test only, far from the requests above: served only by an agent whose
     * kernel command line holds provium.test_hostile=1 (any other answers
     * ENOSYS, as for an unknown type). u32 mode (enum pv_misbehave), u64
     * amount (bytes; 0: the mode's default), u32 ms (how long a flood may
     * last; 0: the default). The agent then breaks the protocol on purpose,
     * so that tests/vm/hostile.test.lua can check what provium does. */
    PV_TEST_MISBEHAVE = 0x7f01,

    /* replies, agent -> host; id echoes the request */
    PV_OK = 0x8001,
    PV_ERR = 0x8002,
    PV_HELLO_OK = 0x8003,
    PV_HELLO_ERR = 0x8004,

    /* events, agent -> host; id names the request they belong to (or 0) */
    PV_EV_CHUNK = 0x9001,
    PV_EV_KMSG = 0x9002, /* id 0: records of the kernel log, as /dev/kmsg gives them */
};

/* PV_TEST_MISBEHAVE modes (docs/architecture.md, "A misbehaving agent") */
enum pv_misbehave {
    PV_MB_GARBAGE = 1,       /* bytes that are not a frame */
    PV_MB_WRONG_ID = 2,      /* Ok frames for ids never asked (amount bytes), no answer */
    PV_MB_HUGE_LEN = 3,      /* a header announcing a length far over the cap */
    PV_MB_MID_FRAME = 4,     /* a header and part of its payload, then silence */
    PV_MB_FLOOD_SENDING = 5, /* Ok, then Chunks for this id while the host sends */
    PV_MB_FLOOD_CONSOLE = 6, /* amount bytes to /dev/console, then Ok: u64 written */
    PV_MB_DIE_MID_REPLY = 7, /* part of a reply frame, then the agent exits */
};

/* PV_RUN flags */
enum {
    PV_RUN_ENV_CLEAR = 1 << 0,
    /* stdin, stdout and stderr are one new pseudo-terminal, the process's
     * controlling terminal; its output is all stdout. The request then ends
     * with u32 rows, u32 cols: the terminal's size */
    PV_RUN_PTY = 1 << 1,
};
/* PV_WRITE_FILE flags */
enum {
    PV_WR_CREATE = 1 << 0,
    PV_WR_TRUNC = 1 << 1,
    PV_WR_APPEND = 1 << 2,
    PV_WR_MODE = 1 << 3, /* set exactly this mode (else: 0644 at creation, umask applies) */
};
/* OpenMode bits (PV_OPEN), as docs/files.md gives them to Lua */
enum {
    PV_OPEN_READ = 1 << 0,
    PV_OPEN_WRITE = 1 << 1,
    PV_OPEN_CREATE = 1 << 2,
    PV_OPEN_TRUNCATE = 1 << 3,
    PV_OPEN_APPEND = 1 << 4,
    PV_OPEN_EXCLUSIVE = 1 << 5,
};
/* PV_SEEK whence */
enum {
    PV_SEEK_SET = 0,
    PV_SEEK_CUR = 1,
    PV_SEEK_END = 2,
};
/* PV_CLOCK ops */
enum {
    PV_CLOCK_GET = 0,
    PV_CLOCK_SET = 1,
    PV_CLOCK_ADVANCE = 2,
};
/* PV_STAT flags */
enum {
    PV_STAT_NOFOLLOW = 1 << 0,
};
/* PV_TAIL kinds:
 *   PV_TAIL_PATH: str path, i64 offset, u32 from_end (offset <= 0 counts back from
 *                 the size, clamped at 0); a regular file is followed past its end
 *   PV_TAIL_FD:   u64 fd, read from its current offset (followed when regular)
 *   PV_TAIL_PROC: u64 handle, u32 stream (PV_STDOUT/PV_STDERR): the output so far,
 *                 then as it comes, until the process's pipes close */
enum pv_tail {
    PV_TAIL_PATH = 0,
    PV_TAIL_FD = 1,
    PV_TAIL_PROC = 2,
};
/* PV_WORKER flags: which credentials to set (the rest is inherited) */
enum pv_worker {
    PV_WK_UID = 1 << 0,
    PV_WK_GID = 1 << 1,
    PV_WK_GROUPS = 1 << 2,
    PV_WK_CAPS = 1 << 3, /* exactly these capabilities, whatever the uid */
    PV_WK_NO_NEW_PRIVS = 1 << 4,
    PV_WK_ENV_CLEAR = 1 << 5,
};
/* PV_NET_CONFIG flags: the link goes up with PV_NET_UP, else down */
enum pv_net_flags {
    PV_NET_UP = 1 << 0,
};
/* PV_NET_ROUTE flags: without PV_ROUTE_DELETE the route is added or replaced */
enum pv_route_flags {
    PV_ROUTE_DELETE = 1 << 0,
};
/* PV_SIGNAL to handle 0: every process the agent runs (a worker's kill). */
/* PV_RUN reply status */
enum pv_run_status {
    PV_EXITED = 0,
    PV_SIGNALLED = 1,
    PV_TIMED_OUT = 2,
};
/* PV_EV_CHUNK streams */
enum pv_stream {
    PV_STDOUT = 1,
    PV_STDERR = 2,
    PV_DATA = 3, /* file contents */
};
/* PV_POWEROFF how */
enum {
    PV_POWER_OFF = 0,
    PV_POWER_REBOOT = 1,
};
/* PV_POWER_BUTTON replies */
enum pv_button {
    PV_BUTTON_READY = 0, /* the shim watches it: a press powers off */
    PV_BUTTON_NONE = 1,  /* the guest has no power button device (modules missing) */
    PV_BUTTON_INIT = 2,  /* the profile's init runs as PID 1 and handles it */
};
/* HELLO_OK feature bits */
enum {
    PV_FEAT_RUN = 1 << 0,
    PV_FEAT_FILES = 1 << 1,
    PV_FEAT_KMSG = 1 << 2, /* the agent streams the kernel log (PV_EV_KMSG) */
    PV_FEAT_SYSCALL = 1 << 3,
};
/* PV_SYSCALL limits */
enum {
    PV_SYS_MAX_ARGS = 6,
    PV_SYS_MAX_BUFS = 64,
};
/* File types in PV_STAT replies */
enum pv_ftype {
    PV_FT_FILE = 1,
    PV_FT_DIR,
    PV_FT_SYMLINK,
    PV_FT_FIFO,
    PV_FT_SOCKET,
    PV_FT_BLOCK,
    PV_FT_CHAR,
    PV_FT_OTHER,
};

struct pv_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t flags;
    uint32_t id;
    uint32_t len;
};

void pv_hdr_encode(const struct pv_hdr *h, uint8_t out[PV_HDR_SIZE]);
/* Decode and validate a header: magic, length cap. The version is returned
 * as is (the handshake decides what a mismatch means). Returns 0 or -EBADMSG
 * with a reason in *ret_why. */
int pv_hdr_decode(const uint8_t in[PV_HDR_SIZE], struct pv_hdr *h, const char **ret_why);
/* Find the first magic in data, for
 * resynchronising a byte stream at handshake time. Returns an offset, or len
 * when none is there (keep the last 3 bytes: a magic may be split). */
size_t pv_sync_scan(const uint8_t *data, size_t len);

/* Payload writer: appends to a buf. Never fails (allocation aborts). */
struct pv_wr {
    struct buf *b;
};
void pv_put_u8(struct pv_wr *w, uint8_t v);
void pv_put_u32(struct pv_wr *w, uint32_t v);
void pv_put_u64(struct pv_wr *w, uint64_t v);
void pv_put_i64(struct pv_wr *w, int64_t v);
void pv_put_bytes(struct pv_wr *w, const void *p, size_t n);
void pv_put_str(struct pv_wr *w, const char *s); /* NULL encodes as "" */

/* Write a whole frame (header + payload) to a buf. */
void pv_frame(struct buf *out, uint16_t type, uint32_t id, const void *payload, size_t len);

/* Payload reader. Every get checks bounds; after the first failure `bad` is
 * set, later gets return zero values, and pv_rd_done() reports the error.
 * Pointers returned by get_bytes/get_str point into the payload. */
struct pv_rd {
    const uint8_t *p;
    size_t len, off;
    bool bad;
    const char *why;
};
void pv_rd_init(struct pv_rd *r, const void *p, size_t len);
uint8_t pv_get_u8(struct pv_rd *r);
uint32_t pv_get_u32(struct pv_rd *r);
uint64_t pv_get_u64(struct pv_rd *r);
int64_t pv_get_i64(struct pv_rd *r);
const void *pv_get_bytes(struct pv_rd *r, size_t *ret_len);
const char *pv_get_str(struct pv_rd *r);
/* A count of following items, each at least min_item bytes: rejects counts
 * that cannot fit in the rest of the payload (so callers can allocate). */
uint32_t pv_get_count(struct pv_rd *r, size_t min_item);
/* 0 if every field decoded and no bytes are left over, else -EBADMSG. */
int pv_rd_done(struct pv_rd *r);

const char *pv_type_name(uint16_t type);
