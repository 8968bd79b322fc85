/* Streaming decode, one id at a time. The bytes of the new token are
 * appended to the few held-back bytes of an unfinished character; complete
 * characters are written, invalid parts become U+FFFD, and an unfinished
 * final character (at most 3 bytes) is held for the next push. This yields
 * exactly the text tok_decode gives for the whole sequence. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

size_t tok_stream_bound(const tok_tokenizer *t)
{
    return 3 * (t->max_token_bytes + sizeof(((tok_stream *)0)->pending)) + 1;
}

int tok_stream_push(const tok_tokenizer *t, tok_stream *s, int32_t id, bool skip_special, char *out, size_t cap,
                    v4_err *err)
{
    if (id < 0 || id >= t->n_ids || !(t->id_flags[id] & TOK_ID_PRESENT))
        return v4_errf(err, "tok_stream_push: id %d is not in the vocabulary (size %lld)", id, (long long)t->n_ids);
    if (s->n_pending < 0 || s->n_pending > 3)
        return v4_errf(err, "tok_stream_push: corrupt stream state (%d pending bytes)", s->n_pending);
    size_t tl = (skip_special && (t->id_flags[id] & TOK_ID_SPECIAL)) ? 0 : t->text_len[id];
    size_t n = (size_t)s->n_pending + tl;
    unsigned char small[256];
    unsigned char *buf = n <= sizeof small ? small : malloc(n);
    if (!buf)
        return v4_errf(err, "tok_stream_push: out of memory");
    memcpy(buf, s->pending, (size_t)s->n_pending);
    memcpy(buf + s->n_pending, t->text + t->text_off[id], tl);
    /* Worst case of the lossy conversion is 3 bytes out per byte in; check
     * the exact size first so that a too-small buffer consumes nothing. */
    size_t need = 0, i = 0, held = 0;
    while (i < n) {
        size_t k;
        tok_utf8_step st = tok_utf8_next(buf + i, n - i, &k);
        if (st == TOK_UTF8_INCOMPLETE) {
            held = k;
            break;
        }
        need += st == TOK_UTF8_VALID ? k : 3;
        i += k;
    }
    if (need + 1 > cap) {
        if (buf != small)
            free(buf);
        return v4_errf(err, "tok_stream_push: output buffer of %zu bytes is too small (%zu needed)", cap, need + 1);
    }
    size_t w = tok_utf8_lossy(buf, n - held, false, out, NULL);
    memcpy(s->pending, buf + n - held, held);
    s->n_pending = (int)held;
    out[w] = 0;
    if (buf != small)
        free(buf);
    return (int)w;
}

int tok_stream_flush(tok_stream *s, char *out, size_t cap)
{
    size_t w = 0;
    if (s->n_pending > 0) {
        if (cap < 4)
            return -1;
        memcpy(out, "\xEF\xBF\xBD", 3); /* an unfinished character is one maximal subpart */
        w = 3;
    }
    if (cap > w)
        out[w] = 0;
    s->n_pending = 0;
    return (int)w;
}
