/* The DeepSeek-V4 chat template of MODEL.md section 6, written out in C:
 * BOS, the system text, "<｜User｜>" + text per user turn, "<｜Assistant｜>" +
 * answer + EOS per completed assistant turn, then "<｜Assistant｜>" and the
 * thinking switch. One walk over the conversation yields marker and content
 * parts; rendering concatenates them, encoding turns markers into their ids
 * and encodes contents as plain text. */
#include "tokenizer/chat.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

#define USER_MARK "<｜User｜>"
#define ASSISTANT_MARK "<｜Assistant｜>"
#define THINK_OPEN "<think>"
#define THINK_CLOSE "</think>"

typedef int (*part_fn)(void *ctx, const char *s, size_t len, bool marker, v4_err *err);

static int marker(const tok_tokenizer *t, const char *text, part_fn fn, void *ctx, v4_err *err)
{
    if (tok_find_special(t, text) < 0)
        return v4_errf(err, "chat template: the tokenizer has no added token %s", text);
    return fn(ctx, text, strlen(text), true, err);
}

/* <think> / </think> are added tokens from DeepSeek V3.1 on; a tokenizer
 * without them (the V3 one) gets them as plain text, which is how the model
 * would see them spelled out. */
static int think_marker(const tok_tokenizer *t, const char *text, part_fn fn, void *ctx, v4_err *err)
{
    return fn(ctx, text, strlen(text), tok_find_special(t, text) >= 0, err);
}

static int id_marker(const tok_tokenizer *t, int32_t id, const char *what, part_fn fn, void *ctx, v4_err *err)
{
    if (id < 0)
        return v4_errf(err, "chat template: the tokenizer has no %s token (tokenizer_config.json %s_token)", what,
                       what);
    size_t len;
    const char *s = tok_id_text(t, id, &len);
    return fn(ctx, s, len, true, err);
}

static int walk(const tok_tokenizer *t, const tok_chat_msg *msgs, size_t n, bool thinking, part_fn fn, void *ctx,
                v4_err *err)
{
    size_t sys_len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *r = msgs[i].role ? msgs[i].role : "(null)";
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant"))
            return v4_errf(err, "chat template: message %zu has role \"%s\"; only system, user and assistant are "
                                "supported",
                           i, r);
        if (strcmp(r, "system") == 0)
            sys_len += (msgs[i].content ? strlen(msgs[i].content) : 0) + 2;
    }
    if (id_marker(t, tok_bos_id(t), "bos", fn, ctx, err))
        return -1;
    /* System messages, wherever they stand, go first, joined by a blank line
     * as in DeepSeek's own template. */
    char *sys = malloc(sys_len + 1);
    if (!sys)
        return v4_errf(err, "chat template: out of memory");
    size_t w = 0;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(msgs[i].role, "system"))
            continue;
        const char *c = msgs[i].content ? msgs[i].content : "";
        if (!first) {
            memcpy(sys + w, "\n\n", 2);
            w += 2;
        }
        first = false;
        memcpy(sys + w, c, strlen(c));
        w += strlen(c);
    }
    int rc = w ? fn(ctx, sys, w, false, err) : 0;
    free(sys);
    if (rc)
        return -1;
    for (size_t i = 0; i < n; i++) {
        const char *c = msgs[i].content ? msgs[i].content : "";
        if (strcmp(msgs[i].role, "user") == 0) {
            if (marker(t, USER_MARK, fn, ctx, err) || fn(ctx, c, strlen(c), false, err))
                return -1;
        } else if (strcmp(msgs[i].role, "assistant") == 0) {
            /* Earlier reasoning is not fed back: keep what follows </think>. */
            const char *end_think = strstr(c, THINK_CLOSE);
            if (end_think)
                c = end_think + strlen(THINK_CLOSE);
            if (marker(t, ASSISTANT_MARK, fn, ctx, err) || fn(ctx, c, strlen(c), false, err) ||
                id_marker(t, tok_eos_id(t), "eos", fn, ctx, err))
                return -1;
        }
    }
    return marker(t, ASSISTANT_MARK, fn, ctx, err) ||
                   think_marker(t, thinking ? THINK_OPEN : THINK_CLOSE, fn, ctx, err)
               ? -1
               : 0;
}

typedef struct text_buf {
    char *s;
    size_t n, cap;
} text_buf;

static int append_text(void *ctx, const char *s, size_t len, bool is_marker, v4_err *err)
{
    text_buf *b = ctx;
    if (b->n + len + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + len + 1)
            c *= 2;
        char *p = realloc(b->s, c);
        if (!p)
            return v4_errf(err, "chat template: out of memory");
        b->s = p;
        b->cap = c;
    }
    memcpy(b->s + b->n, s, len);
    b->n += len;
    b->s[b->n] = 0;
    return 0;
}

int tok_chat_render(const tok_tokenizer *t, const tok_chat_msg *msgs, size_t n, bool thinking, char **out,
                    v4_err *err)
{
    text_buf b = {0};
    *out = NULL;
    if (walk(t, msgs, n, thinking, append_text, &b, err)) {
        free(b.s);
        return -1;
    }
    *out = b.s;
    return 0;
}

typedef struct id_buf {
    const tok_tokenizer *t;
    tok_ids ids;
} id_buf;

static int append_ids(void *ctx, const char *s, size_t len, bool is_marker, v4_err *err)
{
    id_buf *b = ctx;
    if (is_marker) {
        int32_t id = tok_strmap_get(&b->t->added, s, len);
        if (id >= 0)
            return tok_ids_push(&b->ids, id, err);
    }
    int32_t *v;
    size_t k;
    if (tok_encode(b->t, s, len, false, &v, &k, err))
        return v4_err_wrap(err, "chat template");
    int rc = 0;
    for (size_t i = 0; i < k && rc == 0; i++)
        rc = tok_ids_push(&b->ids, v[i], err);
    free(v);
    return rc;
}

int tok_chat_encode(const tok_tokenizer *t, const tok_chat_msg *msgs, size_t n, bool thinking, int32_t **ids,
                    size_t *n_ids, v4_err *err)
{
    id_buf b = {.t = t};
    *ids = NULL;
    *n_ids = 0;
    if (walk(t, msgs, n, thinking, append_ids, &b, err)) {
        free(b.ids.v);
        return -1;
    }
    *ids = b.ids.v;
    *n_ids = b.ids.n;
    return 0;
}
