#include "hash.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>

#include "util.h"

struct sha256 {
    EVP_MD_CTX *ctx;
};

struct sha256 *sha256_new(void)
{
    struct sha256 *h = xmalloc(sizeof(*h));
    h->ctx = EVP_MD_CTX_new();
    if (!h->ctx || EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) != 1)
        abort();
    return h;
}

void sha256_update(struct sha256 *h, const void *p, size_t n)
{
    EVP_DigestUpdate(h->ctx, p, n);
}

void sha256_update_str(struct sha256 *h, const char *s)
{
    sha256_update(h, s ? s : "", s ? strlen(s) + 1 : 1);
}

void sha256_final(struct sha256 *h, unsigned char out[32])
{
    unsigned int n = 0;
    EVP_DigestFinal_ex(h->ctx, out, &n);
    EVP_MD_CTX_free(h->ctx);
    free(h);
}

void sha256_final_hex(struct sha256 *h, char out[65])
{
    unsigned char md[32];
    sha256_final(h, md);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

void sha256_hex(const void *p, size_t n, char out[65])
{
    struct sha256 *h = sha256_new();
    sha256_update(h, p, n);
    sha256_final_hex(h, out);
}

int sha256_file_hex(const char *path, char out[65])
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct sha256 *h = sha256_new();
    char b[65536];
    ssize_t n;
    while ((n = read(fd, b, sizeof(b))) > 0)
        sha256_update(h, b, (size_t)n);
    int e = n < 0 ? -errno : 0;
    sha256_final_hex(h, out);
    return e;
}
