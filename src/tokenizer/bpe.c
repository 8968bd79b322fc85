/* Byte-pair encoding of one pre-tokenized piece, as Hugging Face's
 * Word::merge_all does it: start from one symbol per byte, repeatedly apply
 * the merge of lowest rank (leftmost first among equal ranks) using a heap,
 * skipping heap entries made stale by earlier merges. O(n log n) in the
 * piece length, so long runs (e.g. 100 KB of one letter) stay fast. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>

void tok_bpe_scratch_free(tok_bpe_scratch *sc)
{
    free(sc->sym);
    free(sc->heap);
    free(sc->bl);
    sc->sym = NULL;
    sc->heap = NULL;
    sc->bl = NULL;
    sc->sym_cap = sc->heap_n = sc->bl_cap = 0;
}

static bool before(const struct tok_bpe_merge *a, const struct tok_bpe_merge *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(tok_bpe_scratch *sc, struct tok_bpe_merge m)
{
    size_t i = sc->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&m, &sc->heap[p]))
            break;
        sc->heap[i] = sc->heap[p];
        i = p;
    }
    sc->heap[i] = m;
}

static struct tok_bpe_merge heap_pop(tok_bpe_scratch *sc)
{
    struct tok_bpe_merge top = sc->heap[0], last = sc->heap[--sc->heap_n];
    size_t i = 0, n = sc->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&sc->heap[c + 1], &sc->heap[c]))
            c++;
        if (!before(&sc->heap[c], &last))
            break;
        sc->heap[i] = sc->heap[c];
        i = c;
    }
    if (n)
        sc->heap[i] = last;
    return top;
}

static void push_pair(const tok_tokenizer *t, tok_bpe_scratch *sc, int32_t pos)
{
    int32_t next = sc->sym[pos].next;
    if (next < 0)
        return;
    const struct tok_pair_slot *m = tok_pairmap_get(&t->merges, sc->sym[pos].id, sc->sym[next].id);
    if (m)
        heap_push(sc, (struct tok_bpe_merge){.rank = m->rank, .pos = pos, .id = m->id});
}

static int reserve(tok_bpe_scratch *sc, size_t len, v4_err *err)
{
    if (len > INT32_MAX / 4)
        return v4_errf(err, "tokenizer: a pre-tokenized piece of %zu bytes is too long", len);
    /* Each merge pushes at most two entries: the heap never exceeds 3 * len. */
    if (sc->sym_cap < len) {
        struct tok_bpe_sym *s = realloc(sc->sym, len * sizeof *s);
        struct tok_bpe_merge *h = s ? realloc(sc->heap, 3 * len * sizeof *h) : NULL;
        if (s)
            sc->sym = s;
        if (!h)
            return v4_errf(err, "tokenizer: out of memory for BPE of %zu bytes", len);
        sc->heap = h;
        sc->sym_cap = len;
    }
    return 0;
}

/* ignore_merges: a piece that is itself in the vocabulary is one token;
 * *id is -1 when it is not. */
static int whole_piece_id(const tok_tokenizer *t, const unsigned char *s, size_t len, tok_bpe_scratch *sc,
                          int32_t *id, v4_err *err)
{
    if (sc->bl_cap < 2 * len) {
        char *b = realloc(sc->bl, 2 * len);
        if (!b)
            return v4_errf(err, "tokenizer: out of memory for a piece of %zu bytes", len);
        sc->bl = b;
        sc->bl_cap = 2 * len;
    }
    size_t n = tok_bytelevel_encode(s, len, sc->bl);
    *id = tok_strmap_get(&t->vocab, sc->bl, n);
    return 0;
}

int tok_bpe(const tok_tokenizer *t, const unsigned char *s, size_t len, tok_bpe_scratch *sc, tok_ids *out,
            v4_err *err)
{
    if (len == 0)
        return 0;
    if (len == 1)
        return tok_ids_push(out, t->byte_id[s[0]], err);
    if (t->ignore_merges) {
        int32_t id = -1;
        if (whole_piece_id(t, s, len, sc, &id, err))
            return -1;
        if (id >= 0)
            return tok_ids_push(out, id, err);
    }
    if (reserve(sc, len, err))
        return -1;
    int32_t n = (int32_t)len;
    for (int32_t i = 0; i < n; i++) {
        sc->sym[i].id = t->byte_id[s[i]];
        sc->sym[i].prev = i - 1;
        sc->sym[i].next = i + 1 < n ? i + 1 : -1;
        sc->sym[i].alive = true;
    }
    sc->heap_n = 0;
    for (int32_t i = 0; i + 1 < n; i++)
        push_pair(t, sc, i);
    while (sc->heap_n) {
        struct tok_bpe_merge top = heap_pop(sc);
        struct tok_bpe_sym *a = &sc->sym[top.pos];
        if (!a->alive || a->next < 0)
            continue;
        const struct tok_pair_slot *m = tok_pairmap_get(&t->merges, a->id, sc->sym[a->next].id);
        if (!m || m->id != top.id)
            continue; /* stale: one side changed since this entry was pushed */
        struct tok_bpe_sym *b = &sc->sym[a->next];
        a->id = top.id;
        b->alive = false;
        a->next = b->next;
        if (b->next >= 0)
            sc->sym[b->next].prev = top.pos;
        if (a->prev >= 0)
            push_pair(t, sc, a->prev);
        push_pair(t, sc, top.pos);
    }
    for (int32_t i = 0; i >= 0; i = sc->sym[i].next)
        if (tok_ids_push(out, sc->sym[i].id, err))
            return -1;
    return 0;
}
