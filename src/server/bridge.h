/* The bridge between HTTP connection threads and the engine thread.
 *
 * One srv_job per HTTP generation request; it holds one engine request per
 * choice (prompts x n). The engine thread's callbacks detokenize each token
 * (tok_stream_push: whole UTF-8 characters only), run the stop-string
 * matcher (so a completed stop string ends the request in the same step:
 * on_token returns nonzero) and, for chat, the reasoning split; then they
 * append the token id, its logprobs and the new text to the choice's
 * pending output under the job's mutex and signal its condition variables.
 * Callbacks never wait for the connection: the critical section is a few
 * memcpys, and the pending output is bounded by max_tokens (one id, one
 * logprob record and a token's worth of text per generated token; one
 * logprob record per prompt token when prompt logprobs are asked for).
 *
 * The connection thread waits (with a timeout, so it can notice a client
 * that hung up) for any event when streaming, or only for finishes when it
 * answers with one body, then drains the pending output and formats it. A
 * job is freed only after every engine request it submitted has called
 * on_finish (the engine guarantees exactly one call, also for cancelled and
 * aborted requests), so no callback can touch freed memory. */
#ifndef V4_SERVER_BRIDGE_H
#define V4_SERVER_BRIDGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "server/buf.h"
#include "server/metrics.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"

typedef struct srv_job srv_job;

typedef struct srv_job_config {
    const tok_tokenizer *tok;
    srv_metrics *metrics;     /* token counts and latencies; may be NULL */
    int64_t t_start_ns;       /* arrival of the HTTP request (CLOCK_MONOTONIC), for time-to-first-token */
    bool split_reasoning;     /* chat: text before "</think>" is reasoning */
    bool thinking;            /* the prompt opened a reasoning block */
    bool skip_special;        /* leave special tokens out of the text */
    bool logprobs;            /* keep each token's smp_result */
    bool prompt_logprobs;     /* and each prompt position's (the engine's on_prompt_logprob) */
    const char *const *stops; /* stop strings (already validated) */
    size_t n_stops;
} srv_job_config;

/* What one choice produced since the last drain. */
typedef struct srv_delta {
    srv_buf ids;       /* int32_t token ids */
    srv_buf lps;       /* smp_result per id, when logprobs */
    srv_buf prompt_lps; /* smp_result per prompt position from 1 on, in order, when prompt_logprobs */
    srv_buf text;      /* text (chat: the answer, "content") */
    srv_buf reasoning; /* chat: "reasoning_content" */
} srv_delta;

void srv_delta_clear(srv_delta *d);
void srv_delta_free(srv_delta *d);

int srv_job_create(const srv_job_config *c, int n_choices, srv_job **out, v4_err *err);

/* eng_submit for one choice, wired to its callbacks. */
eng_submit_status srv_job_submit(srv_job *j, int choice, eng_engine *e, const int32_t *prompt, int n_prompt,
                                 const eng_req_params *p, v4_err *err);
/* Cancels every submitted choice that has not finished. */
void srv_job_cancel(srv_job *j, eng_engine *e);

/* Blocks until the job's event counter differs from `seen` (a token or a
 * finish arrived since the caller last looked) or timeout_ms pass; returns
 * the counter. */
uint64_t srv_job_wait(srv_job *j, uint64_t seen, int timeout_ms);
/* Moves choice's pending output to the end of d. Returns true when the
 * choice has finished (then d holds all of its output), with the reason and
 * the engine's message (or "" ) in msg. */
bool srv_job_drain(srv_job *j, int choice, srv_delta *d, eng_finish *why, char *msg, size_t msg_cap);
/* Blocks until every submitted choice has finished (true) or timeout_ms
 * pass (false); tokens do not wake it. */
bool srv_job_wait_done(srv_job *j, int timeout_ms);

/* Waits until every submitted choice has finished (cancel first to make
 * that quick), then frees the job. */
void srv_job_free(srv_job *j);

#endif
