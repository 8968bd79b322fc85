/* Growable arrays used for per-call working memory of encode (ids, spans). */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>

static int grow(void **v, size_t *cap, size_t need, size_t elem, v4_err *err)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *p = realloc(*v, c * elem);
    if (!p)
        return v4_errf(err, "tokenizer: out of memory (%zu elements)", c);
    *v = p;
    *cap = c;
    return 0;
}

int tok_ids_push(tok_ids *a, int32_t id, v4_err *err)
{
    if (grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v, err))
        return -1;
    a->v[a->n++] = id;
    return 0;
}

int tok_spans_push(tok_spans *a, size_t start, size_t end, v4_err *err)
{
    if (grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v, err))
        return -1;
    a->v[a->n].start = start;
    a->v[a->n].end = end;
    a->n++;
    return 0;
}
