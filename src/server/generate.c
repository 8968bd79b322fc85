/* POST /v1/completions and POST /v1/chat/completions: parse, tokenize and
 * check the prompts against the model, submit one engine request per choice
 * through the bridge, then either wait for all of them and answer with one
 * JSON body, or answer with a Server-Sent Events stream whose reader pulls
 * the choices' output as it arrives.
 *
 * A client that goes away (seen while waiting, or as a failed write) gets
 * its engine requests cancelled, so their KV blocks return to the pool at
 * the next engine step. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/bridge.h"
#include "server/response.h"
#include "server/server.h"
#include "tokenizer/chat.h"

#define WAIT_SLICE_MS 100          /* how often a waiting thread checks its client */
#define KEEPALIVE_NS 15000000000LL /* an SSE comment after this much silence */

/* One prompt of the request, as the engine sees it. */
typedef struct gen_prompt {
    int32_t *ids;
    int n_ids;
    int32_t max_tokens;
    bool from_text; /* a text prompt: ids[0] is the BOS put before its tokens */
    char *echo;     /* completions with echo: the prompt text */
    size_t echo_len;
} gen_prompt;

/* What the consumer side knows about one choice. */
typedef struct gen_choice {
    int prompt;   /* index into prompts */
    bool started; /* first chunk sent (role, prompt ids, echo) */
    bool final;   /* finish chunk sent */
    eng_finish why;
    char msg[256];
    int64_t n_tokens;
    int64_t text_offset; /* completions logprobs */
    srv_delta all;       /* non-streaming: everything; streaming: the prompt's logprobs */
} gen_choice;

typedef struct gen {
    srv_server *s;
    srv_gen_req r;
    gen_prompt *prompts;
    int n_prompts;
    gen_choice *ch;
    int n_choices;
    srv_job *job;
    char id[48];
    int64_t created;
    int64_t t_arrival_ns; /* for time-to-first-token */
    int64_t prompt_tokens;
    /* streaming */
    bool (*client_gone)(void *ctx);
    void *gone_ctx;
    srv_buf out;
    size_t out_pos;
    uint64_t seen;
    bool done_sent;
    int64_t last_write_ns;
    srv_delta d; /* scratch for one drain */
} gen;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void gen_free(gen *g)
{
    if (!g)
        return;
    if (g->job) {
        srv_job_cancel(g->job, g->s->eng); /* no-op when all finished */
        srv_job_free(g->job);
    }
    for (int i = 0; g->prompts && i < g->n_prompts; i++) {
        free(g->prompts[i].ids);
        free(g->prompts[i].echo);
    }
    free(g->prompts);
    for (int i = 0; g->ch && i < g->n_choices; i++)
        srv_delta_free(&g->ch[i].all);
    free(g->ch);
    srv_delta_free(&g->d);
    srv_buf_free(&g->out);
    srv_gen_req_free(&g->r);
    atomic_fetch_sub(&g->s->active, 1);
    free(g);
}

static int oom(srv_error *e) { return srv_errorf(e, 500, NULL, "out of memory"); }

/* The prompt's token ids: a text prompt gets BOS and is encoded with the
 * added tokens recognised (as Hugging Face tokenizers and vLLM do); a chat
 * goes through the DeepSeek-V4 template. */
static int tokenize(gen *g, srv_error *e)
{
    srv_gen_req *r = &g->r;
    const tok_tokenizer *tok = g->s->tok;
    v4_err err;
    g->n_prompts = r->api == SRV_API_CHAT ? 1 : r->n_prompts;
    g->prompts = calloc((size_t)g->n_prompts, sizeof *g->prompts);
    if (!g->prompts)
        return oom(e);
    const char *param = r->api == SRV_API_CHAT ? "messages" : "prompt";
    for (int p = 0; p < g->n_prompts; p++) {
        gen_prompt *gp = &g->prompts[p];
        if (r->api == SRV_API_CHAT) {
            size_t n;
            if (tok_chat_encode(tok, r->msgs, r->n_msgs, r->thinking, &gp->ids, &n, &err))
                return srv_errorf(e, 400, param, "%s", err.msg);
            gp->n_ids = (int)n;
        } else if (r->prompts[p].text) {
            const srv_prompt *sp = &r->prompts[p];
            int32_t *body = NULL;
            size_t n = 0;
            if (tok_encode(tok, sp->text, sp->text_len, true, &body, &n, &err))
                return srv_errorf(e, 400, param, "%s", err.msg);
            gp->ids = malloc((n + 1) * sizeof *gp->ids);
            if (!gp->ids) {
                free(body);
                return oom(e);
            }
            gp->ids[0] = tok_bos_id(tok);
            if (n)
                memcpy(gp->ids + 1, body, n * sizeof *body);
            free(body);
            gp->n_ids = (int)n + 1;
            gp->from_text = true;
            if (r->echo) {
                if (!(gp->echo = strndup(sp->text, sp->text_len)))
                    return oom(e);
                gp->echo_len = sp->text_len;
            }
        } else {
            const srv_prompt *sp = &r->prompts[p];
            gp->ids = malloc((size_t)sp->n_ids * sizeof *gp->ids);
            if (!gp->ids)
                return oom(e);
            memcpy(gp->ids, sp->ids, (size_t)sp->n_ids * sizeof *gp->ids);
            gp->n_ids = sp->n_ids;
        }
        for (int i = 0; i < gp->n_ids; i++)
            if (gp->ids[i] < 0 || gp->ids[i] >= g->s->vocab)
                return srv_errorf(e, 400, param,
                                  "prompt %d token %d is %d: token id outside the model's vocabulary (%lld ids)", p, i,
                                  gp->ids[i], (long long)g->s->vocab);
        if (r->echo && !gp->echo &&
            tok_decode_n(tok, gp->ids, (size_t)gp->n_ids, r->skip_special_tokens, &gp->echo, &gp->echo_len, &err))
            return srv_errorf(e, 400, param, "echo: %s", err.msg);
        /* OpenAI's rule: prompt plus max_tokens must fit the context. */
        int64_t ctx = g->s->max_model_len;
        if (gp->n_ids >= ctx) {
            srv_errorf(e, 400, param,
                       "This model's maximum context length is %lld tokens. However, your request has %d input "
                       "tokens. Please reduce the length of the input.",
                       (long long)ctx, gp->n_ids);
            e->code = "context_length_exceeded";
            return -1;
        }
        if (r->max_tokens && gp->n_ids + (int64_t)r->max_tokens > ctx) {
            srv_errorf(e, 400, r->api == SRV_API_CHAT ? "max_completion_tokens" : "max_tokens",
                       "This model's maximum context length is %lld tokens. However, you requested %lld tokens "
                       "(%d in the input, %d for the completion). Please reduce the length of the input or the "
                       "completion.",
                       (long long)ctx, (long long)gp->n_ids + r->max_tokens, gp->n_ids, r->max_tokens);
            e->code = "context_length_exceeded";
            return -1;
        }
        gp->max_tokens = r->max_tokens ? r->max_tokens : (int32_t)(ctx - gp->n_ids);
        g->prompt_tokens += gp->n_ids;
    }
    return 0;
}

/* One engine request per choice; choices of prompt p are p*n .. p*n+n-1
 * (vLLM's order), and with a seed choice i of a prompt uses seed + i so the
 * n samples differ but repeat. All or nothing: a refusal cancels those
 * already queued. */
static int submit(gen *g, srv_error *e)
{
    srv_gen_req *r = &g->r;
    g->n_choices = g->n_prompts * r->n;
    g->ch = calloc((size_t)g->n_choices, sizeof *g->ch);
    if (!g->ch)
        return oom(e);
    srv_job_config jc = {
        .tok = g->s->tok,
        .metrics = g->s->metrics,
        .t_start_ns = g->t_arrival_ns,
        .split_reasoning = r->api == SRV_API_CHAT,
        .thinking = r->api == SRV_API_CHAT && r->thinking,
        .skip_special = r->skip_special_tokens,
        .logprobs = r->logprobs,
        .prompt_logprobs = r->params.prompt_logprobs,
        .stops = (const char *const *)r->stop,
        .n_stops = (size_t)r->n_stop,
    };
    v4_err err;
    if (srv_job_create(&jc, g->n_choices, &g->job, &err))
        return srv_errorf(e, 500, NULL, "%s", err.msg);
    for (int c = 0; c < g->n_choices; c++) {
        gen_prompt *gp = &g->prompts[c / r->n];
        g->ch[c].prompt = c / r->n;
        g->ch[c].text_offset = (int64_t)gp->echo_len;
        eng_req_params p = r->params;
        p.max_tokens = gp->max_tokens;
        if (p.sampling.has_seed)
            p.sampling.seed += (uint64_t)(c % r->n);
        eng_submit_status st = srv_job_submit(g->job, c, g->s->eng, gp->ids, gp->n_ids, &p, &err);
        if (st == ENG_OK)
            continue;
        srv_job_cancel(g->job, g->s->eng);
        if (st == ENG_QUEUE_FULL) {
            srv_errorf(e, 429, NULL, "the server is busy: %s; retry later", err.msg);
            e->code = "rate_limit_exceeded";
        } else if (st == ENG_SHUTTING_DOWN) {
            srv_errorf(e, 503, NULL, "%s", err.msg);
        } else {
            srv_errorf(e, 400, NULL, "%s", err.msg);
        }
        return -1;
    }
    srv_metrics_prompt_tokens(g->s->metrics, g->prompt_tokens);
    return 0;
}

/* ---- non-streaming ---- */

/* Whether prompt token i is part of the echoed text: the BOS put before a
 * text prompt is not, nor a special token that skip_special_tokens left out
 * of an echoed id prompt. */
static bool in_echo(const gen *g, const gen_prompt *gp, int i)
{
    if (gp->from_text)
        return i > 0;
    return !(g->r.skip_special_tokens && tok_is_special(g->s->tok, gp->ids[i]));
}

/* The logprobs of choice c's tokens in d; with prompt logprobs, the first
 * time (`first`) the prompt's tokens lead (their records in ch->all: the
 * first token's logprob is null, nothing comes before it). */
static json_t *choice_logprobs(gen *g, int c, const srv_delta *d, bool first)
{
    gen_choice *ch = &g->ch[c];
    const int32_t *ids = (const int32_t *)d->ids.p;
    int n = (int)(d->ids.n / sizeof *ids);
    if (!g->r.logprobs)
        return json_null();
    const smp_result *lp = (const smp_result *)d->lps.p;
    if (g->r.api == SRV_API_CHAT)
        return srv_logprobs_chat(g->s->tok, ids, lp, n);
    json_t *o = srv_logprobs_new();
    if (first && g->r.params.prompt_logprobs) {
        const gen_prompt *gp = &g->prompts[ch->prompt];
        const smp_result *plp = (const smp_result *)ch->all.prompt_lps.p;
        /* all of them unless the request ended early (aborted at shutdown) */
        const int scored = (int)(ch->all.prompt_lps.n / sizeof *plp);
        int64_t off = 0;
        for (int i = 0; i < gp->n_ids && i <= scored; i++)
            srv_logprobs_add(o, g->s->tok, gp->ids[i], i ? &plp[i - 1] : NULL, in_echo(g, gp, i), &off);
    }
    for (int i = 0; i < n; i++)
        srv_logprobs_add(o, g->s->tok, ids[i], &lp[i], true, &ch->text_offset);
    return o;
}

static json_t *whole_choice(gen *g, int c)
{
    gen_choice *ch = &g->ch[c];
    const srv_delta *d = &ch->all;
    const int32_t *ids = (const int32_t *)d->ids.p;
    int n = (int)(d->ids.n / sizeof *ids);
    json_t *o = json_pack("{s:i}", "index", c);
    if (g->r.api == SRV_API_COMPLETIONS) {
        const gen_prompt *gp = &g->prompts[ch->prompt];
        srv_buf text = {0};
        srv_buf_append(&text, gp->echo ? gp->echo : "", gp->echo_len);
        srv_buf_append(&text, d->text.p, d->text.n);
        json_object_set_new(o, "text", srv_json_text(text.p ? text.p : "", text.n));
        srv_buf_free(&text);
    } else {
        json_t *m = json_pack("{s:s,s:o}", "role", "assistant", "content",
                              srv_json_text(d->text.p ? d->text.p : "", d->text.n));
        json_object_set_new(m, "reasoning_content",
                            g->r.thinking ? srv_json_text(d->reasoning.p ? d->reasoning.p : "", d->reasoning.n)
                                          : json_null());
        json_object_set_new(o, "message", m);
    }
    json_object_set_new(o, "logprobs", choice_logprobs(g, c, d, true));
    json_object_set_new(o, "finish_reason", json_string(srv_finish_reason(ch->why)));
    if (g->r.return_token_ids) {
        if (g->r.api == SRV_API_COMPLETIONS)
            json_object_set_new(o, "prompt_token_ids",
                                srv_json_ids(g->prompts[ch->prompt].ids, g->prompts[ch->prompt].n_ids));
        json_object_set_new(o, "token_ids", srv_json_ids(ids, n));
    }
    return o;
}

static void reply_whole(gen *g, const srv_http_req *req, srv_reply *rep)
{
    bool cancelled = false;
    while (!srv_job_wait_done(g->job, WAIT_SLICE_MS)) {
        if (!cancelled && req->client_gone(req->gone_ctx)) {
            srv_job_cancel(g->job, g->s->eng);
            cancelled = true;
        }
    }
    srv_error e;
    int64_t completion = 0;
    for (int c = 0; c < g->n_choices; c++) {
        gen_choice *ch = &g->ch[c];
        srv_job_drain(g->job, c, &ch->all, &ch->why, ch->msg, sizeof ch->msg);
        completion += (int64_t)(ch->all.ids.n / sizeof(int32_t));
        if (ch->why == ENG_FINISH_ERROR) {
            srv_errorf(&e, 500, NULL, "generation failed: %s", ch->msg);
            srv_reply_error(rep, &e);
            return;
        }
    }
    json_t *o = srv_envelope(g->r.api, false, g->id, g->created, g->s->cfg.model_name);
    json_t *choices = json_array();
    for (int c = 0; c < g->n_choices; c++)
        json_array_append_new(choices, whole_choice(g, c));
    json_object_set_new(o, "choices", choices);
    json_object_set_new(o, "usage", srv_usage(g->prompt_tokens, completion));
    if (g->r.return_token_ids && g->r.api == SRV_API_CHAT)
        json_object_set_new(o, "prompt_token_ids", srv_json_ids(g->prompts[0].ids, g->prompts[0].n_ids));
    rep->body = srv_json_dump(o, &rep->body_len);
    if (!rep->body) {
        srv_errorf(&e, 500, NULL, "out of memory");
        srv_reply_error(rep, &e);
        return;
    }
    rep->status = 200;
    rep->content_type = "application/json";
}

/* ---- streaming ---- */

/* A chunk for choice c from the delta just drained; fin says whether the
 * choice has finished. Returns 0, or -1 when out of memory. */
static int stream_choice(gen *g, int c, const srv_delta *d, bool fin)
{
    gen_choice *ch = &g->ch[c];
    const gen_prompt *gp = &g->prompts[ch->prompt];
    const int32_t *ids = (const int32_t *)d->ids.p;
    int n = (int)(d->ids.n / sizeof *ids);
    bool chat = g->r.api == SRV_API_CHAT;
    ch->n_tokens += n;
    if (fin && ch->why == ENG_FINISH_ERROR) {
        srv_error e;
        srv_errorf(&e, 500, NULL, "generation failed for choice %d: %s", c, ch->msg);
        ch->final = true;
        return srv_sse_event(&g->out, srv_error_object(&e));
    }
    if (g->r.params.prompt_logprobs && !ch->started) {
        /* The prompt's logprobs all come before the first token: the first
         * chunk waits for them (it holds the echo and their logprobs). */
        if (srv_buf_append(&ch->all.prompt_lps, d->prompt_lps.p, d->prompt_lps.n))
            return -1;
        if (!n && !fin)
            return 0;
    }
    bool first = !ch->started;
    ch->started = true;
    bool has_text = d->text.n || d->reasoning.n || (first && gp->echo_len);
    /* Nothing to say (a token whose bytes are still held back) unless the
     * client wants every token's id or logprob. */
    if (!fin && !first && !has_text && !(n && (g->r.return_token_ids || g->r.logprobs)))
        return 0;
    json_t *o = srv_envelope(g->r.api, true, g->id, g->created, g->s->cfg.model_name);
    json_t *choice = json_pack("{s:i}", "index", c);
    if (chat) {
        json_t *delta = json_object();
        if (first)
            json_object_set_new(delta, "role", json_string("assistant"));
        if (d->reasoning.n)
            json_object_set_new(delta, "reasoning_content", srv_json_text(d->reasoning.p, d->reasoning.n));
        if (d->text.n || first)
            json_object_set_new(delta, "content", srv_json_text(d->text.p ? d->text.p : "", d->text.n));
        json_object_set_new(choice, "delta", delta);
        if (first && g->r.return_token_ids)
            json_object_set_new(o, "prompt_token_ids", srv_json_ids(gp->ids, gp->n_ids));
    } else {
        srv_buf text = {0};
        if (first)
            srv_buf_append(&text, gp->echo ? gp->echo : "", gp->echo_len);
        srv_buf_append(&text, d->text.p, d->text.n);
        json_object_set_new(choice, "text", srv_json_text(text.p ? text.p : "", text.n));
        srv_buf_free(&text);
        if (first && g->r.return_token_ids)
            json_object_set_new(choice, "prompt_token_ids", srv_json_ids(gp->ids, gp->n_ids));
    }
    json_object_set_new(choice, "logprobs",
                        n || (first && g->r.params.prompt_logprobs) ? choice_logprobs(g, c, d, first) : json_null());
    json_object_set_new(choice, "finish_reason", fin ? json_string(srv_finish_reason(ch->why)) : json_null());
    if (g->r.return_token_ids)
        json_object_set_new(choice, "token_ids", srv_json_ids(ids, n));
    json_object_set_new(o, "choices", json_pack("[o]", choice));
    ch->final = fin;
    return srv_sse_event(&g->out, o);
}

/* Drains every choice and formats what it produced into g->out; after the
 * last finish, the usage chunk (when asked for) and [DONE]. */
static int stream_produce(gen *g)
{
    bool all_final = true;
    for (int c = 0; c < g->n_choices; c++) {
        gen_choice *ch = &g->ch[c];
        if (ch->final)
            continue;
        srv_delta_clear(&g->d);
        bool fin = srv_job_drain(g->job, c, &g->d, &ch->why, ch->msg, sizeof ch->msg);
        /* chat: the role chunk goes out at once, before the first token */
        if (stream_choice(g, c, &g->d, fin))
            return -1;
        all_final &= ch->final;
    }
    if (!all_final)
        return 0;
    if (g->r.include_usage) {
        int64_t completion = 0;
        for (int c = 0; c < g->n_choices; c++)
            completion += g->ch[c].n_tokens;
        json_t *o = srv_envelope(g->r.api, true, g->id, g->created, g->s->cfg.model_name);
        json_object_set_new(o, "choices", json_array());
        json_object_set_new(o, "usage", srv_usage(g->prompt_tokens, completion));
        if (srv_sse_event(&g->out, o))
            return -1;
    }
    g->done_sent = true;
    return srv_buf_puts(&g->out, "data: [DONE]\n\n");
}

static ssize_t stream_read(void *ctx, char *buf, size_t max)
{
    gen *g = ctx;
    while (g->out_pos == g->out.n) {
        srv_buf_clear(&g->out);
        g->out_pos = 0;
        if (g->done_sent)
            return 0;
        if (stream_produce(g))
            return -1;
        if (g->out.n)
            break;
        uint64_t ev = srv_job_wait(g->job, g->seen, WAIT_SLICE_MS);
        /* While tokens flow a vanished client shows as a failed write;
         * when nothing came for a while, look at the socket. */
        bool quiet = ev == g->seen;
        g->seen = ev;
        if (quiet && g->client_gone(g->gone_ctx)) {
            srv_job_cancel(g->job, g->s->eng);
            return -1;
        }
        /* An SSE comment keeps proxies and idle timers from closing a
         * stream that waits long for its first token. */
        if (now_ns() - g->last_write_ns > KEEPALIVE_NS && srv_buf_puts(&g->out, ": keep-alive\n\n"))
            return -1;
    }
    size_t n = g->out.n - g->out_pos;
    if (n > max)
        n = max;
    memcpy(buf, g->out.p + g->out_pos, n);
    g->out_pos += n;
    g->last_write_ns = now_ns();
    return (ssize_t)n;
}

static void stream_free(void *ctx) { gen_free(ctx); }

void srv_generate(srv_server *s, srv_api api, const srv_http_req *req, srv_reply *rep)
{
    srv_error e;
    gen *g = calloc(1, sizeof *g);
    if (!g) {
        oom(&e);
        srv_reply_error(rep, &e);
        return;
    }
    g->s = s;
    g->t_arrival_ns = now_ns();
    atomic_fetch_add(&s->active, 1);
    if (atomic_load(&s->shutting_down)) {
        srv_errorf(&e, 503, NULL, "the server is shutting down");
        goto fail;
    }
    if (srv_parse_request(api, req->body, req->body_len, s->vocab, &g->r, &e))
        goto fail;
    if (g->r.model && strcmp(g->r.model, s->cfg.model_name) != 0) {
        srv_errorf(&e, 404, "model", "The model '%.200s' does not exist; this server serves '%s'", g->r.model,
                   s->cfg.model_name);
        e.code = "model_not_found";
        goto fail;
    }
    if (tokenize(g, &e) || submit(g, &e))
        goto fail;
    snprintf(g->id, sizeof g->id, "%s-%016llx", api == SRV_API_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)atomic_fetch_add(&s->next_id, 1));
    g->created = (int64_t)time(NULL);
    if (!g->r.stream) {
        reply_whole(g, req, rep);
        gen_free(g);
        return;
    }
    g->client_gone = req->client_gone;
    g->gone_ctx = req->gone_ctx;
    g->last_write_ns = now_ns();
    rep->status = 200;
    rep->content_type = "text/event-stream";
    rep->read = stream_read;
    rep->stream_free = stream_free;
    rep->stream_ctx = g;
    return;
fail:
    srv_reply_error(rep, &e);
    gen_free(g);
}
