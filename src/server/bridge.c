/* Engine callbacks and per-request output queues; see bridge.h. */
#include "server/bridge.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/stop.h"
#include "tokenizer/chat.h"

typedef struct choice {
    struct srv_job *job;
    uint64_t eng_id;
    bool submitted, finished;
    bool failed; /* out of memory on either side: the choice ends as an error */
    eng_finish why;
    char msg[256];
    srv_delta pending; /* guarded by job->mu */

    /* Engine-thread state: the callbacks of one engine request run on one
     * thread, one at a time, so these need no lock. */
    tok_stream ts;
    stop_matcher *stop;
    tok_reasoning_split rs;
    bool first_token;
    int64_t t_last_ns;
    char *piece, *emit, *rbuf, *cbuf; /* scratch */
    size_t piece_cap, emit_cap;
} choice;

struct srv_job {
    srv_job_config cfg;
    int32_t think_open, think_close; /* kept as text even when skipping specials (-1: none) */
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* any event: a token or a finish */
    pthread_cond_t cv_done; /* a finish only (waiters for the whole job sleep through tokens) */
    uint64_t events;
    int n_submitted, n_finished;
    int n_choices;
    choice *c;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void srv_delta_clear(srv_delta *d)
{
    srv_buf_clear(&d->ids);
    srv_buf_clear(&d->lps);
    srv_buf_clear(&d->prompt_lps);
    srv_buf_clear(&d->text);
    srv_buf_clear(&d->reasoning);
}

void srv_delta_free(srv_delta *d)
{
    srv_buf_free(&d->ids);
    srv_buf_free(&d->lps);
    srv_buf_free(&d->prompt_lps);
    srv_buf_free(&d->text);
    srv_buf_free(&d->reasoning);
}

int srv_job_create(const srv_job_config *cfg, int n_choices, srv_job **out, v4_err *err)
{
    *out = NULL;
    srv_job *j = calloc(1, sizeof *j);
    if (!j)
        return v4_errf(err, "out of memory");
    j->cfg = *cfg;
    j->n_choices = n_choices;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    pthread_cond_init(&j->cv_done, NULL);
    /* A V4 tokenizer has <think> / </think> as added tokens that may be
     * marked special; the reasoning split needs to see them. */
    j->think_open = cfg->split_reasoning ? tok_find_special(cfg->tok, "<think>") : -1;
    j->think_close = cfg->split_reasoning ? tok_find_special(cfg->tok, "</think>") : -1;
    j->c = calloc((size_t)n_choices, sizeof *j->c);
    if (!j->c) {
        srv_job_free(j);
        return v4_errf(err, "out of memory");
    }
    size_t bound = tok_stream_bound(cfg->tok);
    for (int i = 0; i < n_choices; i++) {
        choice *c = &j->c[i];
        c->job = j;
        c->first_token = true;
        c->piece_cap = bound;
        c->emit_cap = bound + STOP_HOLD_MAX + 8;
        c->piece = malloc(c->piece_cap);
        c->emit = malloc(c->emit_cap);
        c->rbuf = malloc(c->emit_cap + 8);
        c->cbuf = malloc(c->emit_cap + 8);
        tok_reasoning_init(&c->rs, cfg->thinking);
        if (!c->piece || !c->emit || !c->rbuf || !c->cbuf) {
            srv_job_free(j);
            return v4_errf(err, "out of memory");
        }
        if (stop_init(&c->stop, cfg->stops, cfg->n_stops, err)) {
            srv_job_free(j);
            return -1;
        }
    }
    *out = j;
    return 0;
}

/* Appends text that passed the stop matcher to the pending output, split
 * into reasoning and answer for chat. Caller holds job->mu. */
static int append_text(choice *c, const char *s, size_t n)
{
    if (!c->job->cfg.split_reasoning)
        return srv_buf_append(&c->pending.text, s, n);
    size_t nr, nc;
    tok_reasoning_push(&c->rs, s, n, c->rbuf, &nr, c->cbuf, &nc);
    return srv_buf_append(&c->pending.reasoning, c->rbuf, nr) || srv_buf_append(&c->pending.text, c->cbuf, nc);
}

/* Runs decoded text through the stop matcher; returns 1 when a stop string
 * completed, -1 when out of memory. Caller holds job->mu. */
static int feed(choice *c, const char *s, size_t n)
{
    size_t el = 0;
    int st = stop_feed(c->stop, s, n, c->emit, c->emit_cap, &el);
    if (st < 0)
        return -1; /* cannot happen: emit_cap covers a token plus the hold */
    if (append_text(c, c->emit, el))
        return -1;
    return st;
}

static int on_token(void *user, int32_t token, const smp_result *r)
{
    choice *c = user;
    srv_job *j = c->job;
    int64_t t = now_ns();
    if (j->cfg.metrics)
        srv_metrics_token(j->cfg.metrics, c->first_token,
                          (double)(t - (c->first_token ? j->cfg.t_start_ns : c->t_last_ns)) / 1e9);
    c->first_token = false;
    c->t_last_ns = t;

    bool skip = j->cfg.skip_special && token != j->think_open && token != j->think_close;
    v4_err err;
    /* An id the tokenizer lacks (a model vocabulary padded beyond the
     * tokenizer's) has no text. */
    int n = tok_stream_push(j->cfg.tok, &c->ts, token, skip, c->piece, c->piece_cap, &err);
    pthread_mutex_lock(&j->mu);
    int stop = feed(c, c->piece, n > 0 ? (size_t)n : 0);
    if (stop >= 0 && (srv_buf_append(&c->pending.ids, &token, sizeof token) ||
                      (j->cfg.logprobs && srv_buf_append(&c->pending.lps, r, sizeof *r))))
        stop = -1;
    if (stop < 0)
        c->failed = true;
    stop = stop != 0 || c->failed;
    j->events++;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    return stop;
}

/* Prompt positions arrive in order, all before the first token. */
static void on_prompt_logprob(void *user, int pos, const smp_result *r)
{
    choice *c = user;
    srv_job *j = c->job;
    (void)pos;
    pthread_mutex_lock(&j->mu);
    if (srv_buf_append(&c->pending.prompt_lps, r, sizeof *r))
        c->failed = true; /* on_token stops the request at its first token */
    j->events++;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
}

static void on_finish(void *user, eng_finish why, const char *msg)
{
    choice *c = user;
    srv_job *j = c->job;
    pthread_mutex_lock(&j->mu);
    /* Release what the decoder and the matchers held back. */
    int n = tok_stream_flush(&c->ts, c->piece, c->piece_cap);
    bool ok = feed(c, c->piece, n > 0 ? (size_t)n : 0) >= 0;
    size_t el = stop_flush(c->stop, c->emit, c->emit_cap);
    ok = ok && append_text(c, c->emit, el) == 0;
    if (j->cfg.split_reasoning) {
        size_t nr, nc;
        tok_reasoning_flush(&c->rs, c->rbuf, &nr, c->cbuf, &nc);
        ok = ok && srv_buf_append(&c->pending.reasoning, c->rbuf, nr) == 0 &&
             srv_buf_append(&c->pending.text, c->cbuf, nc) == 0;
    }
    c->why = why;
    snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "");
    c->failed |= !ok;
    c->finished = true;
    j->n_finished++;
    j->events++;
    pthread_cond_broadcast(&j->cv);
    pthread_cond_broadcast(&j->cv_done);
    pthread_mutex_unlock(&j->mu);
}

eng_submit_status srv_job_submit(srv_job *j, int i, eng_engine *e, const int32_t *prompt, int n_prompt,
                                 const eng_req_params *p, v4_err *err)
{
    choice *c = &j->c[i];
    eng_callbacks cb = {.on_token = on_token,
                        .on_prompt_logprob = j->cfg.prompt_logprobs ? on_prompt_logprob : NULL,
                        .on_finish = on_finish,
                        .user = c};
    /* Counted before the call: the engine thread may finish the request
     * before eng_submit returns. */
    pthread_mutex_lock(&j->mu);
    j->n_submitted++;
    c->submitted = true;
    pthread_mutex_unlock(&j->mu);
    uint64_t id;
    eng_submit_status st = eng_submit(e, prompt, n_prompt, p, &cb, &id, err);
    pthread_mutex_lock(&j->mu);
    if (st == ENG_OK) {
        c->eng_id = id;
    } else {
        j->n_submitted--;
        c->submitted = false;
    }
    pthread_mutex_unlock(&j->mu);
    return st;
}

void srv_job_cancel(srv_job *j, eng_engine *e)
{
    /* Lock order job -> engine: the engine calls its callbacks (which take
     * the job's lock) without holding its own. */
    pthread_mutex_lock(&j->mu);
    for (int i = 0; i < j->n_choices; i++)
        if (j->c[i].submitted && !j->c[i].finished)
            eng_cancel(e, j->c[i].eng_id);
    pthread_mutex_unlock(&j->mu);
}

static struct timespec deadline(int timeout_ms)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_sec += timeout_ms / 1000;
    t.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

uint64_t srv_job_wait(srv_job *j, uint64_t seen, int timeout_ms)
{
    struct timespec until = deadline(timeout_ms);
    pthread_mutex_lock(&j->mu);
    while (j->events == seen && pthread_cond_timedwait(&j->cv, &j->mu, &until) != ETIMEDOUT) {
    }
    uint64_t ev = j->events;
    pthread_mutex_unlock(&j->mu);
    return ev;
}

bool srv_job_wait_done(srv_job *j, int timeout_ms)
{
    struct timespec until = deadline(timeout_ms);
    pthread_mutex_lock(&j->mu);
    while (j->n_finished < j->n_submitted && pthread_cond_timedwait(&j->cv_done, &j->mu, &until) != ETIMEDOUT) {
    }
    bool done = j->n_finished == j->n_submitted;
    pthread_mutex_unlock(&j->mu);
    return done;
}

static int move(srv_buf *to, srv_buf *from)
{
    int rc = srv_buf_append(to, from->p, from->n);
    srv_buf_clear(from);
    return rc;
}

bool srv_job_drain(srv_job *j, int i, srv_delta *d, eng_finish *why, char *msg, size_t msg_cap)
{
    choice *c = &j->c[i];
    pthread_mutex_lock(&j->mu);
    if (move(&d->ids, &c->pending.ids) | move(&d->lps, &c->pending.lps) |
        move(&d->prompt_lps, &c->pending.prompt_lps) | move(&d->text, &c->pending.text) |
        move(&d->reasoning, &c->pending.reasoning))
        c->failed = true; /* on_token stops the request at its next token */
    bool fin = c->finished;
    if (fin) {
        *why = c->failed ? ENG_FINISH_ERROR : c->why;
        snprintf(msg, msg_cap, "%s", c->failed ? "out of memory while collecting the output" : c->msg);
    }
    pthread_mutex_unlock(&j->mu);
    return fin;
}

void srv_job_free(srv_job *j)
{
    if (!j)
        return;
    pthread_mutex_lock(&j->mu);
    while (j->n_finished < j->n_submitted)
        pthread_cond_wait(&j->cv_done, &j->mu);
    pthread_mutex_unlock(&j->mu);
    for (int i = 0; j->c && i < j->n_choices; i++) {
        choice *c = &j->c[i];
        srv_delta_free(&c->pending);
        stop_free(c->stop);
        free(c->piece);
        free(c->emit);
        free(c->rbuf);
        free(c->cbuf);
    }
    free(j->c);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    pthread_cond_destroy(&j->cv_done);
    free(j);
}
