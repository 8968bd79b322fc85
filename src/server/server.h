/* The OpenAI-compatible server: routes HTTP requests to the endpoints
 * (POST /v1/completions, POST /v1/chat/completions, GET /v1/models,
 * GET /health, GET /metrics), checks the API key, and counts what it answers.
 * It runs on an engine and tokenizer the caller owns (cmd_serve.c), behind
 * the HTTP layer (http.h), which calls srv_handle from connection threads. */
#ifndef V4_SERVER_SERVER_H
#define V4_SERVER_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "engine/engine.h"
#include "server/error.h"
#include "server/http.h"
#include "server/metrics.h"
#include "server/request.h"
#include "tokenizer/tokenizer.h"
#include "util/err.h"

typedef struct srv_config {
    const char *model_name; /* what clients put in "model" and /v1/models lists */
    const char *model_root; /* the model folder, for /v1/models */
    const char *api_key;    /* NULL or "": no authentication */
} srv_config;

typedef struct srv_server {
    srv_config cfg;
    eng_engine *eng;
    const tok_tokenizer *tok;
    srv_metrics *metrics;
    int64_t created; /* start time, Unix seconds */
    int64_t max_model_len;
    int64_t vocab; /* prompt ids are below this: the model's and the tokenizer's */
    atomic_bool shutting_down;
    atomic_int active; /* generation requests whose reply is not yet complete */
    atomic_uint_fast64_t next_id;
} srv_server;

int srv_create(const srv_config *cfg, eng_engine *eng, const tok_tokenizer *tok, srv_server **out, v4_err *err);
void srv_free(srv_server *s);

/* The srv_handler_fn for the HTTP layer; app is the srv_server. */
void srv_handle(void *app, const srv_http_req *req, srv_reply *rep);

/* srv_http_opts.on_request_cpu for the metrics; app is the srv_server. */
void srv_record_http_cpu(void *app, double seconds);

/* From now on generation requests and /health answer 503. */
void srv_begin_shutdown(srv_server *s);
/* Generation requests still being answered. */
int srv_active(srv_server *s);

/* Fills rep with an OpenAI error object (in generate.c and server.c). */
void srv_reply_error(srv_reply *rep, const srv_error *e);
/* The generation endpoints (generate.c). */
void srv_generate(srv_server *s, srv_api api, const srv_http_req *req, srv_reply *rep);

#endif
