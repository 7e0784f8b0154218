/* A corpus driver for the fuzz targets, so `make check` runs them without
 * libFuzzer: every corpus file, then deterministic mutations of each (bit
 * flips, truncations, splices), under ASan and UBSan. `make fuzz` builds the
 * same targets with libFuzzer for open-ended runs. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static unsigned long runs;

static void one(const uint8_t *p, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, p, n);
    LLVMFuzzerTestOneInput(copy, n);
    free(copy);
    runs++;
}

static void mutate(const uint8_t *p, size_t n)
{
    uint8_t *m = malloc(n + 16);
    for (int round = 0; round < 200; round++) {
        size_t len = n;
        memcpy(m, p, n);
        switch (next() % 4) {
        case 0: /* flip bits */
            for (int k = 0; k < 1 + (int)(next() % 4) && len; k++)
                m[next() % len] ^= (uint8_t)(1u << (next() % 8));
            break;
        case 1: /* truncate */ len = len ? next() % len : 0; break;
        case 2: /* interesting bytes */
            if (len)
                m[next() % len] =
                    (uint8_t[]){0, 0xff, 0x7f, 0x80, '"', '[', '{', '\\', '\n'}[next() % 9];
            break;
        default: /* duplicate a slice at the end */
            if (len) {
                size_t a = next() % len, b = next() % 16;
                for (size_t k = 0; k < b && a + k < n; k++)
                    m[len++] = p[a + k];
            }
        }
        one(m, len);
    }
    free(m);
}

static void file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    uint8_t *buf = malloc(1 << 20);
    size_t n = fread(buf, 1, 1 << 20, f);
    fclose(f);
    one(buf, n);
    mutate(buf, n);
    free(buf);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) < 0) {
            perror(argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            file(argv[i]);
            continue;
        }
        struct dirent **ents;
        int n = scandir(argv[i], &ents, NULL, alphasort);
        for (int k = 0; k < n; k++) {
            if (ents[k]->d_name[0] != '.') {
                char p[4096];
                snprintf(p, sizeof(p), "%s/%s", argv[i], ents[k]->d_name);
                file(p);
            }
            free(ents[k]);
        }
        free(ents);
    }
    printf("%lu inputs\n", runs);
    return 0;
}
