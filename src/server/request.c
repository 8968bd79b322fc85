/* OpenAI request parsing; see request.h. */
#include "server/request.h"

#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Field accessors: absent or null leaves *out at its default and returns 0;
 * a value of the wrong type or out of [lo, hi] is a 400 naming the field. */

static int get_bool(json_t *o, const char *key, bool *out, srv_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_boolean(v))
        return srv_errorf(err, 400, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return 0;
}

static int get_int(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out, srv_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v))
        return srv_errorf(err, 400, key, "'%s' must be an integer", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi)
        return srv_errorf(err, 400, key, "'%s' is %lld, must be in [%lld, %lld]", key, (long long)x, (long long)lo,
                          (long long)hi);
    *out = x;
    return 0;
}

/* Numbers may be written as integers (temperature: 1). The sampler checks
 * the range; out-of-float-range values become infinities so that check
 * catches them instead of an undefined conversion. */
static int get_float(json_t *o, const char *key, float *out, srv_error *err)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_number(v))
        return srv_errorf(err, 400, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    *out = fabs(d) <= FLT_MAX ? (float)d : (d < 0 ? -INFINITY : INFINITY);
    return 0;
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static int oom(srv_error *err) { return srv_errorf(err, 500, NULL, "out of memory while parsing the request"); }

/* One token-id list: integers in [0, INT32_MAX]; the handler checks them
 * against the model's vocabulary. */
static int parse_ids(json_t *a, const char *param, srv_prompt *p, srv_error *err)
{
    size_t n = json_array_size(a);
    if (n == 0)
        return srv_errorf(err, 400, param, "'%s' has an empty token list", param);
    if (n > INT32_MAX)
        return srv_errorf(err, 400, param, "'%s' is too long", param);
    p->ids = malloc(n * sizeof *p->ids);
    if (!p->ids)
        return oom(err);
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(a, i);
        if (!json_is_integer(x))
            return srv_errorf(err, 400, param, "'%s' must hold integers (token ids); element %zu is not", param, i);
        json_int_t v = json_integer_value(x);
        if (v < 0 || v > INT32_MAX)
            return srv_errorf(err, 400, param, "'%s' element %zu is %lld: token id outside the model's vocabulary",
                              param, i, (long long)v);
        p->ids[i] = (int32_t)v;
    }
    p->n_ids = (int)n;
    return 0;
}

static int set_text_prompt(json_t *s, srv_prompt *p, srv_error *err)
{
    p->text_len = json_string_length(s);
    p->text = dup_n(json_string_value(s), p->text_len);
    return p->text ? 0 : oom(err);
}

/* "prompt": a string, a list of strings, a token-id list, or a list of
 * token-id lists. */
static int parse_prompt(json_t *o, srv_gen_req *r, srv_error *err)
{
    json_t *v = json_object_get(o, "prompt");
    if (!v || json_is_null(v))
        return srv_errorf(err, 400, "prompt", "'prompt' is required");
    if (json_is_string(v)) {
        r->prompts = calloc(1, sizeof *r->prompts);
        if (!r->prompts)
            return oom(err);
        r->n_prompts = 1;
        return set_text_prompt(v, &r->prompts[0], err);
    }
    if (!json_is_array(v))
        return srv_errorf(err, 400, "prompt",
                          "'prompt' must be a string, a list of strings, a list of token ids or a list of such lists");
    size_t n = json_array_size(v);
    if (n == 0)
        return srv_errorf(err, 400, "prompt", "'prompt' is an empty list");
    json_t *first = json_array_get(v, 0);
    if (json_is_integer(first)) {
        r->prompts = calloc(1, sizeof *r->prompts);
        if (!r->prompts)
            return oom(err);
        r->n_prompts = 1;
        return parse_ids(v, "prompt", &r->prompts[0], err);
    }
    if (n > SRV_MAX_CHOICES)
        return srv_errorf(err, 400, "prompt", "'prompt' holds %zu prompts; at most %d", n, SRV_MAX_CHOICES);
    r->prompts = calloc(n, sizeof *r->prompts);
    if (!r->prompts)
        return oom(err);
    r->n_prompts = (int)n;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(v, i);
        int rc;
        if (json_is_string(x) && json_is_string(first))
            rc = set_text_prompt(x, &r->prompts[i], err);
        else if (json_is_array(x) && json_is_array(first))
            rc = parse_ids(x, "prompt", &r->prompts[i], err);
        else
            rc = srv_errorf(err, 400, "prompt",
                            "'prompt' element %zu: a list of prompts must be all strings or all token-id lists", i);
        if (rc)
            return -1;
    }
    return 0;
}

/* Message content: a string, null, or a list of {"type": "text", "text"}
 * parts (joined). */
static int parse_content(json_t *c, size_t i, char **out, srv_error *err)
{
    if (!c || json_is_null(c)) {
        *out = dup_n("", 0);
        return *out ? 0 : oom(err);
    }
    if (json_is_string(c)) {
        *out = dup_n(json_string_value(c), json_string_length(c));
        return *out ? 0 : oom(err);
    }
    if (!json_is_array(c))
        return srv_errorf(err, 400, "messages", "message %zu: 'content' must be a string or a list of text parts", i);
    size_t total = 0, k;
    json_t *part;
    json_array_foreach(c, k, part)
    {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !json_is_string(text))
            return srv_errorf(err, 400, "messages",
                              "message %zu part %zu: only {\"type\": \"text\", \"text\": string} parts are supported",
                              i, k);
        total += json_string_length(text);
    }
    char *s = malloc(total + 1);
    if (!s)
        return oom(err);
    size_t w = 0;
    json_array_foreach(c, k, part)
    {
        json_t *text = json_object_get(part, "text");
        memcpy(s + w, json_string_value(text), json_string_length(text));
        w += json_string_length(text);
    }
    s[w] = 0;
    *out = s;
    return 0;
}

static int parse_messages(json_t *o, srv_gen_req *r, srv_error *err)
{
    json_t *v = json_object_get(o, "messages");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return srv_errorf(err, 400, "messages", "'messages' must be a non-empty list");
    size_t n = json_array_size(v);
    r->msgs = calloc(n, sizeof *r->msgs);
    if (!r->msgs)
        return oom(err);
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(v, i);
        if (!json_is_object(m))
            return srv_errorf(err, 400, "messages", "message %zu must be an object", i);
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role))
            return srv_errorf(err, 400, "messages", "message %zu: 'role' must be a string", i);
        const char *rs = json_string_value(role);
        /* OpenAI's "developer" role is the system role of newer models. */
        if (strcmp(rs, "developer") == 0)
            rs = "system";
        if (strcmp(rs, "system") && strcmp(rs, "user") && strcmp(rs, "assistant"))
            return srv_errorf(err, 400, "messages",
                              "message %zu has role '%.64s'; supported roles are system, developer, user, assistant", i,
                              rs);
        char *content;
        if (parse_content(json_object_get(m, "content"), i, &content, err))
            return -1;
        r->msgs[r->n_msgs].content = content;
        r->msgs[r->n_msgs].role = dup_n(rs, strlen(rs));
        r->n_msgs++;
        if (!r->msgs[r->n_msgs - 1].role)
            return oom(err);
    }
    return 0;
}

/* "stop": null, a string, or a list of up to four strings; checked with the
 * matcher the generation will use. */
static int parse_stop(json_t *o, srv_gen_req *r, srv_error *err)
{
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v))
        return 0;
    json_t *one[1] = {v};
    json_t **items = one;
    size_t n = 1;
    json_t *arr[STOP_MAX_STRINGS];
    if (json_is_array(v)) {
        n = json_array_size(v);
        if (n > STOP_MAX_STRINGS)
            return srv_errorf(err, 400, "stop", "'stop' holds %zu strings; at most %d", n, STOP_MAX_STRINGS);
        for (size_t i = 0; i < n; i++)
            arr[i] = json_array_get(v, i);
        items = arr;
    }
    for (size_t i = 0; i < n; i++) {
        if (!json_is_string(items[i]))
            return srv_errorf(err, 400, "stop", "'stop' must be a string or a list of strings");
        r->stop[i] = dup_n(json_string_value(items[i]), json_string_length(items[i]));
        if (!r->stop[i])
            return oom(err);
        r->n_stop = (int)i + 1;
    }
    stop_matcher *m;
    v4_err e;
    if (stop_init(&m, (const char *const *)r->stop, (size_t)r->n_stop, &e))
        return srv_errorf(err, 400, "stop", "'stop': %s", e.msg);
    stop_free(m);
    return 0;
}

static int parse_stop_ids(json_t *o, srv_gen_req *r, srv_error *err)
{
    json_t *v = json_object_get(o, "stop_token_ids");
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v) || json_array_size(v) > ENG_MAX_STOP_IDS)
        return srv_errorf(err, 400, "stop_token_ids", "'stop_token_ids' must be a list of at most %d token ids",
                          ENG_MAX_STOP_IDS);
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x)
    {
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > INT32_MAX)
            return srv_errorf(err, 400, "stop_token_ids", "'stop_token_ids' element %zu is not a token id", i);
        r->params.stop_ids[r->params.n_stop_ids++] = (int32_t)json_integer_value(x);
    }
    return 0;
}

/* OpenAI fields that change the meaning of a request and that this server
 * does not implement: refuse them instead of answering something else. */
static int refuse_unsupported(json_t *o, const srv_gen_req *r, srv_error *err)
{
    json_t *v = json_object_get(o, "suffix");
    if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
        return srv_errorf(err, 400, "suffix", "'suffix' is not supported");
    v = json_object_get(o, "logit_bias");
    if (v && !json_is_null(v) && !(json_is_object(v) && json_object_size(v) == 0))
        return srv_errorf(err, 400, "logit_bias", "'logit_bias' is not supported");
    v = json_object_get(o, "tools");
    if (v && !json_is_null(v) && !(json_is_array(v) && json_array_size(v) == 0))
        return srv_errorf(err, 400, "tools", "'tools' (tool calling) is not supported");
    v = json_object_get(o, "best_of");
    if (v && !json_is_null(v) && !(json_is_integer(v) && json_integer_value(v) == r->n))
        return srv_errorf(err, 400, "best_of", "'best_of' other than n is not supported");
    v = json_object_get(o, "response_format");
    if (v && !json_is_null(v)) {
        json_t *t = json_object_get(v, "type");
        if (!json_is_object(v) || !json_is_string(t) || strcmp(json_string_value(t), "text") != 0)
            return srv_errorf(err, 400, "response_format", "only 'response_format' {\"type\": \"text\"} is supported");
    }
    v = json_object_get(o, "user");
    if (v && !json_is_null(v) && !json_is_string(v))
        return srv_errorf(err, 400, "user", "'user' must be a string");
    return 0;
}

static int parse_thinking(json_t *o, srv_gen_req *r, srv_error *err)
{
    json_t *k = json_object_get(o, "chat_template_kwargs");
    if (!k || json_is_null(k))
        return 0;
    if (!json_is_object(k))
        return srv_errorf(err, 400, "chat_template_kwargs", "'chat_template_kwargs' must be an object");
    /* "thinking" is DeepSeek's name, "enable_thinking" the Qwen-style one
     * many clients send. */
    if (get_bool(k, "enable_thinking", &r->thinking, err) || get_bool(k, "thinking", &r->thinking, err)) {
        snprintf(err->param, sizeof err->param, "chat_template_kwargs");
        return -1;
    }
    return 0;
}

static int parse_sampling(json_t *o, int64_t vocab, srv_gen_req *r, srv_error *err)
{
    smp_params *s = &r->params.sampling;
    int64_t v;
    if (get_float(o, "temperature", &s->temperature, err) || get_float(o, "top_p", &s->top_p, err) ||
        get_float(o, "min_p", &s->min_p, err) || get_float(o, "presence_penalty", &s->presence_penalty, err) ||
        get_float(o, "frequency_penalty", &s->frequency_penalty, err) ||
        get_float(o, "repetition_penalty", &s->repetition_penalty, err))
        return -1;
    v = s->top_k;
    if (get_int(o, "top_k", -1, INT32_MAX, &v, err))
        return -1;
    s->top_k = (int32_t)v;
    json_t *seed = json_object_get(o, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed))
            return srv_errorf(err, 400, "seed", "'seed' must be an integer");
        s->seed = (uint64_t)json_integer_value(seed);
        s->has_seed = true;
    }
    s->logprobs = r->logprobs;
    s->n_logprobs = r->top_logprobs;
    v4_err e;
    if (smp_params_check(s, vocab, &e)) {
        /* The sampler's message starts with the field's name. */
        size_t k = strcspn(e.msg, " ");
        char field[64];
        snprintf(field, sizeof field, "%.*s", (int)(k < sizeof field ? k : sizeof field - 1), e.msg);
        return srv_errorf(err, 400, field, "%s", e.msg);
    }
    return 0;
}

static int parse_logprobs(json_t *o, srv_gen_req *r, srv_error *err)
{
    int64_t v = -1;
    if (r->api == SRV_API_COMPLETIONS) {
        /* completions: "logprobs": N alternatives per token */
        if (get_int(o, "logprobs", 0, SMP_MAX_LOGPROBS, &v, err))
            return -1;
        r->logprobs = v >= 0;
        r->top_logprobs = v > 0 ? (int)v : 0;
        /* with echo, the prompt's tokens get logprobs too (the first one null) */
        r->params.prompt_logprobs = r->logprobs && r->echo;
        return 0;
    }
    /* chat: "logprobs": bool, "top_logprobs": N */
    if (get_bool(o, "logprobs", &r->logprobs, err) || get_int(o, "top_logprobs", 0, SMP_MAX_LOGPROBS, &v, err))
        return -1;
    if (v > 0 && !r->logprobs)
        return srv_errorf(err, 400, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
    r->top_logprobs = v > 0 ? (int)v : 0;
    return 0;
}

static int parse_object(json_t *o, int64_t vocab, srv_gen_req *r, srv_error *err)
{
    json_t *model = json_object_get(o, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model))
            return srv_errorf(err, 400, "model", "'model' must be a string");
        r->model = dup_n(json_string_value(model), json_string_length(model));
        if (!r->model)
            return oom(err);
    }
    if (r->api == SRV_API_COMPLETIONS) {
        if (parse_prompt(o, r, err) || get_bool(o, "echo", &r->echo, err))
            return -1;
    } else if (parse_messages(o, r, err) || parse_thinking(o, r, err)) {
        return -1;
    }
    int64_t v = 1;
    if (get_int(o, "n", 1, SRV_MAX_CHOICES, &v, err))
        return -1;
    r->n = (int)v;
    int n_prompts = r->api == SRV_API_COMPLETIONS ? r->n_prompts : 1;
    if ((int64_t)r->n * n_prompts > SRV_MAX_CHOICES)
        return srv_errorf(err, 400, "n", "%d prompts x n = %d choices; at most %d", n_prompts, r->n * n_prompts,
                          SRV_MAX_CHOICES);
    /* chat: max_completion_tokens is the current name, max_tokens the old */
    v = 0;
    if (get_int(o, "max_tokens", 1, INT32_MAX, &v, err))
        return -1;
    if (r->api == SRV_API_CHAT && get_int(o, "max_completion_tokens", 1, INT32_MAX, &v, err))
        return -1;
    r->max_tokens = (int32_t)v;

    r->skip_special_tokens = true;
    if (get_bool(o, "stream", &r->stream, err) || get_bool(o, "ignore_eos", &r->params.ignore_eos, err) ||
        get_bool(o, "return_token_ids", &r->return_token_ids, err) ||
        get_bool(o, "skip_special_tokens", &r->skip_special_tokens, err))
        return -1;
    json_t *so = json_object_get(o, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return srv_errorf(err, 400, "stream_options", "'stream_options' must be an object");
        if (!r->stream)
            return srv_errorf(err, 400, "stream_options", "'stream_options' is only allowed when 'stream' is true");
        if (get_bool(so, "include_usage", &r->include_usage, err)) {
            snprintf(err->param, sizeof err->param, "stream_options");
            return -1;
        }
    }
    return parse_logprobs(o, r, err) || parse_sampling(o, vocab, r, err) || parse_stop(o, r, err) ||
                   parse_stop_ids(o, r, err) || refuse_unsupported(o, r, err)
               ? -1
               : 0;
}

int srv_parse_request(srv_api api, const char *body, size_t len, int64_t vocab, srv_gen_req *out, srv_error *err)
{
    memset(out, 0, sizeof *out);
    out->api = api;
    out->params.sampling = smp_params_default();
    json_error_t je;
    /* Without JSON_ALLOW_NUL jansson refuses "\u0000", so every string of
     * the request is a proper C string. */
    json_t *o = json_loadb(body, len, 0, &je);
    if (!o)
        return srv_errorf(err, 400, NULL, "the body is not valid JSON (line %d, column %d): %s", je.line, je.column,
                          je.text);
    int rc = 0;
    if (!json_is_object(o))
        rc = srv_errorf(err, 400, NULL, "the body must be a JSON object");
    else
        rc = parse_object(o, vocab, out, err);
    json_decref(o);
    if (rc)
        srv_gen_req_free(out);
    return rc;
}

void srv_gen_req_free(srv_gen_req *r)
{
    free(r->model);
    for (int i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].text);
        free(r->prompts[i].ids);
    }
    free(r->prompts);
    for (size_t i = 0; i < r->n_msgs; i++) {
        free((char *)r->msgs[i].role);
        free((char *)r->msgs[i].content);
    }
    free(r->msgs);
    for (int i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    memset(r, 0, sizeof *r);
}
