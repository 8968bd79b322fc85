/* OpenAI response pieces as jansson values, and Server-Sent Events framing:
 * envelopes ({"id", "object", "created", "model"}), logprobs in the
 * completions and the chat shapes, usage, finish reasons, the model list.
 * The handlers in generate.c put them together. */
#ifndef V4_SERVER_RESPONSE_H
#define V4_SERVER_RESPONSE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "server/buf.h"
#include "server/request.h"
#include "tokenizer/tokenizer.h"

/* A JSON string from text that may not be valid UTF-8 (a token's bytes can
 * end inside a character): invalid bytes become U+FFFD. */
json_t *srv_json_text(const char *s, size_t n);
json_t *srv_json_ids(const int32_t *ids, int n);

/* {"id", "object", "created", "model"}: object is "text_completion",
 * "chat.completion" or "chat.completion.chunk" by api and chunk. */
json_t *srv_envelope(srv_api api, bool chunk, const char *id, int64_t created, const char *model);
json_t *srv_usage(int64_t prompt_tokens, int64_t completion_tokens);
/* "stop", "length", or "abort" (cancelled, aborted by shutdown). */
const char *srv_finish_reason(eng_finish why);

/* Completions logprobs {"tokens", "token_logprobs", "top_logprobs",
 * "text_offset"}, empty; srv_logprobs_add appends one token: r NULL for a
 * token with nothing before it (the prompt's first: logprob and top null),
 * else its logprob and {token: logprob} of the alternatives and the token.
 * *text_offset is where the token's text starts; it is advanced past the
 * token when the token is part of the text (in_text). Offsets count bytes of
 * the UTF-8 text (a token may hold part of a character, so characters would
 * not do). */
json_t *srv_logprobs_new(void);
void srv_logprobs_add(json_t *lp, const tok_tokenizer *t, int32_t id, const smp_result *r, bool in_text,
                      int64_t *text_offset);
/* Chat logprobs {"content": [{"token", "logprob", "bytes", "top_logprobs"}]}. */
json_t *srv_logprobs_chat(const tok_tokenizer *t, const int32_t *ids, const smp_result *r, int n);

/* Appends "data: <json>\n\n" (compact) and releases obj; -1 on failure. */
int srv_sse_event(srv_buf *out, json_t *obj);

/* JSON text of obj (malloc'd) with its length; releases obj. NULL on failure. */
char *srv_json_dump(json_t *obj, size_t *len);

/* GET /v1/models */
json_t *srv_models_list(const char *name, const char *root, int64_t created, int64_t max_model_len);

#endif
