/* The serving engine through its public API on the CPU backend: continuous
 * batching reproduces the golden greedy continuations and each request's
 * output equals running it alone, under mixed prefill/decode steps, tight
 * token budgets, preemption, cancellation, and bad requests; prompt
 * logprobs match the golden logits, come once per position and in order
 * (also across preemption), and leave the other requests' outputs as they
 * are. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "engine/engine.h"
#include "model/model.h"
#include "testutil.h"
#include "tools/golden.h"

/* What on_prompt_logprob reported, by position. */
typedef struct prompt_scores {
    smp_result r[512];
    int n;          /* reports */
    int last_pos;   /* position of the latest report */
    bool in_order;  /* each report at last_pos + 1, starting at 1 */
    int tokens_seen_first; /* output tokens already out at the first report (should be 0) */
} prompt_scores;

typedef struct out_seq {
    int32_t tok[512];
    int n;
    bool done;
    eng_finish why;
    int stop_after; /* return stop from on_token after this many tokens (0: never) */
    prompt_scores *ps;
} out_seq;

static int collect(void *u, int32_t t, const smp_result *r)
{
    out_seq *o = u;
    (void)r;
    if (o->n < 512)
        o->tok[o->n++] = t;
    return o->stop_after && o->n >= o->stop_after;
}

static void scored(void *u, int pos, const smp_result *r)
{
    out_seq *o = u;
    prompt_scores *ps = o->ps;
    if (ps->n == 0) {
        ps->in_order = pos == 1;
        ps->tokens_seen_first = o->n;
    } else {
        ps->in_order &= pos == ps->last_pos + 1;
    }
    ps->last_pos = pos;
    if (pos >= 0 && pos < 512)
        ps->r[pos] = *r;
    ps->n++;
}

static void done(void *u, eng_finish why, const char *msg)
{
    out_seq *o = u;
    (void)msg;
    o->done = true;
    o->why = why;
}

typedef struct fixture {
    v4_backend *be;
    v4_model *m;
    golden g;
} fixture;

static fixture *open_model(const char *name)
{
    fixture *f = calloc(1, sizeof *f);
    v4_err err;
    char gpath[4096], mpath[4096];
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", tu_golden(name));
    snprintf(mpath, sizeof mpath, "%s/model", tu_golden(name));
    assert_int_equal(golden_load(gpath, &f->g, &err), 0);
    assert_int_equal(backend_cpu_create(2, DT_F8_E4M3, &f->be, &err), 0);
    if (model_open(mpath, f->be, &f->m, &err))
        fail_msg("%s", err.msg);
    return f;
}

static void close_model(fixture *f)
{
    model_close(f->m);
    backend_cpu_destroy(f->be);
    golden_free(&f->g);
    free(f);
}

static eng_engine *make_engine(fixture *f, int seqs, int step_tokens, int64_t len, int64_t kv_bytes)
{
    eng_config c = {.max_num_seqs = seqs, .max_step_tokens = step_tokens, .max_model_len = len,
                    .kv_budget_bytes = kv_bytes, .prompt_logit_rows = 16};
    eng_engine *e;
    v4_err err;
    if (eng_create(f->m, &c, &e, &err))
        fail_msg("%s", err.msg);
    return e;
}

static eng_req_params greedy(int max_tokens)
{
    eng_req_params p = {.sampling = smp_params_default(), .max_tokens = max_tokens, .ignore_eos = true};
    p.sampling.temperature = 0;
    return p;
}

static void submit(eng_engine *e, const int32_t *prompt, int n, const eng_req_params *p, out_seq *o)
{
    eng_callbacks cb = {.on_token = collect, .on_prompt_logprob = scored, .on_finish = done, .user = o};
    uint64_t id;
    v4_err err;
    if (eng_submit(e, prompt, n, p, &cb, &id, &err) != ENG_OK)
        fail_msg("submit: %s", err.msg);
}

static void run_until_idle(eng_engine *e)
{
    v4_err err;
    int r;
    while ((r = eng_step(e, &err)) > 0) {
    }
    if (r < 0)
        fail_msg("step: %s", err.msg);
}

/* A request's output when it runs alone (its prompt logprobs into ps). */
static void run_alone(fixture *f, const int32_t *prompt, int n, const eng_req_params *p, prompt_scores *ps,
                      out_seq *o)
{
    eng_engine *e = make_engine(f, 1, 64, 1024, 0);
    memset(o, 0, sizeof *o);
    o->ps = ps;
    submit(e, prompt, n, p, o);
    run_until_idle(e);
    assert_true(o->done);
    eng_destroy(e);
}

static void expect_golden_continuation(const fixture *f, const out_seq *o)
{
    const int64_t cont = f->g.n_tokens - f->g.prompt_len;
    assert_int_equal(o->n, cont);
    for (int i = 0; i < o->n; i++)
        assert_int_equal(o->tok[i], f->g.tokens[f->g.prompt_len + i]);
}

static void test_alone_matches_golden(void **state)
{
    const char *names[] = {"tiny", "rates"};
    for (int k = 0; k < 2; k++) {
        fixture *f = open_model(names[k]);
        eng_req_params p = greedy((int)(f->g.n_tokens - f->g.prompt_len));
        out_seq o;
        run_alone(f, f->g.tokens, (int)f->g.prompt_len, &p, NULL, &o);
        assert_int_equal(o.why, ENG_FINISH_LENGTH);
        expect_golden_continuation(f, &o);
        close_model(f);
    }
}

/* n concurrent requests, staggered, with a small token budget so prefill
 * chunks share steps with decodes: every fourth request is the golden
 * prompt (its output must be the golden continuation), the others are
 * prefixes of it of different lengths; all must equal their alone runs. */
static void concurrent_case(const char *name, int n, int seqs, int budget)
{
    fixture *f = open_model(name);
    const int cont = (int)(f->g.n_tokens - f->g.prompt_len);
    out_seq *outs = calloc((size_t)n, sizeof *outs), alone;
    int *len = calloc((size_t)n, sizeof *len), *mt = calloc((size_t)n, sizeof *mt);
    for (int i = 0; i < n; i++) {
        len[i] = i % 4 == 0 ? (int)f->g.prompt_len : 5 + (int)((i * 37) % (f->g.prompt_len - 5));
        mt[i] = i % 4 == 0 ? cont : 1 + (i * 7) % 20;
    }
    eng_engine *e = make_engine(f, seqs, budget, 1024, 0);
    v4_err err;
    int submitted = 0;
    while (submitted < n) {
        /* a few new requests, then a few steps */
        for (int k = 0; k < 3 && submitted < n; k++, submitted++) {
            eng_req_params p = greedy(mt[submitted]);
            submit(e, f->g.tokens, len[submitted], &p, &outs[submitted]);
        }
        for (int s = 0; s < 2; s++)
            assert_true(eng_step(e, &err) >= 0);
    }
    run_until_idle(e);
    eng_stats st;
    eng_get_stats(e, &st);
    assert_int_equal(st.running, 0);
    assert_int_equal(st.kv_blocks_used, 0);
    eng_destroy(e);
    for (int i = 0; i < n; i++) {
        assert_true(outs[i].done);
        assert_int_equal(outs[i].n, mt[i]);
        if (i % 4 == 0)
            expect_golden_continuation(f, &outs[i]);
        eng_req_params p = greedy(mt[i]);
        run_alone(f, f->g.tokens, len[i], &p, NULL, &alone);
        assert_int_equal(alone.n, outs[i].n);
        assert_memory_equal(alone.tok, outs[i].tok, (size_t)alone.n * sizeof(int32_t));
    }
    free(outs);
    free(len);
    free(mt);
    close_model(f);
}

static void test_concurrent_tiny_1(void **state) { concurrent_case("tiny", 1, 1, 32); }
/* ASan builds run 8 sequences where the plain build runs 64 (every one is
 * also run alone, and ASan makes that 10-20x slower). */
#define MANY (TU_SANITIZED ? 8 : 64)
static void test_concurrent_tiny_64(void **state) { concurrent_case("tiny", MANY, MANY, 48); }
static void test_concurrent_tiny_64_few_slots(void **state) { concurrent_case("tiny", MANY, MANY / 8, 100); }
static void test_concurrent_rates(void **state) { concurrent_case("rates", TU_SANITIZED ? 2 : 4, 4, 96); }

/* n random prompts of len tokens of tiny's vocabulary, one after another. */
static void random_prompts(int32_t *prompts, int n, int len, const char *seed_name)
{
    tu_rng rng = {tu_seed_from_time(seed_name)};
    for (int i = 0; i < n * len; i++)
        prompts[i] = (int32_t)(tu_next(&rng) % 1024);
}

/* Bytes of one KV block (256 tokens) of f's model. */
static int64_t kv_block_bytes(const fixture *f)
{
    kv_geom g;
    v4_err err;
    assert_int_equal(kv_geom_init(&g, &f->m->cfg, 1, 1, 1024, &err), 0);
    return kv_block_elems(&g) * f->be->kv_elem_bytes;
}

/* A KV budget too small for everyone at once forces preemption; every
 * request still completes with its alone output. */
static void test_preemption(void **state)
{
    fixture *f = open_model("tiny");
    enum { N = 8, LEN = 240, MT = 40 };
    int32_t prompts[N][LEN];
    random_prompts(&prompts[0][0], N, LEN, "preemption");
    /* blocks of 256 tokens: each request ends needing 2; 5 blocks for 4 slots:
     * three are admitted (one block each plus headroom), then cannot all grow */
    v4_err err;
    eng_config c = {.max_num_seqs = 4, .max_step_tokens = 64, .max_model_len = 512,
                    .kv_budget_bytes = 5 * kv_block_bytes(f)};
    eng_engine *e;
    assert_int_equal(eng_create(f->m, &c, &e, &err), 0);
    out_seq outs[N], alone;
    memset(outs, 0, sizeof outs);
    for (int i = 0; i < N; i++) {
        eng_req_params p = greedy(MT);
        submit(e, prompts[i], LEN, &p, &outs[i]);
    }
    run_until_idle(e);
    eng_stats st;
    eng_get_stats(e, &st);
    assert_true(st.preemptions > 0);
    assert_int_equal(st.kv_blocks_used, 0);
    eng_destroy(e);
    for (int i = 0; i < N; i++) {
        eng_req_params p = greedy(MT);
        assert_true(outs[i].done);
        run_alone(f, prompts[i], LEN, &p, NULL, &alone);
        assert_int_equal(outs[i].n, MT);
        assert_memory_equal(alone.tok, outs[i].tok, MT * sizeof(int32_t));
    }
    close_model(f);
}

/* log p(tokens[pos] | tokens before it) from the golden (float64) logits. */
static double golden_logprob(const golden *g, int pos, int32_t tok, double *best)
{
    const float *x = g->logits + (int64_t)(pos - 1) * g->vocab;
    double m = -INFINITY, s = 0;
    for (int64_t v = 0; v < g->vocab; v++)
        m = x[v] > m ? x[v] : m;
    for (int64_t v = 0; v < g->vocab; v++)
        s += exp((double)x[v] - m);
    *best = -log(s); /* the most probable token's logprob */
    return (double)x[tok] - m - log(s);
}

/* A request with prompt logprobs, prefilled at most 17 tokens a step (16
 * extra logit rows) beside two requests without: its reports match the
 * golden logits, come once per position, in order, before its first token;
 * its continuation is the golden one and the others' outputs are their
 * alone outputs. */
static void test_prompt_logprobs_golden(void **state)
{
    fixture *f = open_model("tiny");
    const int P = (int)f->g.prompt_len, cont = (int)(f->g.n_tokens - P);
    static prompt_scores ps;
    memset(&ps, 0, sizeof ps);
    out_seq a = {.ps = &ps}, b = {0}, c = {0}, alone;
    eng_req_params pa = greedy(cont), pb = greedy(12);
    pa.prompt_logprobs = true;
    pa.sampling.n_logprobs = 3;
    eng_engine *e = make_engine(f, 4, 64, 1024, 0);
    submit(e, f->g.tokens, P, &pa, &a);
    submit(e, f->g.tokens + 5, 40, &pb, &b);
    submit(e, f->g.tokens + 9, 70, &pb, &c);
    run_until_idle(e);
    eng_destroy(e);
    assert_true(a.done);
    expect_golden_continuation(f, &a);
    assert_int_equal(ps.n, P - 1);
    assert_true(ps.in_order);
    assert_int_equal(ps.last_pos, P - 1);
    assert_int_equal(ps.tokens_seen_first, 0);
    double worst = 0;
    for (int pos = 1; pos < P; pos++) {
        const smp_result *r = &ps.r[pos];
        double best, want = golden_logprob(&f->g, pos, f->g.tokens[pos], &best);
        assert_int_equal(r->token, f->g.tokens[pos]);
        assert_int_equal(r->n_top, 3);
        worst = fmax(worst, fmax(fabs(r->logprob - want), fabs(r->top[0].logprob - best)));
        assert_true(r->top[0].logprob >= r->top[1].logprob && r->top[1].logprob >= r->top[2].logprob);
        assert_true(r->logprob <= r->top[0].logprob);
    }
    fprintf(stderr, "# prompt logprobs of %d positions: largest difference from the golden %.2e\n", P - 1, worst);
    assert_true(worst <= 1e-4);
    run_alone(f, f->g.tokens + 5, 40, &pb, NULL, &alone);
    assert_int_equal(b.n, alone.n);
    assert_memory_equal(b.tok, alone.tok, (size_t)alone.n * sizeof(int32_t));
    run_alone(f, f->g.tokens + 9, 70, &pb, NULL, &alone);
    assert_int_equal(c.n, alone.n);
    assert_memory_equal(c.tok, alone.tok, (size_t)alone.n * sizeof(int32_t));
    close_model(f);
}

/* Prompt logprobs under preemption: a KV budget too small for everyone, and
 * requests with and without prompt logprobs. Each position is reported once
 * and in order, with the same values as when the request runs alone. */
static void test_prompt_logprobs_preemption(void **state)
{
    fixture *f = open_model("tiny");
    enum { N = 6, LEN = 240, MT = 40 };
    int32_t prompts[N][LEN];
    random_prompts(&prompts[0][0], N, LEN, "prompt_logprobs_preemption");
    static prompt_scores ps[N], ps_alone;
    memset(ps, 0, sizeof ps);
    out_seq outs[N], alone;
    memset(outs, 0, sizeof outs);
    eng_engine *e = make_engine(f, 4, 48, 512, 5 * kv_block_bytes(f));
    eng_req_params p[N];
    for (int i = 0; i < N; i++) {
        p[i] = greedy(MT);
        p[i].prompt_logprobs = i % 3 != 1;
        p[i].sampling.n_logprobs = i % 3 == 2 ? 5 : 0;
        outs[i].ps = &ps[i];
        submit(e, prompts[i], LEN, &p[i], &outs[i]);
    }
    run_until_idle(e);
    eng_stats st;
    eng_get_stats(e, &st);
    assert_true(st.preemptions > 0);
    eng_destroy(e);
    for (int i = 0; i < N; i++) {
        assert_true(outs[i].done);
        memset(&ps_alone, 0, sizeof ps_alone);
        run_alone(f, prompts[i], LEN, &p[i], &ps_alone, &alone);
        assert_int_equal(outs[i].n, MT);
        assert_memory_equal(alone.tok, outs[i].tok, MT * sizeof(int32_t));
        if (!p[i].prompt_logprobs) {
            assert_int_equal(ps[i].n, 0);
            continue;
        }
        assert_int_equal(ps[i].n, LEN - 1);
        assert_true(ps[i].in_order);
        assert_int_equal(ps[i].tokens_seen_first, 0);
        assert_int_equal(ps_alone.n, LEN - 1);
        for (int pos = 1; pos < LEN; pos++) {
            assert_true(ps[i].r[pos].logprob == ps_alone.r[pos].logprob);
            assert_int_equal(ps[i].r[pos].n_top, p[i].sampling.n_logprobs);
            assert_memory_equal(ps[i].r[pos].top, ps_alone.r[pos].top,
                                (size_t)ps[i].r[pos].n_top * sizeof(smp_logprob));
        }
    }
    close_model(f);
}

/* Seeded sampling is a property of the request alone. */
static void test_seeded_sampling_batch_independent(void **state)
{
    fixture *f = open_model("tiny");
    eng_req_params p = greedy(20);
    p.sampling.temperature = 0.9f;
    p.sampling.top_p = 0.95f;
    p.sampling.seed = 1234;
    p.sampling.has_seed = true;
    out_seq alone, outs[6];
    run_alone(f, f->g.tokens, 50, &p, NULL, &alone);
    memset(outs, 0, sizeof outs);
    eng_engine *e = make_engine(f, 6, 40, 1024, 0);
    for (int i = 0; i < 6; i++) {
        eng_req_params q = p;
        if (i != 3)
            q.sampling.seed = 99 + (uint64_t)i;
        submit(e, f->g.tokens + (i == 3 ? 0 : i), 50, &q, &outs[i]);
    }
    run_until_idle(e);
    eng_destroy(e);
    assert_int_equal(outs[3].n, alone.n);
    assert_memory_equal(outs[3].tok, alone.tok, (size_t)alone.n * sizeof(int32_t));
    close_model(f);
}

static void test_cancel_and_stop(void **state)
{
    fixture *f = open_model("tiny");
    eng_engine *e = make_engine(f, 4, 64, 1024, 0);
    out_seq a = {0}, b = {.stop_after = 3}, c = {0};
    eng_req_params p = greedy(100);
    eng_callbacks cb = {.on_token = collect, .on_finish = done, .user = &a};
    uint64_t id;
    v4_err err;
    assert_int_equal(eng_submit(e, f->g.tokens, 100, &p, &cb, &id, &err), ENG_OK);
    submit(e, f->g.tokens, 20, &p, &b);
    submit(e, f->g.tokens, 30, &p, &c);
    for (int s = 0; s < 4; s++)
        assert_true(eng_step(e, &err) >= 0);
    eng_cancel(e, id);
    assert_true(eng_step(e, &err) >= 0);
    assert_true(a.done);
    assert_int_equal(a.why, ENG_FINISH_CANCELLED);
    run_until_idle(e);
    assert_int_equal(b.why, ENG_FINISH_STOP);
    assert_int_equal(b.n, 3);
    assert_int_equal(c.why, ENG_FINISH_LENGTH);
    eng_stats st;
    eng_get_stats(e, &st);
    assert_int_equal(st.kv_blocks_used, 0);
    assert_int_equal(st.finished[ENG_FINISH_CANCELLED], 1);
    eng_cancel(e, 12345); /* unknown ids are ignored */
    eng_destroy(e);
    close_model(f);
}

static void test_bad_requests(void **state)
{
    fixture *f = open_model("tiny");
    eng_engine *e = make_engine(f, 2, 64, 300, 0);
    out_seq o = {0};
    eng_callbacks cb = {.on_token = collect, .on_finish = done, .user = &o};
    uint64_t id;
    v4_err err;
    eng_req_params p = greedy(10);
    int32_t bad_tok[3] = {1, 5000, 2};
    assert_int_equal(eng_submit(e, f->g.tokens, 0, &p, &cb, &id, &err), ENG_BAD_REQUEST);
    assert_non_null(strstr(err.msg, "empty"));
    assert_int_equal(eng_submit(e, bad_tok, 3, &p, &cb, &id, &err), ENG_BAD_REQUEST);
    assert_non_null(strstr(err.msg, "vocabulary"));
    int32_t *longp = calloc(400, sizeof *longp);
    assert_int_equal(eng_submit(e, longp, 300, &p, &cb, &id, &err), ENG_BAD_REQUEST);
    assert_non_null(strstr(err.msg, "context"));
    free(longp);
    p.max_tokens = 0;
    assert_int_equal(eng_submit(e, f->g.tokens, 5, &p, &cb, &id, &err), ENG_BAD_REQUEST);
    assert_non_null(strstr(err.msg, "max_tokens"));
    p = greedy(10);
    p.sampling.top_p = 1.5f;
    assert_int_equal(eng_submit(e, f->g.tokens, 5, &p, &cb, &id, &err), ENG_BAD_REQUEST);
    assert_non_null(strstr(err.msg, "top_p"));
    p = greedy(10);
    p.prompt_logprobs = true; /* no on_prompt_logprob to report them to */
    assert_int_equal(eng_submit(e, f->g.tokens, 5, &p, &cb, &id, &err), ENG_BAD_REQUEST);
    assert_non_null(strstr(err.msg, "prompt logprobs"));
    eng_destroy(e);

    /* an engine without rows for prompt logprobs refuses them */
    eng_config c0 = {.max_num_seqs = 2, .max_step_tokens = 64, .max_model_len = 300};
    assert_int_equal(eng_create(f->m, &c0, &e, &err), 0);
    cb.on_prompt_logprob = scored;
    assert_int_equal(eng_submit(e, f->g.tokens, 5, &p, &cb, &id, &err), ENG_BAD_REQUEST);
    assert_non_null(strstr(err.msg, "prompt logprobs"));
    eng_destroy(e);
    c0.prompt_logit_rows = -1;
    assert_int_equal(eng_create(f->m, &c0, &e, &err), -1);
    assert_non_null(strstr(err.msg, "prompt_logit_rows"));

    /* a full queue refuses, the engine keeps going */
    eng_config c = {.max_num_seqs = 1, .max_step_tokens = 64, .max_model_len = 512, .max_waiting = 2};
    assert_int_equal(eng_create(f->m, &c, &e, &err), 0);
    out_seq q[3];
    memset(q, 0, sizeof q);
    p = greedy(4);
    submit(e, f->g.tokens, 10, &p, &q[0]);
    submit(e, f->g.tokens, 11, &p, &q[1]);
    cb.user = &q[2];
    assert_int_equal(eng_submit(e, f->g.tokens, 12, &p, &cb, &id, &err), ENG_QUEUE_FULL);
    run_until_idle(e);
    assert_true(q[0].done && q[1].done && !q[2].done);
    eng_destroy(e);
    close_model(f);
}

typedef struct thread_arg {
    eng_engine *e;
    const int32_t *prompt;
    int len;
    out_seq o;
} thread_arg;

static void *submit_thread(void *arg)
{
    thread_arg *a = arg;
    eng_req_params p = greedy(8);
    eng_callbacks cb = {.on_token = collect, .on_finish = done, .user = &a->o};
    uint64_t id;
    v4_err err;
    eng_submit(a->e, a->prompt, a->len, &p, &cb, &id, &err);
    return NULL;
}

/* The engine's own thread with submitters on other threads; shutdown drains. */
static void test_engine_thread(void **state)
{
    fixture *f = open_model("tiny");
    eng_engine *e = make_engine(f, 4, 64, 1024, 0);
    v4_err err;
    assert_int_equal(eng_start(e, &err), 0);
    enum { T = 6 };
    pthread_t th[T];
    thread_arg args[T];
    memset(args, 0, sizeof args);
    for (int i = 0; i < T; i++) {
        args[i] = (thread_arg){.e = e, .prompt = f->g.tokens, .len = 10 + i};
        pthread_create(&th[i], NULL, submit_thread, &args[i]);
    }
    for (int i = 0; i < T; i++)
        pthread_join(th[i], NULL);
    eng_shutdown(e, 60);
    for (int i = 0; i < T; i++) {
        assert_true(args[i].o.done);
        assert_int_equal(args[i].o.why, ENG_FINISH_LENGTH);
        assert_int_equal(args[i].o.n, 8);
    }
    /* after shutdown nothing is accepted */
    out_seq late = {0};
    eng_callbacks cb = {.on_token = collect, .on_finish = done, .user = &late};
    eng_req_params p = greedy(2);
    uint64_t id;
    assert_int_equal(eng_submit(e, f->g.tokens, 5, &p, &cb, &id, &err), ENG_SHUTTING_DOWN);
    eng_destroy(e);
    close_model(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alone_matches_golden),
        cmocka_unit_test(test_concurrent_tiny_1),
        cmocka_unit_test(test_concurrent_tiny_64),
        cmocka_unit_test(test_concurrent_tiny_64_few_slots),
        cmocka_unit_test(test_concurrent_rates),
        cmocka_unit_test(test_preemption),
        cmocka_unit_test(test_prompt_logprobs_golden),
        cmocka_unit_test(test_prompt_logprobs_preemption),
        cmocka_unit_test(test_seeded_sampling_batch_independent),
        cmocka_unit_test(test_cancel_and_stop),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_engine_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
