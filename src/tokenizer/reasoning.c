/* Splitting generated text into reasoning and answer at the first
 * "</think>", piece by piece as it streams out of the decoder. A piece may end
 * in the middle of the marker when it is generated as several tokens, so a
 * tail that could start the marker is held back until the next piece. */
#include "tokenizer/chat.h"

#include <string.h>

static const char MARK[] = "</think>";
#define MARK_LEN (sizeof MARK - 1)

void tok_reasoning_init(tok_reasoning_split *s, bool thinking)
{
    memset(s, 0, sizeof *s);
    s->in_reasoning = thinking;
}

/* Longest proper prefix of MARK that s[0, len) ends with. */
static size_t partial_mark_tail(const char *s, size_t len)
{
    for (size_t k = MARK_LEN - 1; k > 0; k--)
        if (k <= len && memcmp(s + len - k, MARK, k) == 0)
            return k;
    return 0;
}

void tok_reasoning_push(tok_reasoning_split *s, const char *text, size_t len, char *reasoning, size_t *n_reasoning,
                        char *content, size_t *n_content)
{
    *n_reasoning = *n_content = 0;
    if (!s->in_reasoning) {
        memcpy(content, text, len);
        *n_content = len;
        return;
    }
    /* Work in the reasoning buffer: held bytes + the new piece. */
    size_t n = s->n_held + len;
    memcpy(reasoning, s->held, s->n_held);
    memcpy(reasoning + s->n_held, text, len);
    s->n_held = 0;
    const char *m = memmem(reasoning, n, MARK, MARK_LEN);
    if (m) {
        size_t at = (size_t)(m - reasoning), after = at + MARK_LEN;
        memcpy(content, reasoning + after, n - after);
        *n_content = n - after;
        *n_reasoning = at;
        s->in_reasoning = false;
        return;
    }
    size_t hold = partial_mark_tail(reasoning, n);
    memcpy(s->held, reasoning + n - hold, hold);
    s->n_held = hold;
    *n_reasoning = n - hold;
}

void tok_reasoning_flush(tok_reasoning_split *s, char *reasoning, size_t *n_reasoning, char *content,
                         size_t *n_content)
{
    *n_content = 0;
    memcpy(reasoning, s->held, s->n_held);
    *n_reasoning = s->n_held;
    s->n_held = 0;
}
