/* What attach.c (the keeper, provium attach) shares with attach_shell.c
 * (the interactive shell): the frames of their socket, and the shell's two
 * sides. */
#pragma once

#include <jansson.h>

#include "attach.h"

struct vm;

/* A frame: a type byte, a u32 little-endian length, the bytes. Waits until
 * deadline (0: none), watching sfd (-1: none; a signal there: -EINTR).
 * 0, or -errno (-EPIPE: the other end closed; -EMSGSIZE: over max). */
int attach_send_frame(int fd, char type, const void *p, size_t n, int64_t deadline, int sfd);
int attach_recv_frame(int fd, char *type, struct buf *b, size_t max, int64_t deadline, int sfd);
/* ATTACH_IO_MS from now. */
int64_t attach_io_deadline(void);
/* The 'X' frame of a command's or a shell's end. */
struct guest_run_result;
void attach_send_exit(int cfd, int sfd, const struct guest_run_result *res);
/* The exit code an 'X' frame says; *more (may be NULL) for a Lua chunk not
 * finished. */
int attach_exit_of(const struct buf *f, bool *more);

/* The keeper: run the shell req asks for on vm, for client cfd, until it
 * ends, the client leaves or sfd has a signal. */
void attach_shell_keep(int cfd, int sfd, struct vm *vm, const json_t *req);
/* The client: the request for a shell on NAME, in this terminal's size. */
json_t *attach_shell_request(const char *name);
/* The client, once the request is sent on fd: the terminal in raw mode,
 * until the shell ends. Its exit code, or 2 after saying why. */
int attach_shell_client(int fd, const char *name);
