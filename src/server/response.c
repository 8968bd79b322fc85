/* OpenAI response pieces; see response.h. */
#include "server/response.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 character at s (1-4), or 0 when the bytes there
 * do not start one (overlongs, surrogates and values above U+10FFFF are
 * invalid). */
static size_t utf8_valid_len(const unsigned char *s, size_t n)
{
    unsigned char b = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF)
        len = 2;
    else if (b >= 0xE0 && b <= 0xEF) {
        len = 3;
        lo = b == 0xE0 ? 0xA0 : 0x80;
        hi = b == 0xED ? 0x9F : 0xBF;
    } else if (b >= 0xF0 && b <= 0xF4) {
        len = 4;
        lo = b == 0xF0 ? 0x90 : 0x80;
        hi = b == 0xF4 ? 0x8F : 0xBF;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

json_t *srv_json_text(const char *s, size_t n)
{
    json_t *v = json_stringn(s, n);
    if (v)
        return v;
    srv_buf b = {0};
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_valid_len(u + i, n - i);
        if (k) {
            srv_buf_append(&b, u + i, k);
            i += k;
        } else {
            srv_buf_append(&b, "\xEF\xBF\xBD", 3);
            i++;
        }
    }
    v = json_stringn(b.p ? b.p : "", b.n);
    srv_buf_free(&b);
    return v;
}

json_t *srv_json_ids(const int32_t *ids, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

json_t *srv_envelope(srv_api api, bool chunk, const char *id, int64_t created, const char *model)
{
    const char *object = api == SRV_API_COMPLETIONS ? "text_completion"
                         : chunk                    ? "chat.completion.chunk"
                                                    : "chat.completion";
    return json_pack("{s:s,s:s,s:I,s:s}", "id", id, "object", object, "created", (json_int_t)created, "model", model);
}

json_t *srv_usage(int64_t prompt_tokens, int64_t completion_tokens)
{
    return json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)prompt_tokens, "completion_tokens",
                     (json_int_t)completion_tokens, "total_tokens", (json_int_t)(prompt_tokens + completion_tokens));
}

const char *srv_finish_reason(eng_finish why)
{
    switch (why) {
    case ENG_FINISH_STOP:
        return "stop";
    case ENG_FINISH_LENGTH:
        return "length";
    default:
        return "abort"; /* vLLM's name for requests ended by the server */
    }
}

/* JSON has no infinities: a masked token's -inf logprob is reported as
 * -9999 (what vLLM does), a missing one as null. */
static json_t *logprob_value(float lp)
{
    if (isnan(lp))
        return json_null();
    return json_real(isinf(lp) ? -9999.0 : (double)lp);
}

static json_t *token_text(const tok_tokenizer *t, int32_t id)
{
    size_t n = 0;
    const char *s = tok_token_bytes(t, id, &n);
    return srv_json_text(s ? s : "", s ? n : 0);
}

json_t *srv_logprobs_new(void)
{
    return json_pack("{s:[],s:[],s:[],s:[]}", "tokens", "token_logprobs", "top_logprobs", "text_offset");
}

void srv_logprobs_add(json_t *lp, const tok_tokenizer *t, int32_t id, const smp_result *r, bool in_text,
                      int64_t *text_offset)
{
    json_array_append_new(json_object_get(lp, "tokens"), token_text(t, id));
    json_array_append_new(json_object_get(lp, "text_offset"), json_integer(*text_offset));
    if (in_text) {
        size_t len = 0;
        tok_token_bytes(t, id, &len);
        *text_offset += (int64_t)len;
    }
    if (!r) {
        json_array_append_new(json_object_get(lp, "token_logprobs"), json_null());
        json_array_append_new(json_object_get(lp, "top_logprobs"), json_null());
        return;
    }
    json_array_append_new(json_object_get(lp, "token_logprobs"), logprob_value(r->logprob));
    /* {token: logprob} of the alternatives, with the token itself (vLLM
     * includes it too, so logprobs=0 still names it). */
    json_t *top = json_object();
    for (int k = 0; k < r->n_top; k++) {
        json_t *key = token_text(t, r->top[k].id);
        if (key && !json_object_get(top, json_string_value(key)))
            json_object_set_new(top, json_string_value(key), logprob_value(r->top[k].logprob));
        json_decref(key);
    }
    json_t *key = token_text(t, id);
    if (key && !json_object_get(top, json_string_value(key)))
        json_object_set_new(top, json_string_value(key), logprob_value(r->logprob));
    json_decref(key);
    json_array_append_new(json_object_get(lp, "top_logprobs"), top);
}

static json_t *chat_entry(const tok_tokenizer *t, int32_t id, float lp)
{
    size_t len = 0;
    const unsigned char *s = (const unsigned char *)tok_token_bytes(t, id, &len);
    json_t *bytes = json_array();
    for (size_t i = 0; s && i < len; i++)
        json_array_append_new(bytes, json_integer(s[i]));
    return json_pack("{s:o,s:o,s:o}", "token", token_text(t, id), "logprob", logprob_value(lp), "bytes", bytes);
}

json_t *srv_logprobs_chat(const tok_tokenizer *t, const int32_t *ids, const smp_result *r, int n)
{
    json_t *content = json_array();
    for (int i = 0; i < n; i++) {
        json_t *e = chat_entry(t, ids[i], r[i].logprob), *top = json_array();
        for (int k = 0; k < r[i].n_top; k++)
            json_array_append_new(top, chat_entry(t, r[i].top[k].id, r[i].top[k].logprob));
        json_object_set_new(e, "top_logprobs", top);
        json_array_append_new(content, e);
    }
    return json_pack("{s:o}", "content", content);
}

char *srv_json_dump(json_t *obj, size_t *len)
{
    /* 9 significant digits round-trip a float exactly. */
    char *s = obj ? json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(obj);
    if (s && len)
        *len = strlen(s);
    return s;
}

int srv_sse_event(srv_buf *out, json_t *obj)
{
    size_t n;
    char *s = srv_json_dump(obj, &n);
    if (!s)
        return -1;
    int rc = srv_buf_append(out, "data: ", 6) || srv_buf_append(out, s, n) || srv_buf_append(out, "\n\n", 2);
    free(s);
    return rc ? -1 : 0;
}

json_t *srv_models_list(const char *name, const char *root, int64_t created, int64_t max_model_len)
{
    return json_pack("{s:s,s:[{s:s,s:s,s:I,s:s,s:s,s:I}]}", "object", "list", "data", "id", name, "object", "model",
                     "created", (json_int_t)created, "owned_by", "v4serve", "root", root, "max_model_len",
                     (json_int_t)max_model_len);
}
