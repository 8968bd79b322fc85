/* `v4serve serve`, the OpenAI API, against the golden models: greedy
 * completions (token-id prompts, return_token_ids) reproduce the golden
 * continuations of tiny and rates, streamed and not; the text is the
 * tokenizer's decode of those ids; several prompts and n > 1 come back in
 * vLLM's order with seeds that repeat; text prompts get BOS; echo;
 * completions logprobs, of the prompt too with echo; stop strings and stop token ids end generation at
 * the right token; /health, /v1/models and /metrics. The real binary runs
 * as a child process (tests/server/harness.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>

#include "server/harness.h"
#include "tokenizer/tokenizer.h"

static char *tiny_dir;
static th_golden tiny, rates;
static th_server srv;
static tok_tokenizer *tok;

static int setup(void **state)
{
    alarm(600);
    tiny_dir = th_golden_model_dir("tiny");
    v4_err err;
    if (!tiny_dir || th_golden_load("tiny", &tiny) || th_golden_load("rates", &rates) || tok_load(tiny_dir, &tok, &err))
        return -1;
    const char *args[] = {"--served-model-name", "tiny", "--max-model-len", "1024", NULL};
    return th_start(&srv, tiny_dir, args);
}

static int teardown(void **state)
{
    int st = th_stop(&srv);
    tok_free(tok);
    tc_rmtree(tiny_dir);
    free(tiny_dir);
    free(tiny.tokens);
    free(rates.tokens);
    return st == 0 ? 0 : -1;
}

static char *decode(const int32_t *ids, int n)
{
    char *s = NULL;
    v4_err err;
    if (tok_decode(tok, ids, (size_t)n, true, &s, &err))
        fail_msg("%s", err.msg);
    return s;
}

static json_t *post_ok(int port, const char *path, const char *body)
{
    int status;
    json_t *j = th_post_json(port, path, body, &status);
    if (status != 200 || !j)
        fail_msg("POST %s: status %d: %s", path, status, j ? json_dumps(j, 0) : "(no JSON)");
    return j;
}

static void assert_ids(json_t *a, const int32_t *want, int n)
{
    int32_t got[4096];
    int k = th_json_ids(a, got, 4096);
    assert_int_equal(k, n);
    for (int i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("token %d: got %d, want %d", i, got[i], want[i]);
}

static char *completion_body(const int32_t *prompt, int n_prompt, int max_tokens, const char *extra)
{
    char *ids = th_ids_json(prompt, n_prompt);
    size_t cap = strlen(ids) + 512 + (extra ? strlen(extra) : 0);
    char *b = malloc(cap);
    snprintf(b, cap,
             "{\"model\":\"tiny\",\"prompt\":%s,\"max_tokens\":%d,\"temperature\":0,\"return_token_ids\":true%s%s}",
             ids, max_tokens, extra ? "," : "", extra ? extra : "");
    free(ids);
    return b;
}

static void golden_whole(void **state)
{
    int n_cont = tiny.n_tokens - tiny.prompt_len;
    char *body = completion_body(tiny.tokens, tiny.prompt_len, n_cont, "\"ignore_eos\":true");
    json_t *j = post_ok(srv.port, "/v1/completions", body);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "text_completion");
    assert_string_equal(json_string_value(json_object_get(j, "model")), "tiny");
    assert_true(strncmp(json_string_value(json_object_get(j, "id")), "cmpl-", 5) == 0);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    assert_ids(json_object_get(c, "token_ids"), tiny.tokens + tiny.prompt_len, n_cont);
    assert_ids(json_object_get(c, "prompt_token_ids"), tiny.tokens, tiny.prompt_len);
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "length");
    char *text = decode(tiny.tokens + tiny.prompt_len, n_cont);
    assert_string_equal(json_string_value(json_object_get(c, "text")), text);
    json_t *u = json_object_get(j, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), tiny.prompt_len);
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), n_cont);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), tiny.n_tokens);
    free(text);
    free(body);
    json_decref(j);
}

/* Streams a request; returns the concatenated text, fills ids (token_ids
 * of every chunk) and the finish reason, checks the framing. */
static char *stream_collect(int port, const char *path, const char *body, int32_t *ids, int *n_ids, char *finish,
                            json_t **usage)
{
    th_resp r;
    assert_int_equal(th_http(port, "POST", path, NULL, body, &r), 0);
    if (r.status != 200)
        fail_msg("status %d: %s", r.status, r.body);
    assert_non_null(strcasestr(r.head, "content-type: text/event-stream"));
    bool done;
    json_t *ev = th_sse_events(r.body, &done);
    assert_true(done);
    size_t cap = r.body_len + 1, w = 0;
    char *text = calloc(1, cap);
    *n_ids = 0;
    finish[0] = 0;
    if (usage)
        *usage = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e)
    {
        assert_string_equal(json_string_value(json_object_get(e, "object")), "text_completion");
        json_t *choices = json_object_get(e, "choices");
        if (json_array_size(choices) == 0) {
            assert_true(usage && i == json_array_size(ev) - 1);
            *usage = json_incref(json_object_get(e, "usage"));
            continue;
        }
        json_t *c = json_array_get(choices, 0);
        assert_string_equal(finish, ""); /* nothing after the finish chunk */
        const char *t = json_string_value(json_object_get(c, "text"));
        assert_non_null(t);
        memcpy(text + w, t, json_string_length(json_object_get(c, "text")));
        w += json_string_length(json_object_get(c, "text"));
        json_t *tid = json_object_get(c, "token_ids");
        if (tid)
            *n_ids += th_json_ids(tid, ids + *n_ids, 4096 - *n_ids);
        json_t *fr = json_object_get(c, "finish_reason");
        if (json_is_string(fr))
            strcpy(finish, json_string_value(fr));
    }
    json_decref(ev);
    th_resp_free(&r);
    return text;
}

static void golden_stream(void **state)
{
    int n_cont = tiny.n_tokens - tiny.prompt_len;
    char *body = completion_body(tiny.tokens, tiny.prompt_len, n_cont,
                                 "\"ignore_eos\":true,\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    int32_t ids[4096];
    int n;
    char finish[32];
    json_t *usage;
    char *text = stream_collect(srv.port, "/v1/completions", body, ids, &n, finish, &usage);
    assert_int_equal(n, n_cont);
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], tiny.tokens[tiny.prompt_len + i]);
    char *want = decode(tiny.tokens + tiny.prompt_len, n_cont);
    assert_string_equal(text, want);
    assert_string_equal(finish, "length");
    assert_non_null(usage);
    assert_int_equal(json_integer_value(json_object_get(usage, "completion_tokens")), n_cont);
    assert_int_equal(json_integer_value(json_object_get(usage, "prompt_tokens")), tiny.prompt_len);
    json_decref(usage);
    free(want);
    free(text);
    free(body);
}

/* rates: the real model's attention shapes, a 700-token prompt (three
 * prefill chunks at --max-step-tokens 256). */
#if !TH_SANITIZED /* its 700-token prefill takes minutes under the sanitizers: not built there, not counted */
static void golden_rates(void **state)
{
    char *dir = th_golden_model_dir("rates");
    th_server rs;
    const char *args[] = {"--max-model-len", "1024", "--max-step-tokens", "256", "--max-num-seqs", "2", NULL};
    assert_int_equal(th_start(&rs, dir, args), 0);
    int n_cont = rates.n_tokens - rates.prompt_len;
    char *body = completion_body(rates.tokens, rates.prompt_len, n_cont, "\"ignore_eos\":true,\"stream\":true");
    /* the served name defaults to the --model argument */
    char *named = malloc(strlen(body) + strlen(dir) + 16);
    char *m = strstr(body, "\"tiny\"");
    sprintf(named, "%.*s\"%s\"%s", (int)(m - body), body, dir, m + 6);
    int32_t ids[4096];
    int n;
    char finish[32];
    char *text = stream_collect(rs.port, "/v1/completions", named, ids, &n, finish, NULL);
    assert_int_equal(n, n_cont);
    for (int i = 0; i < n; i++)
        assert_int_equal(ids[i], rates.tokens[rates.prompt_len + i]);
    assert_string_equal(finish, "length");
    assert_int_equal(th_stop(&rs), 0);
    free(text);
    free(named);
    free(body);
    tc_rmtree(dir);
    free(dir);
}
#endif

/* Two prompts x n = 2: choices 2p and 2p+1 belong to prompt p; greedy
 * choices equal the single-prompt answer. */
static void prompts_and_n(void **state)
{
    char *a = th_ids_json(tiny.tokens, 40), *b = th_ids_json(tiny.tokens, 90);
    char body[8192];
    snprintf(
        body, sizeof body,
        "{\"prompt\":[%s,%s],\"n\":2,\"max_tokens\":6,\"temperature\":0,\"return_token_ids\":true,\"ignore_eos\":true}",
        a, b);
    json_t *j = post_ok(srv.port, "/v1/completions", body);
    json_t *ch = json_object_get(j, "choices");
    assert_int_equal(json_array_size(ch), 4);
    for (int p = 0; p < 2; p++) {
        int len = p ? 90 : 40;
        char *single = completion_body(tiny.tokens, len, 6, "\"ignore_eos\":true");
        json_t *one = post_ok(srv.port, "/v1/completions", single);
        json_t *want = json_object_get(json_array_get(json_object_get(one, "choices"), 0), "token_ids");
        for (int k = 0; k < 2; k++) {
            json_t *c = json_array_get(ch, (size_t)(2 * p + k));
            assert_int_equal(json_integer_value(json_object_get(c, "index")), 2 * p + k);
            assert_true(json_equal(json_object_get(c, "token_ids"), want));
            assert_int_equal(json_array_size(json_object_get(c, "prompt_token_ids")), len);
        }
        json_decref(one);
        free(single);
    }
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"), "prompt_tokens")), 130);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")), 24);
    json_decref(j);
    free(a);
    free(b);
}

/* Sampling with a seed repeats; n = 2 uses seed and seed + 1, so choice 1
 * of seed 5 equals choice 0 of seed 6. */
static void seeds(void **state)
{
    char *p = th_ids_json(tiny.tokens, 30);
    char body[4096];
    const char *fmt =
        "{\"prompt\":%s,\"n\":%d,\"seed\":%d,\"max_tokens\":12,\"temperature\":1.0,\"return_token_ids\":true,"
        "\"ignore_eos\":true}";
    snprintf(body, sizeof body, fmt, p, 2, 5);
    json_t *a = post_ok(srv.port, "/v1/completions", body);
    json_t *b = post_ok(srv.port, "/v1/completions", body);
    snprintf(body, sizeof body, fmt, p, 1, 6);
    json_t *c = post_ok(srv.port, "/v1/completions", body);
    json_t *ca = json_object_get(a, "choices"), *cb = json_object_get(b, "choices"),
           *cc = json_object_get(c, "choices");
    for (int k = 0; k < 2; k++)
        assert_true(json_equal(json_object_get(json_array_get(ca, k), "token_ids"),
                               json_object_get(json_array_get(cb, k), "token_ids")));
    assert_true(json_equal(json_object_get(json_array_get(ca, 1), "token_ids"),
                           json_object_get(json_array_get(cc, 0), "token_ids")));
    assert_false(json_equal(json_object_get(json_array_get(ca, 0), "token_ids"),
                            json_object_get(json_array_get(ca, 1), "token_ids")));
    json_decref(a);
    json_decref(b);
    json_decref(c);
    free(p);
}

/* A text prompt is BOS + its encoding; echo puts it before the text. */
static void text_prompt_echo(void **state)
{
    json_t *j = post_ok(srv.port, "/v1/completions",
                        "{\"prompt\":\"is the of\",\"max_tokens\":5,\"temperature\":0,\"echo\":true,"
                        "\"return_token_ids\":true,\"ignore_eos\":true}");
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    int32_t want[] = {0, 278, 270, 294};
    assert_ids(json_object_get(c, "prompt_token_ids"), want, 4);
    int32_t out[16];
    int n = th_json_ids(json_object_get(c, "token_ids"), out, 16);
    assert_int_equal(n, 5);
    char *gen = decode(out, n);
    char expect[256];
    snprintf(expect, sizeof expect, "is the of%s", gen);
    assert_string_equal(json_string_value(json_object_get(c, "text")), expect);
    free(gen);
    json_decref(j);
}

static void completion_logprobs(void **state)
{
    char *body = completion_body(tiny.tokens, 50, 6, "\"logprobs\":3,\"ignore_eos\":true");
    json_t *j = post_ok(srv.port, "/v1/completions", body);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    json_t *lp = json_object_get(c, "logprobs");
    json_t *tokens = json_object_get(lp, "tokens"), *lps = json_object_get(lp, "token_logprobs"),
           *tops = json_object_get(lp, "top_logprobs"), *offs = json_object_get(lp, "text_offset");
    assert_int_equal(json_array_size(tokens), 6);
    assert_int_equal(json_array_size(lps), 6);
    assert_int_equal(json_array_size(tops), 6);
    assert_int_equal(json_array_size(offs), 6);
    int64_t off = 0;
    for (size_t i = 0; i < 6; i++) {
        double v = json_number_value(json_array_get(lps, i));
        json_t *top = json_array_get(tops, i);
        /* 3 alternatives and the chosen token; byte tokens that are not
         * whole characters share the text "\uFFFD", so keys may merge */
        assert_true(json_object_size(top) >= 1 && json_object_size(top) <= 4);
        assert_non_null(json_object_get(top, json_string_value(json_array_get(tokens, i))));
        /* greedy: the chosen token is the most probable */
        const char *k;
        json_t *x;
        json_object_foreach(top, k, x) assert_true(json_number_value(x) <= v + 1e-6);
        assert_true(v <= 0);
        /* offsets are in bytes of the text, token by token */
        assert_int_equal(json_integer_value(json_array_get(offs, i)), off);
        size_t len = 0;
        tok_token_bytes(tok, (int32_t)json_integer_value(json_array_get(json_object_get(c, "token_ids"), i)), &len);
        off += (int64_t)len;
    }
    json_decref(j);
    free(body);
}

/* The logprobs object of a completions choice, checked for shape: n entries
 * in each of its four arrays. */
static json_t *logprobs_of(json_t *choice, size_t n)
{
    json_t *lp = json_object_get(choice, "logprobs");
    static const char *const KEYS[] = {"tokens", "token_logprobs", "top_logprobs", "text_offset"};
    for (int k = 0; k < 4; k++)
        assert_int_equal(json_array_size(json_object_get(lp, KEYS[k])), n);
    return lp;
}

/* echo + logprobs scores the prompt: the whole golden sequence as a prompt
 * gives its continuation's tokens the logprobs they get when generated
 * greedily after the golden prompt; the first prompt token has none; the
 * stream carries the same entries; offsets index the echoed text. */
static void echo_logprobs(void **state)
{
    const int P = tiny.prompt_len, T = tiny.n_tokens;
    char *gen_body = completion_body(tiny.tokens, P, T - P, "\"logprobs\":2,\"ignore_eos\":true");
    json_t *g = post_ok(srv.port, "/v1/completions", gen_body);
    json_t *glp = logprobs_of(json_array_get(json_object_get(g, "choices"), 0), (size_t)(T - P));
    char *echo_body = completion_body(tiny.tokens, T, 1, "\"logprobs\":2,\"echo\":true,\"ignore_eos\":true");
    json_t *e = post_ok(srv.port, "/v1/completions", echo_body);
    json_t *c = json_array_get(json_object_get(e, "choices"), 0);
    json_t *lp = logprobs_of(c, (size_t)T + 1);
    json_t *lps = json_object_get(lp, "token_logprobs"), *tops = json_object_get(lp, "top_logprobs"),
           *offs = json_object_get(lp, "text_offset"), *toks = json_object_get(lp, "tokens");
    assert_true(json_is_null(json_array_get(lps, 0)) && json_is_null(json_array_get(tops, 0)));
    for (int i = 1; i < T; i++) {
        double v = json_number_value(json_array_get(lps, (size_t)i));
        assert_true(v <= 0);
        json_t *top = json_array_get(tops, (size_t)i);
        assert_true(json_object_size(top) >= 1 && json_object_size(top) <= 3);
        assert_non_null(json_object_get(top, json_string_value(json_array_get(toks, (size_t)i))));
        if (i >= P) { /* a golden continuation token: as generated */
            double want = json_number_value(json_array_get(json_object_get(glp, "token_logprobs"), (size_t)(i - P)));
            if (fabs(v - want) > 1e-6)
                fail_msg("prompt position %d: logprob %.9f, generated %.9f", i, v, want);
        }
    }
    /* offsets: the prompt's tokens tile the echoed text; the generated token starts where it ends */
    char *echo_text = decode(tiny.tokens, T);
    const size_t echo_len = strlen(echo_text);
    assert_true(strncmp(json_string_value(json_object_get(c, "text")), echo_text, echo_len) == 0);
    assert_int_equal(json_integer_value(json_array_get(offs, 0)), 0);
    assert_int_equal(json_integer_value(json_array_get(offs, (size_t)T)), (json_int_t)echo_len);
    for (int i = 1; i <= T; i++)
        assert_true(json_integer_value(json_array_get(offs, (size_t)i)) >=
                    json_integer_value(json_array_get(offs, (size_t)i - 1)));

    /* streamed: the first chunk holds the echo and the prompt's entries */
    char *stream_body = completion_body(tiny.tokens, T, 3,
                                        "\"logprobs\":2,\"echo\":true,\"ignore_eos\":true,\"stream\":true");
    th_resp r;
    assert_int_equal(th_http(srv.port, "POST", "/v1/completions", NULL, stream_body, &r), 0);
    assert_int_equal(r.status, 200);
    bool done;
    json_t *ev = th_sse_events(r.body, &done), *first = json_array_get(json_object_get(json_array_get(ev, 0), "choices"), 0);
    assert_true(done);
    /* the echo, the prompt's entries and the first generated token; a
     * loaded machine may put the next tokens in the same chunk (seen once,
     * two CI runs at once on 2 cores: 186 entries for 185) */
    const size_t n_first = json_array_size(json_object_get(json_object_get(first, "logprobs"), "tokens"));
    assert_true(n_first >= (size_t)T + 1 && n_first <= (size_t)T + 3);
    json_t *slp = logprobs_of(first, n_first);
    for (size_t k = 0; k <= (size_t)T; k++) {
        assert_true(json_equal(json_array_get(json_object_get(slp, "token_logprobs"), k), json_array_get(lps, k)));
        assert_true(json_equal(json_array_get(json_object_get(slp, "text_offset"), k), json_array_get(offs, k)));
    }
    assert_true(strncmp(json_string_value(json_object_get(first, "text")), echo_text, echo_len) == 0);
    size_t entries = 0, i;
    json_t *x;
    json_array_foreach(ev, i, x)
    {
        json_t *ch = json_array_get(json_object_get(x, "choices"), 0);
        entries += json_array_size(json_object_get(json_object_get(ch, "logprobs"), "tokens"));
    }
    assert_int_equal(entries, (size_t)T + 3);
    json_decref(ev);
    th_resp_free(&r);

    /* a text prompt: the BOS put before it is scored but not part of the text */
    json_t *t = post_ok(srv.port, "/v1/completions",
                        "{\"prompt\":\"is the of\",\"max_tokens\":1,\"temperature\":0,\"echo\":true,"
                        "\"logprobs\":0}");
    json_t *tlp = logprobs_of(json_array_get(json_object_get(t, "choices"), 0), 5);
    json_t *toffs = json_object_get(tlp, "text_offset");
    assert_int_equal(json_integer_value(json_array_get(toffs, 0)), 0);
    assert_int_equal(json_integer_value(json_array_get(toffs, 1)), 0);
    assert_int_equal(json_integer_value(json_array_get(toffs, 4)), (json_int_t)strlen("is the of"));
    assert_true(json_is_null(json_array_get(json_object_get(tlp, "token_logprobs"), 0)));
    json_decref(t);
    free(echo_text);
    free(stream_body);
    free(echo_body);
    free(gen_body);
    json_decref(e);
    json_decref(g);
}

/* A stop string taken from the middle of the greedy text ends the request
 * at the token that completes it; the text stops just before it. */
static void stop_strings(void **state)
{
    int n_cont = tiny.n_tokens - tiny.prompt_len;
    const int32_t *cont = tiny.tokens + tiny.prompt_len;
    /* the first token from the 8th on whose text is 2+ plain characters */
    int k = -1;
    char stop[64] = "";
    for (int i = 8; i < n_cont && k < 0; i++) {
        char *t = decode(cont + i, 1);
        char *before = decode(cont, i);
        if (strlen(t) >= 2 && strlen(t) < 32 && !strstr(before, t) && (unsigned char)t[0] < 0x80) {
            k = i;
            snprintf(stop, sizeof stop, "%s", t);
        }
        free(t);
        free(before);
    }
    assert_true(k > 0);
    char *full = decode(cont, n_cont);
    size_t cut = (size_t)(strstr(full, stop) - full);
    json_t *stop_json = json_string(stop);
    char *sj = json_dumps(stop_json, JSON_ENCODE_ANY);
    char extra[256];
    snprintf(extra, sizeof extra, "\"ignore_eos\":true,\"stop\":[\"zzzzqqq\",%s]", sj);
    char *body = completion_body(tiny.tokens, tiny.prompt_len, n_cont, extra);
    json_t *j = post_ok(srv.port, "/v1/completions", body);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(c, "finish_reason")), "stop");
    assert_int_equal(json_array_size(json_object_get(c, "token_ids")), k + 1);
    assert_int_equal(strlen(json_string_value(json_object_get(c, "text"))), cut);
    assert_memory_equal(json_string_value(json_object_get(c, "text")), full, cut);
    /* streamed: the same text, and nothing of the stop string leaks */
    snprintf(extra, sizeof extra, "\"ignore_eos\":true,\"stream\":true,\"stop\":%s", sj);
    char *sbody = completion_body(tiny.tokens, tiny.prompt_len, n_cont, extra);
    int32_t ids[4096];
    int n;
    char finish[32];
    char *text = stream_collect(srv.port, "/v1/completions", sbody, ids, &n, finish, NULL);
    assert_string_equal(finish, "stop");
    assert_int_equal(n, k + 1);
    assert_int_equal(strlen(text), cut);
    assert_memory_equal(text, full, cut);
    /* a stop token id ends it with that token */
    snprintf(extra, sizeof extra, "\"ignore_eos\":true,\"stop_token_ids\":[%d]", cont[5]);
    char *tbody = completion_body(tiny.tokens, tiny.prompt_len, n_cont, extra);
    json_t *t = post_ok(srv.port, "/v1/completions", tbody);
    json_t *tc = json_array_get(json_object_get(t, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(tc, "finish_reason")), "stop");
    int32_t tids[64];
    int tn = th_json_ids(json_object_get(tc, "token_ids"), tids, 64);
    int first = 0;
    while (cont[first] != cont[5])
        first++;
    assert_int_equal(tn, first + 1);
    json_decref(t);
    free(tbody);
    free(text);
    free(sbody);
    json_decref(j);
    free(body);
    free(sj);
    json_decref(stop_json);
    free(full);
}

static void small_endpoints(void **state)
{
    th_resp r;
    assert_int_equal(th_http(srv.port, "GET", "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(th_http(srv.port, "GET", "/v1/models", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    json_t *m = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(m, "object")), "list");
    json_t *d0 = json_array_get(json_object_get(m, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(d0, "id")), "tiny");
    assert_string_equal(json_string_value(json_object_get(d0, "object")), "model");
    assert_int_equal(json_integer_value(json_object_get(d0, "max_model_len")), 1024);
    json_decref(m);
    th_resp_free(&r);
    /* metrics after the requests above */
    assert_int_equal(th_http(srv.port, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strcasestr(r.head, "content-type: text/plain"));
    static const char *const WANT[] = {
        "# TYPE v4serve_http_requests_total counter",
        "v4serve_http_requests_total{code=\"200\"}",
        "# TYPE v4serve_time_to_first_token_seconds histogram",
        "v4serve_time_to_first_token_seconds_bucket{le=\"0.1\"}",
        "v4serve_time_to_first_token_seconds_bucket{le=\"+Inf\"}",
        "v4serve_time_to_first_token_seconds_sum",
        "# TYPE v4serve_inter_token_latency_seconds histogram",
        "v4serve_inter_token_latency_seconds_bucket{le=\"0.01\"}",
        "v4serve_inter_token_latency_seconds_count",
        "v4serve_num_requests_running 0",
        "v4serve_num_requests_waiting 0",
        "v4serve_kv_cache_blocks_total",
        "v4serve_kv_cache_blocks_used",
        "v4serve_request_finished_total{reason=\"length\"}",
        "# TYPE v4serve_http_thread_cpu_seconds_total counter",
    };
    for (size_t i = 0; i < sizeof WANT / sizeof *WANT; i++)
        if (!strstr(r.body, WANT[i]))
            fail_msg("metrics lack '%s':\n%s", WANT[i], r.body);
    th_resp_free(&r);
    /* the counters moved by the golden request's exact numbers */
    assert_true(th_metric(srv.port, "v4serve_generation_tokens_total") >= tiny.n_tokens - tiny.prompt_len);
    assert_true(th_metric(srv.port, "v4serve_prompt_tokens_total") >= tiny.prompt_len);
    assert_true(th_metric(srv.port, "v4serve_time_to_first_token_seconds_count") >= 1);
    assert_true(th_metric(srv.port, "v4serve_inter_token_latency_seconds_count") >= 1);
    assert_true(th_metric(srv.port, "v4serve_http_requests_total{code=\"200\"}") >= 3);
    assert_true(th_metric(srv.port, "v4serve_http_thread_cpu_seconds_total") > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(golden_whole),        cmocka_unit_test(golden_stream),
#if !TH_SANITIZED
        cmocka_unit_test(golden_rates),
#endif
        cmocka_unit_test(prompts_and_n),       cmocka_unit_test(seeds),         cmocka_unit_test(text_prompt_echo),
        cmocka_unit_test(echo_logprobs),
        cmocka_unit_test(completion_logprobs), cmocka_unit_test(stop_strings),  cmocka_unit_test(small_endpoints),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
