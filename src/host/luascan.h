/* A small lexer over Lua source, for what the runner reads from a test file
 * without running it (its provium:claim, its test names): it knows comments,
 * short and long strings, and lines, and nothing of Lua's grammar. Input is
 * a byte range, not a C string. */
#pragma once

#include "util.h"

struct lscan {
    const char *p, *end, *start;
    int line;
};

void lscan_init(struct lscan *s, const char *text, size_t len);
/* Skip white space and comments. */
void lscan_space(struct lscan *s);
/* After white space: the character c, consumed (true), or nothing (false). */
bool lscan_eat(struct lscan *s, char c);
/* After white space: a literal, "text", 'text' (no escapes, one line) or a
 * number, into out (at most len - 1 bytes); *quoted tells which. */
bool lscan_literal(struct lscan *s, char *out, size_t len, bool *quoted);
/* Move just past the next `word` that is code (not in a comment or a
 * string) and stands alone (no identifier character on either side). */
bool lscan_find(struct lscan *s, const char *word);
