/* Whole-sequence decode: concatenates the bytes of the ids (added tokens as
 * their text, optionally skipping the special ones) and repairs invalid UTF-8
 * with U+FFFD, as Hugging Face's ByteLevel decoder does. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

int tok_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **out, v4_err *err)
{
    size_t len;
    return tok_decode_n(t, ids, n, skip_special, out, &len, err);
}

int tok_decode_n(const tok_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **out,
                 size_t *out_len, v4_err *err)
{
    *out = NULL;
    *out_len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= t->n_ids || !(t->id_flags[ids[i]] & TOK_ID_PRESENT))
            return v4_errf(err, "tok_decode: id %d at position %zu is not in the vocabulary (size %lld)", ids[i], i,
                           (long long)t->n_ids);
        if (!(skip_special && (t->id_flags[ids[i]] & TOK_ID_SPECIAL)))
            total += t->text_len[ids[i]];
    }
    unsigned char *raw = malloc(total ? total : 1);
    char *s = malloc(3 * total + 1);
    if (!raw || !s) {
        free(raw);
        free(s);
        return v4_errf(err, "tok_decode: out of memory for %zu bytes", total);
    }
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        if (skip_special && (t->id_flags[ids[i]] & TOK_ID_SPECIAL))
            continue;
        memcpy(raw + w, t->text + t->text_off[ids[i]], t->text_len[ids[i]]);
        w += t->text_len[ids[i]];
    }
    size_t len = tok_utf8_lossy(raw, total, false, s, NULL);
    free(raw);
    s[len] = 0;
    *out = s;
    *out_len = len;
    return 0;
}
