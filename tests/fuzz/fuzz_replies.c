/* libFuzzer target for the decoders of the agent's replies (guest.h): the
 * first byte picks one (status, stat, syscall, listdir, proc_status,
 * net_config, net_route), the rest is the reply payload, as the guest sent
 * it. A decoder either fills its result with values in their documented
 * ranges or fails with EBADMSG, owning nothing after a failure; never reads
 * past the payload (ASan). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host/guest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_failed(int r, const struct pv_err *err)
{
    if (r != -EBADMSG || err->code != EBADMSG)
        abort();
}

static void on_entry(void *ctx, const struct guest_dirent *e)
{
    size_t *n = ctx;
    /* the name is a C string inside the reply */
    *n += strlen(e->name) + 1;
    if (e->type < PV_FT_FILE || e->type > PV_FT_OTHER)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct buf reply = BUF_INIT;
    buf_add(&reply, data + 1, size - 1);
    struct pv_err err = {0};
    int r;
    switch (data[0] % 7) {
    case 0: {
        struct guest_run_result res = {0};
        r = guest_decode_status(&reply, &res, &err);
        if (r == 0 && (res.status < PV_EXITED || res.status > PV_TIMED_OUT))
            abort();
        if (r < 0)
            check_failed(r, &err);
        guest_run_result_release(&res);
        break;
    }
    case 1: {
        struct guest_stat st;
        r = guest_decode_stat(&reply, &st, &err);
        if (r == 0 && (st.type < PV_FT_FILE || st.type > PV_FT_OTHER))
            abort();
        if (r < 0)
            check_failed(r, &err);
        break;
    }
    case 2: {
        struct guest_syscall_res res = {0};
        r = guest_decode_syscall(&reply, &res, &err);
        if (r == 0 && (res.nout > PV_SYS_MAX_BUFS || res.err < 0 || res.err > 4095))
            abort();
        if (r < 0) {
            check_failed(r, &err);
            if (res.nout) /* a failure keeps nothing */
                abort();
        }
        for (uint32_t i = 0; i < res.nout; i++)
            if (res.out[i].len > reply.len)
                abort();
        guest_syscall_res_release(&res);
        break;
    }
    case 3: {
        size_t n = 0;
        r = guest_decode_listdir(&reply, on_entry, &n, &err);
        if (r < 0)
            check_failed(r, &err);
        if (n > reply.len)
            abort();
        break;
    }
    case 5: {
        char ifname[GUEST_IFNAME_MAX];
        memset(ifname, 0x55, sizeof(ifname));
        r = guest_decode_net_config(&reply, ifname, &err);
        if (r == 0 && (!memchr(ifname, 0, sizeof(ifname)) || !ifname[0] || strchr(ifname, '/')))
            abort();
        if (r < 0)
            check_failed(r, &err);
        break;
    }
    case 6:
        r = guest_decode_net_route(&reply, &err);
        if (r == 0 && reply.len) /* nothing is in a NetRoute reply */
            abort();
        if (r < 0)
            check_failed(r, &err);
        break;
    default: {
        struct guest_proc_status st;
        r = guest_decode_proc_status(&reply, &st, &err);
        if (r == 0 && (st.status < PV_EXITED || st.status > PV_TIMED_OUT))
            abort();
        if (r < 0)
            check_failed(r, &err);
        break;
    }
    }
    buf_release(&reply);
    return 0;
}
