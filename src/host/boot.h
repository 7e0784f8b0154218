/* From a profile and boot opts to a struct vm_boot: kernel, cmdline, and the
 * initrd with the agent injected (cached by content hash). */
#pragma once

#include "config.h"
#include "vm.h"

struct boot_file {
    char *path;
    char *content;
    size_t len;
    uint32_t mode;
};

struct boot_opts {
    uint64_t memory; /* 0: default 512 MiB */
    int cpus;        /* 0: default 1 */
    char *kernel_cmdline, *kernel_cmdline_append;
    double agent_timeout; /* 0: default */
    struct boot_file *files;
    size_t nfiles;
    bool has_rng_seed;
    uint64_t rng_seed;
    bool has_initial_time;
    double initial_time; /* seconds since the epoch, set right after the handshake */
    bool cold;           /* never from the boot cache */
    bool has_pvh, pvh;   /* pvh = ...: over the profile's (vm_boot.no_pvh) */
};
void boot_opts_release(struct boot_opts *o);

#define DEFAULT_PROFILE "default"

/* Resolve profile_name ("default" or a name from cfg) into b: everything
 * but o's files, which boot_add_files puts in (a cold boot), or the agent
 * writes after a resume from the boot cache. */
int boot_plan(const struct config *cfg, const char *profile_name, const struct boot_opts *o,
              struct vm_boot *b, struct pv_err *err);
/* o's files in one more archive appended to b's initrd (a copy, per VM). */
int boot_add_files(struct vm_boot *b, const struct boot_opts *o, struct pv_err *err);

/* The embedded agent binary. */
extern const char pv_agent_bin[], pv_agent_bin_end[];

/* The kernel modules the transport needs, for kmod_order(). */
extern const char *const boot_transport_modules[];
