/* The serving engine; see engine.h for the policy. */
#include "engine/engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/kv_cache.h"
#include "model/forward.h"

typedef struct eng_req {
    uint64_t id;
    eng_req_params p;
    eng_callbacks cb;
    int32_t *tokens;     /* prompt, then output; capacity n_prompt + max_tokens */
    int n_prompt, n_output;
    int next_scored;     /* prompt_logprobs: the next prompt position to report */
    int64_t n_computed;  /* tokens folded into the state */
    int32_t slot;        /* -1 unless running */
    int32_t *blocks;     /* capacity: the geometry's max blocks per sequence */
    int32_t n_blocks;
    smp_state smp;
    bool cancelled;
    struct eng_req *next;
} eng_req;

struct eng_engine {
    v4_model *m;
    eng_config cfg;
    kv_geom geom;
    v4_forward *fwd;
    kv_cache *kv;
    smp_workspace ws;
    int64_t vocab;        /* logits per row */
    int64_t sample_vocab; /* ids the sampler may pick */

    pthread_mutex_t mu; /* guards everything below that other threads touch */
    pthread_cond_t cv;
    eng_req *inbox_head, *inbox_tail;
    int n_inbox;
    eng_req **running; /* admission order */
    int n_running;
    eng_req *wait_head, *wait_tail;
    int n_waiting;
    uint64_t next_id;
    bool accepting, abort_all, stop_thread, thread_started;
    pthread_t thread;
    eng_stats stats;

    /* step buffers */
    v4_seq_batch *batch;
    eng_req **batch_req;
    float *logits; /* max_num_seqs + prompt_logit_rows rows */
};

static int64_t blocks_for(const eng_engine *e, int64_t tokens)
{
    return (tokens + e->geom.block_tokens - 1) / e->geom.block_tokens;
}

int64_t eng_max_model_len(const eng_engine *e) { return e->cfg.max_model_len; }
int64_t eng_vocab(const eng_engine *e) { return e->vocab; }

int eng_create(v4_model *m, const eng_config *cfg, eng_engine **out, v4_err *err)
{
    *out = NULL;
    if (cfg->max_num_seqs < 1 || cfg->max_step_tokens < 1 || cfg->max_model_len < 2 || cfg->prompt_logit_rows < 0)
        return v4_errf(err, "engine needs max_num_seqs >= 1, max_step_tokens >= 1, max_model_len >= 2, "
                            "prompt_logit_rows >= 0");
    if (cfg->max_model_len > m->cfg.max_pos)
        return v4_errf(err, "max_model_len %lld exceeds the model's max_position_embeddings %lld",
                       (long long)cfg->max_model_len, (long long)m->cfg.max_pos);
    eng_engine *e = calloc(1, sizeof *e);
    if (!e)
        return v4_errf(err, "out of memory");
    e->m = m;
    e->cfg = *cfg;
    e->vocab = m->cfg.vocab_size;
    e->sample_vocab = cfg->sample_vocab > 0 && cfg->sample_vocab < e->vocab ? cfg->sample_vocab : e->vocab;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->accepting = true;
    e->next_id = 1;

    if (kv_geom_init(&e->geom, &m->cfg, 1, cfg->max_num_seqs, cfg->max_model_len, err))
        goto fail;
    int64_t n_blocks = (int64_t)cfg->max_num_seqs * e->geom.max_blocks_per_seq;
    if (cfg->kv_budget_bytes > 0) {
        int64_t per_block = kv_block_elems(&e->geom) * m->be->kv_elem_bytes;
        n_blocks = per_block > 0 ? cfg->kv_budget_bytes / per_block : n_blocks;
        if (n_blocks < e->geom.max_blocks_per_seq) {
            v4_errf(err, "KV budget of %lld bytes holds %lld blocks; one sequence of max_model_len %lld needs %lld",
                    (long long)cfg->kv_budget_bytes, (long long)n_blocks, (long long)cfg->max_model_len,
                    (long long)e->geom.max_blocks_per_seq);
            goto fail;
        }
    }
    e->geom.n_blocks = n_blocks;
    int max_tokens = cfg->max_step_tokens > cfg->max_num_seqs ? cfg->max_step_tokens : cfg->max_num_seqs;
    if (fwd_create(m, &e->geom, max_tokens, &e->fwd, err) || kv_cache_create(n_blocks, cfg->max_num_seqs, &e->kv, err) ||
        smp_workspace_init(&e->ws, e->sample_vocab, err))
        goto fail;
    e->running = calloc((size_t)cfg->max_num_seqs, sizeof *e->running);
    e->batch = calloc((size_t)cfg->max_num_seqs, sizeof *e->batch);
    e->batch_req = calloc((size_t)cfg->max_num_seqs, sizeof *e->batch_req);
    e->logits = malloc(((size_t)cfg->max_num_seqs + (size_t)cfg->prompt_logit_rows) * (size_t)e->vocab * sizeof(float));
    if (!e->running || !e->batch || !e->batch_req || !e->logits) {
        v4_errf(err, "out of memory");
        goto fail;
    }
    e->stats.kv_blocks_total = n_blocks;
    *out = e;
    return 0;
fail:
    eng_destroy(e);
    return -1;
}

static void req_free(eng_req *r)
{
    smp_state_free(&r->smp);
    free(r->tokens);
    free(r->blocks);
    free(r);
}

/* Returns a request's state to the pools (engine thread). */
static void release(eng_engine *e, eng_req *r)
{
    if (r->slot >= 0)
        kv_slot_give(e->kv, r->slot);
    r->slot = -1;
    kv_blocks_give(e->kv, r->blocks, &r->n_blocks);
    r->n_computed = 0;
}

static void finish(eng_engine *e, eng_req *r, eng_finish why, const char *msg)
{
    release(e, r);
    pthread_mutex_lock(&e->mu);
    e->stats.finished[why]++;
    pthread_mutex_unlock(&e->mu);
    if (r->cb.on_finish)
        r->cb.on_finish(r->cb.user, why, msg);
    req_free(r);
}

void eng_destroy(eng_engine *e)
{
    if (!e)
        return;
    if (e->thread_started)
        eng_shutdown(e, 0);
    /* anything still queued is aborted */
    for (eng_req *r = e->inbox_head, *n; r; r = n) {
        n = r->next;
        finish(e, r, ENG_FINISH_ABORTED, "engine destroyed");
    }
    for (eng_req *r = e->wait_head, *n; r; r = n) {
        n = r->next;
        finish(e, r, ENG_FINISH_ABORTED, "engine destroyed");
    }
    for (int i = 0; i < e->n_running; i++)
        finish(e, e->running[i], ENG_FINISH_ABORTED, "engine destroyed");
    fwd_destroy(e->fwd);
    kv_cache_destroy(e->kv);
    smp_workspace_free(&e->ws);
    free(e->running);
    free(e->batch);
    free(e->batch_req);
    free(e->logits);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
}

eng_submit_status eng_submit(eng_engine *e, const int32_t *prompt, int n_prompt, const eng_req_params *p,
                             const eng_callbacks *cb, uint64_t *id, v4_err *err)
{
    *id = 0;
    if (n_prompt < 1)
        return v4_errf(err, "the prompt is empty"), ENG_BAD_REQUEST;
    if (n_prompt >= e->cfg.max_model_len)
        return v4_errf(err, "the prompt has %d tokens; this model's context is %lld tokens, prompt and output together",
                       n_prompt, (long long)e->cfg.max_model_len),
               ENG_BAD_REQUEST;
    if (p->max_tokens < 1)
        return v4_errf(err, "max_tokens must be at least 1, got %d", p->max_tokens), ENG_BAD_REQUEST;
    if (p->n_stop_ids < 0 || p->n_stop_ids > ENG_MAX_STOP_IDS)
        return v4_errf(err, "at most %d stop token ids", ENG_MAX_STOP_IDS), ENG_BAD_REQUEST;
    if (p->prompt_logprobs && (e->cfg.prompt_logit_rows < 1 || !cb->on_prompt_logprob))
        return v4_errf(err, "prompt logprobs are not enabled on this engine"), ENG_BAD_REQUEST;
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= e->vocab)
            return v4_errf(err, "prompt token %d is %d, outside the vocabulary of %lld", i, prompt[i],
                           (long long)e->vocab),
                   ENG_BAD_REQUEST;
    eng_req *r = calloc(1, sizeof *r);
    if (!r)
        return v4_errf(err, "out of memory"), ENG_BAD_REQUEST;
    int64_t cap = n_prompt + (int64_t)p->max_tokens;
    if (cap > e->cfg.max_model_len)
        cap = e->cfg.max_model_len;
    r->p = *p;
    r->cb = *cb;
    r->n_prompt = n_prompt;
    r->next_scored = 1; /* the first token has nothing before it */
    r->slot = -1;
    r->tokens = malloc((size_t)cap * sizeof(int32_t));
    r->blocks = malloc((size_t)e->geom.max_blocks_per_seq * sizeof(int32_t));
    if (!r->tokens || !r->blocks) {
        req_free(r);
        return v4_errf(err, "out of memory"), ENG_BAD_REQUEST;
    }
    memcpy(r->tokens, prompt, (size_t)n_prompt * sizeof(int32_t));
    if (smp_state_init(&r->smp, &p->sampling, e->sample_vocab, prompt, n_prompt, err)) {
        req_free(r);
        return ENG_BAD_REQUEST;
    }
    pthread_mutex_lock(&e->mu);
    eng_submit_status st = ENG_OK;
    if (!e->accepting) {
        st = ENG_SHUTTING_DOWN;
        v4_errf(err, "the server is shutting down");
    } else if (e->cfg.max_waiting > 0 && e->n_inbox + e->n_waiting >= e->cfg.max_waiting) {
        st = ENG_QUEUE_FULL;
        v4_errf(err, "the request queue is full (%d waiting)", e->n_inbox + e->n_waiting);
    } else {
        r->id = e->next_id++;
        *id = r->id;
        if (e->inbox_tail)
            e->inbox_tail->next = r;
        else
            e->inbox_head = r;
        e->inbox_tail = r;
        e->n_inbox++;
        pthread_cond_signal(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    if (st != ENG_OK)
        req_free(r);
    return st;
}

void eng_cancel(eng_engine *e, uint64_t id)
{
    pthread_mutex_lock(&e->mu);
    for (eng_req *r = e->inbox_head; r; r = r->next)
        if (r->id == id)
            r->cancelled = true;
    for (eng_req *r = e->wait_head; r; r = r->next)
        if (r->id == id)
            r->cancelled = true;
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i]->id == id)
            e->running[i]->cancelled = true;
    pthread_cond_signal(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void eng_get_stats(eng_engine *e, eng_stats *s)
{
    pthread_mutex_lock(&e->mu);
    *s = e->stats;
    s->running = e->n_running;
    s->waiting = e->n_waiting + e->n_inbox;
    pthread_mutex_unlock(&e->mu);
}

/* ---- scheduling (engine thread; list changes under mu so eng_cancel can look) ---- */

static void wait_push_front(eng_engine *e, eng_req *r)
{
    r->next = e->wait_head;
    e->wait_head = r;
    if (!e->wait_tail)
        e->wait_tail = r;
    e->n_waiting++;
}

static eng_req *wait_pop(eng_engine *e)
{
    eng_req *r = e->wait_head;
    e->wait_head = r->next;
    if (!e->wait_head)
        e->wait_tail = NULL;
    r->next = NULL;
    e->n_waiting--;
    return r;
}

static void running_remove(eng_engine *e, int i)
{
    memmove(&e->running[i], &e->running[i + 1], (size_t)(e->n_running - i - 1) * sizeof *e->running);
    e->n_running--;
}

/* Moves new requests into the waiting queue and pulls out cancelled ones
 * (returned as a list to finish outside the lock). */
static eng_req *intake(eng_engine *e, bool abort_all)
{
    eng_req *done = NULL;
    pthread_mutex_lock(&e->mu);
    if (e->inbox_head) {
        if (e->wait_tail)
            e->wait_tail->next = e->inbox_head;
        else
            e->wait_head = e->inbox_head;
        e->wait_tail = e->inbox_tail;
        e->n_waiting += e->n_inbox;
        e->inbox_head = e->inbox_tail = NULL;
        e->n_inbox = 0;
    }
    eng_req **pp = &e->wait_head, *prev = NULL;
    while (*pp) {
        eng_req *r = *pp;
        if (r->cancelled || abort_all) {
            *pp = r->next;
            e->n_waiting--;
            r->next = done;
            done = r;
        } else {
            prev = r;
            pp = &r->next;
        }
    }
    e->wait_tail = prev;
    for (int i = e->n_running - 1; i >= 0; i--) {
        eng_req *r = e->running[i];
        if (r->cancelled || abort_all) {
            running_remove(e, i);
            r->next = done;
            done = r;
        }
    }
    pthread_mutex_unlock(&e->mu);
    return done;
}

static void preempt(eng_engine *e, int i)
{
    eng_req *r = e->running[i];
    release(e, r);
    pthread_mutex_lock(&e->mu);
    running_remove(e, i);
    wait_push_front(e, r);
    e->stats.preemptions++;
    pthread_mutex_unlock(&e->mu);
}

static int64_t known(const eng_req *r) { return (int64_t)r->n_prompt + r->n_output; }

/* The step's chunk for r (at most n tokens from r->n_computed) while prompt
 * logprobs are due: rows start .. start+k-1 score positions start+1 ..
 * start+k, so the chunk needs every row's logits (*all); it is cut at the
 * prompt's end and to the extra rows left in the step. (A request
 * recomputing its prompt after a preemption skips the positions it already
 * reported; see score_prompt.) Returns the chunk's length (>= 1). */
static int plan_chunk(const eng_req *r, int n, int *rows_left, bool *all)
{
    *all = false;
    if (!r->p.prompt_logprobs || r->next_scored >= r->n_prompt)
        return n;
    int64_t cap = r->n_prompt - r->n_computed;
    if (cap > 1 + *rows_left)
        cap = 1 + *rows_left;
    if (n > cap)
        n = (int)cap;
    *rows_left -= n - 1;
    *all = true;
    return n;
}

/* Plans this step's tokens per running request (decodes first, then prefill
 * chunks oldest first), gets their blocks (preempting the newest requests
 * when the pool runs dry), then admits waiting requests. Returns the
 * number of batch entries. */
static int schedule(eng_engine *e)
{
    int budget = e->cfg.max_step_tokens, rows_left = e->cfg.prompt_logit_rows;
    int want[e->cfg.max_num_seqs > 0 ? e->cfg.max_num_seqs : 1];
    bool all[e->cfg.max_num_seqs > 0 ? e->cfg.max_num_seqs : 1];
    for (int i = 0; i < e->n_running; i++) {
        int64_t rem = known(e->running[i]) - e->running[i]->n_computed;
        want[i] = 0;
        all[i] = false;
        if (rem == 1 && budget > 0) {
            want[i] = plan_chunk(e->running[i], 1, &rows_left, &all[i]);
            budget--;
        }
    }
    for (int i = 0; i < e->n_running; i++) {
        int64_t rem = known(e->running[i]) - e->running[i]->n_computed;
        if (rem > 1 && budget > 0) {
            want[i] = plan_chunk(e->running[i], (int)(rem < budget ? rem : budget), &rows_left, &all[i]);
            budget -= want[i];
        }
    }
    /* blocks, oldest first; victims from the newest end */
    for (int i = 0; i < e->n_running; i++) {
        eng_req *r = e->running[i];
        if (!want[i])
            continue;
        int32_t need = (int32_t)blocks_for(e, r->n_computed + want[i]);
        while (kv_blocks_grow(e->kv, r->blocks, &r->n_blocks, need) != 0) {
            int victim = e->n_running - 1;
            budget += want[victim];
            preempt(e, victim);
            if (victim == i)
                break;
        }
    }
    /* admission: first come, first served, while a slot, budget and blocks
     * for the whole known sequence (plus one block of headroom per running
     * sequence) are free */
    while (e->wait_head && budget > 0 && kv_slots_free(e->kv) > 0) {
        eng_req *r = e->wait_head;
        if (kv_blocks_free(e->kv) < blocks_for(e, known(r)) + e->n_running)
            break;
        pthread_mutex_lock(&e->mu);
        wait_pop(e);
        r->slot = kv_slot_take(e->kv);
        r->n_computed = 0;
        const int i = e->n_running++;
        const int n = plan_chunk(r, (int)(known(r) < budget ? known(r) : budget), &rows_left, &all[i]);
        e->running[i] = r;
        want[i] = n;
        pthread_mutex_unlock(&e->mu);
        kv_blocks_grow(e->kv, r->blocks, &r->n_blocks, (int32_t)blocks_for(e, n));
        budget -= n;
    }
    int nb = 0;
    for (int i = 0; i < e->n_running; i++) {
        eng_req *r = e->running[i];
        if (!want[i])
            continue;
        e->batch[nb] = (v4_seq_batch){.slot = r->slot, .start_pos = r->n_computed, .n_tokens = want[i],
                                      .tokens = r->tokens + r->n_computed, .block_table = r->blocks,
                                      .n_blocks = r->n_blocks, .all_logits = all[i]};
        e->batch_req[nb++] = r;
    }
    return nb;
}

static bool is_stop_token(const eng_engine *e, const eng_req *r, int32_t tok)
{
    if (!r->p.ignore_eos && tok == e->m->cfg.eos_id)
        return true;
    for (int i = 0; i < r->p.n_stop_ids; i++)
        if (r->p.stop_ids[i] == tok)
            return true;
    return false;
}

/* Takes a running request out of the batch and finishes it. */
static void end_running(eng_engine *e, eng_req *r, eng_finish why, const char *msg)
{
    for (int i = 0; i < e->n_running; i++)
        if (e->running[i] == r) {
            pthread_mutex_lock(&e->mu);
            running_remove(e, i);
            pthread_mutex_unlock(&e->mu);
            break;
        }
    finish(e, r, why, msg);
}

/* Reports the prompt positions that batch entry b's rows (from logits row
 * `row` on, one a token) score and that are still due. */
static int score_prompt(eng_engine *e, int b, int64_t row, v4_err *err)
{
    eng_req *r = e->batch_req[b];
    const v4_seq_batch *sb = &e->batch[b];
    for (int k = 0; k < sb->n_tokens; k++) {
        const int64_t pos = sb->start_pos + k + 1;
        if (pos < r->next_scored || pos >= r->n_prompt)
            continue;
        smp_result res;
        if (smp_score(&e->ws, e->logits + (row + k) * e->vocab, e->sample_vocab, r->tokens[pos],
                      r->p.sampling.n_logprobs, &res, err))
            return -1;
        r->cb.on_prompt_logprob(r->cb.user, (int)pos, &res);
        r->next_scored = (int)pos + 1;
    }
    return 0;
}

/* Reports prompt logprobs, then samples for every sequence whose known
 * tokens are all computed; finishes those that are done. */
static void sample_and_emit(eng_engine *e, int nb)
{
    int64_t generated = 0, row = 0;
    for (int b = 0; b < nb; b++) {
        eng_req *r = e->batch_req[b];
        /* the entry's logits rows: all of its tokens', or its last one's */
        const int64_t first = row, last = row + (e->batch[b].all_logits ? e->batch[b].n_tokens : 1) - 1;
        row = last + 1;
        v4_err err;
        if (e->batch[b].all_logits && score_prompt(e, b, first, &err)) {
            end_running(e, r, ENG_FINISH_ERROR, err.msg);
            continue;
        }
        r->n_computed += e->batch[b].n_tokens;
        if (r->n_computed < known(r))
            continue; /* prefill continues next step */
        smp_result res;
        if (smp_sample(&r->p.sampling, &r->smp, &e->ws, e->logits + last * e->vocab, e->sample_vocab, &res,
                       &err) ||
            smp_accept(&r->smp, res.token, &err)) {
            end_running(e, r, ENG_FINISH_ERROR, err.msg);
            continue;
        }
        r->tokens[r->n_prompt + r->n_output++] = res.token;
        generated++;
        int stop = r->cb.on_token ? r->cb.on_token(r->cb.user, res.token, &res) : 0;
        eng_finish why = ENG_FINISH_STOP;
        bool done = stop || is_stop_token(e, r, res.token);
        if (!done && (r->n_output >= r->p.max_tokens || known(r) >= e->cfg.max_model_len)) {
            done = true;
            why = ENG_FINISH_LENGTH;
        }
        if (done)
            end_running(e, r, why, NULL);
    }
    pthread_mutex_lock(&e->mu);
    e->stats.generated_tokens += generated;
    pthread_mutex_unlock(&e->mu);
}

int eng_step(eng_engine *e, v4_err *err)
{
    pthread_mutex_lock(&e->mu);
    bool abort_all = e->abort_all;
    pthread_mutex_unlock(&e->mu);
    for (eng_req *r = intake(e, abort_all), *n; r; r = n) {
        n = r->next;
        finish(e, r, r->cancelled ? ENG_FINISH_CANCELLED : ENG_FINISH_ABORTED, NULL);
    }
    int nb = schedule(e);
    if (nb == 0) {
        /* cancellations may have freed blocks: keep the gauge current */
        pthread_mutex_lock(&e->mu);
        e->stats.kv_blocks_used = kv_blocks_total(e->kv) - kv_blocks_free(e->kv);
        pthread_mutex_unlock(&e->mu);
        return 0;
    }
    int64_t prompt_tokens = 0;
    for (int b = 0; b < nb; b++) {
        const eng_req *r = e->batch_req[b];
        int64_t end = e->batch[b].start_pos + e->batch[b].n_tokens;
        if (e->batch[b].start_pos < r->n_prompt)
            prompt_tokens += (end < r->n_prompt ? end : r->n_prompt) - e->batch[b].start_pos;
    }
    if (fwd_step(e->fwd, e->batch, nb, e->logits, err)) {
        /* a backend failure: nothing running can continue */
        while (e->n_running > 0) {
            eng_req *r = e->running[e->n_running - 1];
            pthread_mutex_lock(&e->mu);
            e->n_running--;
            pthread_mutex_unlock(&e->mu);
            finish(e, r, ENG_FINISH_ERROR, err->msg);
        }
        return -1;
    }
    sample_and_emit(e, nb);
    pthread_mutex_lock(&e->mu);
    e->stats.prompt_tokens += prompt_tokens;
    e->stats.steps++;
    e->stats.kv_blocks_used = kv_blocks_total(e->kv) - kv_blocks_free(e->kv);
    pthread_mutex_unlock(&e->mu);
    return nb;
}

/* ---- the engine thread ---- */

static bool has_work(const eng_engine *e) { return e->n_inbox || e->n_waiting || e->n_running || e->abort_all; }

static void *engine_main(void *arg)
{
    eng_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->stop_thread && !has_work(e))
            pthread_cond_wait(&e->cv, &e->mu);
        bool stop = e->stop_thread && !has_work(e);
        pthread_mutex_unlock(&e->mu);
        if (stop)
            break;
        v4_err err;
        eng_step(e, &err);
        pthread_mutex_lock(&e->mu);
        if (e->abort_all && !e->n_inbox && !e->n_waiting && !e->n_running)
            e->abort_all = false;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
    }
    return NULL;
}

int eng_start(eng_engine *e, v4_err *err)
{
    if (e->thread_started)
        return 0;
    if (pthread_create(&e->thread, NULL, engine_main, e) != 0)
        return v4_errf(err, "cannot start the engine thread");
    e->thread_started = true;
    return 0;
}

void eng_shutdown(eng_engine *e, double deadline_s)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += (time_t)deadline_s;
    until.tv_nsec += (long)((deadline_s - (double)(time_t)deadline_s) * 1e9);
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&e->mu);
    e->accepting = false;
    if (e->thread_started) {
        while (has_work(e) && pthread_cond_timedwait(&e->cv, &e->mu, &until) != ETIMEDOUT) {
        }
        if (has_work(e))
            e->abort_all = true;
        e->stop_thread = true;
        pthread_cond_broadcast(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    if (e->thread_started) {
        pthread_join(e->thread, NULL);
        e->thread_started = false;
    }
}
