/* OpenAI request parsing and validation for POST /v1/completions and
 * POST /v1/chat/completions: the JSON body becomes an srv_gen_req, or an
 * srv_error (400) that names the field at fault.
 *
 * Types are checked strictly (a string where a number belongs is an error,
 * not a zero); null means "the default" for every optional field, as in the
 * OpenAI API. Unknown fields are ignored (clients send extras), but OpenAI
 * fields whose meaning this server cannot honour (suffix, logit_bias,
 * tools, best_of != n, non-text response formats) are refused rather than
 * silently dropped. Ranges of the sampling parameters
 * are checked by smp_params_check, stop strings by stop_init, so the limits
 * live in one place. Tokenizing and the context-length checks happen later,
 * in the handler, which knows the model. */
#ifndef V4_SERVER_REQUEST_H
#define V4_SERVER_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"
#include "engine/stop.h"
#include "server/error.h"
#include "tokenizer/chat.h"

/* Choices in one request (prompts x n): each is an engine request. */
#define SRV_MAX_CHOICES 256

typedef enum srv_api { SRV_API_COMPLETIONS, SRV_API_CHAT } srv_api;

typedef struct srv_prompt {
    char *text; /* a text prompt, or NULL */
    size_t text_len;
    int32_t *ids; /* a token-id prompt (when text is NULL) */
    int n_ids;
} srv_prompt;

typedef struct srv_gen_req {
    srv_api api;
    char *model; /* NULL when absent */
    /* completions */
    srv_prompt *prompts;
    int n_prompts;
    bool echo;             /* completions: with logprobs, params.prompt_logprobs is set */
    /* chat */
    tok_chat_msg *msgs; /* role and content owned */
    size_t n_msgs;
    bool thinking;
    /* both */
    int n;
    int32_t max_tokens;    /* 0: not given (until the context is full) */
    eng_req_params params; /* sampling incl. logprobs, ignore_eos, stop ids (max_tokens set by the handler) */
    char *stop[STOP_MAX_STRINGS];
    int n_stop;
    bool stream, include_usage, return_token_ids, skip_special_tokens;
    bool logprobs;    /* report logprobs */
    int top_logprobs; /* alternatives per token */
} srv_gen_req;

/* Parses a request body. vocab bounds the sampler's top_k check. */
int srv_parse_request(srv_api api, const char *body, size_t len, int64_t vocab, srv_gen_req *out, srv_error *err);
void srv_gen_req_free(srv_gen_req *r);

#endif
