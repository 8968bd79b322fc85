/* tok_encode: validates the UTF-8 input, cuts out added tokens (two passes
 * like Hugging Face: tokens with normalized = false first, then those with
 * normalized = true in what is left), pre-tokenizes each remaining segment
 * and runs BPE on every piece. All working memory is per call. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct enc_ctx {
    const tok_tokenizer *t;
    const char *text;
    tok_pretok_scratch pre;
    tok_bpe_scratch bpe;
    tok_ids out;
    v4_err *err;
} enc_ctx;

static int encode_plain(enc_ctx *c, size_t start, size_t end)
{
    if (tok_pretok_run(&c->t->pretok, c->text + start, end - start, &c->pre, c->err))
        return -1;
    for (size_t i = 0; i < c->pre.a.n; i++) {
        const tok_span *p = &c->pre.a.v[i];
        if (tok_bpe(c->t, (const unsigned char *)c->text + start + p->start, p->end - p->start, &c->bpe, &c->out,
                    c->err))
            return -1;
    }
    return 0;
}

/* Splits [start, end) on the tokens of tries[0] (leftmost-longest); the gaps go
 * to the next pass, or to BPE after the last one. */
static int split_added(enc_ctx *c, const tok_trie *const *tries, size_t n_tries, size_t start, size_t end)
{
    if (n_tries == 0)
        return encode_plain(c, start, end);
    size_t gap = start, i = start;
    while (i < end) {
        size_t mlen = 0;
        int32_t id = tok_trie_longest(tries[0], c->text + i, end - i, &mlen);
        if (id < 0) {
            i++;
            continue;
        }
        if (gap < i && split_added(c, tries + 1, n_tries - 1, gap, i))
            return -1;
        if (tok_ids_push(&c->out, id, c->err))
            return -1;
        i += mlen;
        gap = i;
    }
    return gap < end ? split_added(c, tries + 1, n_tries - 1, gap, end) : 0;
}

int tok_encode(const tok_tokenizer *t, const char *text, size_t len, bool parse_special, int32_t **ids,
               size_t *n_ids, v4_err *err)
{
    *ids = NULL;
    *n_ids = 0;
    size_t bad = tok_utf8_invalid_at((const unsigned char *)text, len);
    if (bad != len)
        return v4_errf(err, "tok_encode: invalid UTF-8 at byte offset %zu (byte 0x%02X)", bad,
                       (unsigned char)text[bad]);
    enc_ctx c = {.t = t, .text = text, .err = err};
    const tok_trie *tries[2] = {&t->trie_raw, &t->trie_norm};
    int rc = split_added(&c, tries, parse_special ? 2 : 0, 0, len);
    tok_pretok_scratch_free(&c.pre);
    tok_bpe_scratch_free(&c.bpe);
    /* Even for no ids hand back an allocation, so callers may memcpy from it. */
    if (rc == 0 && !c.out.v && !(c.out.v = malloc(sizeof *c.out.v)))
        rc = v4_errf(err, "tok_encode: out of memory");
    if (rc) {
        free(c.out.v);
        return -1;
    }
    *ids = c.out.v;
    *n_ids = c.out.n;
    return 0;
}
