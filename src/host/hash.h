/* SHA-256 (libcrypto), as lowercase hex. */
#pragma once

#include <stddef.h>

struct sha256;
struct sha256 *sha256_new(void);
void sha256_update(struct sha256 *h, const void *p, size_t n);
void sha256_update_str(struct sha256 *h, const char *s); /* includes the NUL */
/* Writes the digest (as 32 bytes, or as 64 hex digits and a NUL), and frees h. */
void sha256_final(struct sha256 *h, unsigned char out[32]);
void sha256_final_hex(struct sha256 *h, char out[65]);
void sha256_hex(const void *p, size_t n, char out[65]);
/* Hash a file's contents; 0 or -errno. */
int sha256_file_hex(const char *path, char out[65]);
