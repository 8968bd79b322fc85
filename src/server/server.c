/* Routing, authentication and the small endpoints; see server.h. */
#include "server/server.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/response.h"

int srv_create(const srv_config *cfg, eng_engine *eng, const tok_tokenizer *tok, srv_server **out, v4_err *err)
{
    *out = NULL;
    srv_server *s = calloc(1, sizeof *s);
    if (!s || !(s->metrics = srv_metrics_create())) {
        free(s);
        return v4_errf(err, "out of memory");
    }
    s->cfg = *cfg;
    s->eng = eng;
    s->tok = tok;
    s->created = (int64_t)time(NULL);
    s->max_model_len = eng_max_model_len(eng);
    /* Prompt ids must be ids of both the model and the tokenizer (the
     * engine samples and accepts only those, see eng_config.sample_vocab). */
    s->vocab = eng_vocab(eng) < tok_vocab_size(tok) ? eng_vocab(eng) : tok_vocab_size(tok);
    atomic_init(&s->shutting_down, false);
    atomic_init(&s->active, 0);
    /* Response ids only need to be unique; the start time keeps them
     * distinct across restarts. */
    atomic_init(&s->next_id, (uint_fast64_t)s->created << 24);
    *out = s;
    return 0;
}

void srv_free(srv_server *s)
{
    if (!s)
        return;
    srv_metrics_free(s->metrics);
    free(s);
}

void srv_record_http_cpu(void *app, double seconds) { srv_metrics_http_cpu(((srv_server *)app)->metrics, seconds); }

void srv_begin_shutdown(srv_server *s) { atomic_store(&s->shutting_down, true); }
int srv_active(srv_server *s) { return atomic_load(&s->active); }

void srv_reply_error(srv_reply *rep, const srv_error *e)
{
    static const char FALLBACK[] = "{\"error\":{\"message\":\"error\",\"type\":\"server_error\",\"param\":null,"
                                   "\"code\":null}}";
    rep->status = e->status;
    rep->content_type = "application/json";
    rep->body = srv_error_json(e, &rep->body_len);
    if (!rep->body) {
        rep->body = strdup(FALLBACK);
        rep->body_len = rep->body ? strlen(FALLBACK) : 0;
    }
    rep->auth_challenge = e->status == 401;
}

static void reply_json(srv_reply *rep, int status, json_t *obj)
{
    rep->body = srv_json_dump(obj, &rep->body_len);
    if (!rep->body) {
        srv_error e;
        srv_errorf(&e, 500, NULL, "out of memory");
        srv_reply_error(rep, &e);
        return;
    }
    rep->status = status;
    rep->content_type = "application/json";
}

/* Constant-time comparison, so response timing does not reveal how much of
 * a guessed key was right. */
static bool key_matches(const char *header, const char *key)
{
    static const char BEARER[] = "Bearer ";
    if (!header || strncmp(header, BEARER, sizeof BEARER - 1) != 0)
        return false;
    const char *got = header + sizeof BEARER - 1;
    size_t n = strlen(got), k = strlen(key);
    unsigned char diff = n != k;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)got[i] ^ (unsigned char)key[i % (k ? k : 1)];
    return diff == 0;
}

static void handle_models(srv_server *s, srv_reply *rep)
{
    reply_json(rep, 200, srv_models_list(s->cfg.model_name, s->cfg.model_root, s->created, s->max_model_len));
}

static void handle_health(srv_server *s, srv_reply *rep)
{
    if (atomic_load(&s->shutting_down)) {
        srv_error e;
        srv_errorf(&e, 503, NULL, "the server is shutting down");
        srv_reply_error(rep, &e);
        return;
    }
    rep->status = 200;
    rep->content_type = "application/json";
    rep->body = strdup("{\"status\":\"ok\"}");
    rep->body_len = rep->body ? strlen(rep->body) : 0;
}

static void handle_metrics(srv_server *s, srv_reply *rep)
{
    eng_stats st;
    eng_get_stats(s->eng, &st);
    rep->body = srv_metrics_render(s->metrics, &st, &rep->body_len);
    rep->status = rep->body ? 200 : 500;
    rep->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

typedef enum route_id { R_COMPLETIONS, R_CHAT, R_MODELS, R_HEALTH, R_METRICS } route_id;

static const struct route {
    const char *path;
    const char *method;
    route_id id;
} ROUTES[] = {
    {"/v1/completions", "POST", R_COMPLETIONS},
    {"/v1/chat/completions", "POST", R_CHAT},
    {"/v1/models", "GET", R_MODELS},
    {"/health", "GET", R_HEALTH},
    {"/metrics", "GET", R_METRICS},
};

static void route(srv_server *s, const srv_http_req *req, srv_reply *rep)
{
    srv_error e;
    /* The API is behind the key; /health and /metrics stay open for probes
     * and scrapers, as in vLLM. */
    bool api = strncmp(req->path, "/v1/", 4) == 0 || strcmp(req->path, "/v1") == 0;
    if (api && s->cfg.api_key && s->cfg.api_key[0] && !key_matches(req->authorization, s->cfg.api_key)) {
        srv_errorf(&e, 401, NULL, "%s",
                   req->authorization ? "incorrect API key" : "missing API key (Authorization: Bearer KEY)");
        e.code = "invalid_api_key";
        srv_reply_error(rep, &e);
        return;
    }
    const struct route *r = NULL;
    for (size_t i = 0; i < sizeof ROUTES / sizeof *ROUTES; i++)
        if (strcmp(req->path, ROUTES[i].path) == 0)
            r = &ROUTES[i];
    if (!r) {
        srv_errorf(&e, 404, NULL, "no route %s %.200s", req->method, req->path);
        srv_reply_error(rep, &e);
        return;
    }
    bool get_route = strcmp(r->method, "GET") == 0;
    if (strcmp(req->method, r->method) != 0 && !(get_route && strcmp(req->method, "HEAD") == 0)) {
        srv_errorf(&e, 405, NULL, "%s does not allow %s; use %s", r->path, req->method, r->method);
        srv_reply_error(rep, &e);
        rep->allow = get_route ? "GET, HEAD" : r->method;
        return;
    }
    if (req->body_too_large) {
        srv_errorf(&e, 413, NULL, "the request body is larger than the server's limit");
        srv_reply_error(rep, &e);
        return;
    }
    switch (r->id) {
    case R_COMPLETIONS:
        srv_generate(s, SRV_API_COMPLETIONS, req, rep);
        break;
    case R_CHAT:
        srv_generate(s, SRV_API_CHAT, req, rep);
        break;
    case R_MODELS:
        handle_models(s, rep);
        break;
    case R_HEALTH:
        handle_health(s, rep);
        break;
    case R_METRICS:
        handle_metrics(s, rep);
        break;
    }
}

void srv_handle(void *app, const srv_http_req *req, srv_reply *rep)
{
    srv_server *s = app;
    route(s, req, rep);
    srv_metrics_request(s->metrics, rep->status);
}
