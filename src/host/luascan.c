#include "luascan.h"

#include <ctype.h>

void lscan_init(struct lscan *s, const char *text, size_t len)
{
    *s = (struct lscan){text, text + len, text, 1};
}

static void advance(struct lscan *s)
{
    if (*s->p++ == '\n')
        s->line++;
}

/* At a long bracket ([[, [==[): skip past its closing one. */
static bool long_bracket(struct lscan *s)
{
    const char *q = s->p + 1;
    while (q < s->end && *q == '=')
        q++;
    if (*s->p != '[' || q >= s->end || *q != '[')
        return false;
    size_t level = (size_t)(q - s->p - 1);
    while (s->p <= q)
        advance(s);
    while (s->p < s->end) {
        size_t eq = 0;
        if (*s->p == ']') {
            while (s->p + 1 + eq < s->end && s->p[1 + eq] == '=')
                eq++;
            if (eq == level && s->p + 1 + eq < s->end && s->p[1 + eq] == ']') {
                s->p += level + 2;
                return true;
            }
        }
        advance(s);
    }
    return true;
}

void lscan_space(struct lscan *s)
{
    while (s->p < s->end) {
        if (s->p + 1 < s->end && s->p[0] == '-' && s->p[1] == '-') {
            s->p += 2;
            if (s->p < s->end && long_bracket(s))
                continue;
            while (s->p < s->end && *s->p != '\n')
                s->p++;
            continue;
        }
        if (!isspace((unsigned char)*s->p))
            break;
        advance(s);
    }
}

bool lscan_eat(struct lscan *s, char c)
{
    lscan_space(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

bool lscan_literal(struct lscan *s, char *out, size_t len, bool *quoted)
{
    lscan_space(s);
    size_t n = 0;
    *quoted = s->p < s->end && (*s->p == '"' || *s->p == '\'');
    if (*quoted) {
        char q = *s->p++;
        while (s->p < s->end && *s->p != q && *s->p != '\n' && n + 1 < len)
            out[n++] = *s->p++;
        if (s->p >= s->end || *s->p != q)
            return false;
        s->p++;
    } else {
        while (s->p < s->end && (isalnum((unsigned char)*s->p) || *s->p == '.') && n + 1 < len)
            out[n++] = *s->p++;
        if (!n || !isdigit((unsigned char)out[0]))
            return false;
    }
    out[n] = 0;
    return true;
}

static bool ident(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

bool lscan_find(struct lscan *s, const char *word)
{
    size_t wlen = strlen(word);
    while (s->p < s->end) {
        lscan_space(s);
        if (s->p >= s->end)
            break;
        if ((size_t)(s->end - s->p) >= wlen && !memcmp(s->p, word, wlen) &&
            (s->p == s->start || !ident(s->p[-1])) &&
            (s->p + wlen == s->end || !ident(s->p[wlen]))) {
            s->p += wlen;
            return true;
        }
        /* step over strings, so that text in them is not taken for code */
        if (long_bracket(s))
            continue;
        if (*s->p == '"' || *s->p == '\'') {
            char q = *s->p++;
            while (s->p < s->end && *s->p != q && *s->p != '\n')
                s->p += *s->p == '\\' && s->p + 1 < s->end ? 2 : 1;
        }
        if (s->p < s->end)
            advance(s);
    }
    return false;
}
