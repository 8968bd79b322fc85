/* `v4serve serve`: the OpenAI-compatible HTTP server on the serving engine.
 *
 * Loads the tokenizer, backend and model, starts the engine thread and the
 * HTTP daemon, then waits for SIGTERM or SIGINT. Shutdown: stop accepting
 * connections, refuse new requests (503), let running requests finish for
 * up to --shutdown-timeout seconds (eng_shutdown aborts the rest, whose
 * clients get a final chunk with finish_reason "abort"), give connections a
 * moment to send their last bytes, then free everything and exit 0.
 *
 * The signals are blocked before any thread starts, so every thread
 * inherits the mask and only the main thread's sigwait sees them. */
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/cli_common.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "server/http.h"
#include "server/server.h"
#include "tokenizer/tokenizer.h"

#define DEFAULT_MAX_MODEL_LEN 4096
#define DRAIN_SECONDS 5 /* after the engine stopped: time for replies to go out */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: v4serve serve --model DIR [options]\n"
            "  --model DIR              checkpoint folder with tokenizer.json (+ tokenizer_config.json)\n"
            "  --host HOST              address to bind (default 127.0.0.1: loopback only)\n"
            "  --port N                 TCP port (default 8000; 0 picks a free one, printed at start)\n"
            "  --served-model-name NAME the model name clients use (default: the --model argument)\n"
            "  --api-key KEY            require \"Authorization: Bearer KEY\" on /v1/ routes\n"
            "  --max-num-seqs N         sequences running at once (default 64)\n"
            "  --max-model-len N        context per sequence, prompt + output (default min(model, %d))\n"
            "  --max-step-tokens N      tokens per engine step, decode + prefill chunks (default 1024)\n"
            "  --prompt-logit-rows N    logit rows a step may spend on prompt logprobs (completions with echo\n"
            "                           and logprobs); the host keeps (max-num-seqs + N) rows of logits\n"
            "                           (default 128; 0 refuses such requests)\n"
            "  --kv-budget-mb N         memory for KV blocks (default: enough for every sequence at full length)\n"
            "  --max-waiting N          queued requests beyond which new ones get 429 (default 0: no limit)\n"
            "  --max-body-mb N          largest request body (default 8)\n"
            "  --shutdown-timeout S     on SIGTERM/SIGINT, time running requests get to finish (default "
            "10)\n" CLI_BACKEND_HELP,
            DEFAULT_MAX_MODEL_LEN);
}

typedef struct serve_opts {
    const char *model_dir, *host, *name, *api_key;
    int64_t port, max_num_seqs, max_model_len, max_step_tokens, prompt_logit_rows, kv_budget_mb, max_waiting,
        max_body_mb;
    double shutdown_timeout;
    backend_opts bo;
} serve_opts;

/* Returns 0, 1 for --help, or 2 for a usage error (message printed). */
static int parse_args(int argc, char **argv, serve_opts *o)
{
    const char *cmd = "serve";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if (!v) {
            fprintf(stderr, "%s: option '%s' needs a value (or is unknown)\n", cmd, a);
            return 2;
        }
        int b = cli_backend_option(cmd, a, v, &o->bo);
        if (b < 0)
            return 2;
        i++;
        if (b > 0)
            continue;
        int rc = 0;
        if (strcmp(a, "--model") == 0)
            o->model_dir = v;
        else if (strcmp(a, "--host") == 0)
            o->host = v;
        else if (strcmp(a, "--served-model-name") == 0)
            o->name = v;
        else if (strcmp(a, "--api-key") == 0)
            o->api_key = v;
        else if (strcmp(a, "--port") == 0)
            rc = cli_parse_i64(cmd, a, v, 0, 65535, &o->port);
        else if (strcmp(a, "--max-num-seqs") == 0)
            rc = cli_parse_i64(cmd, a, v, 1, 4096, &o->max_num_seqs);
        else if (strcmp(a, "--max-model-len") == 0)
            rc = cli_parse_i64(cmd, a, v, 2, INT32_MAX, &o->max_model_len);
        else if (strcmp(a, "--max-step-tokens") == 0)
            rc = cli_parse_i64(cmd, a, v, 1, 1 << 20, &o->max_step_tokens);
        else if (strcmp(a, "--prompt-logit-rows") == 0)
            rc = cli_parse_i64(cmd, a, v, 0, 1 << 20, &o->prompt_logit_rows);
        else if (strcmp(a, "--kv-budget-mb") == 0)
            rc = cli_parse_i64(cmd, a, v, 0, INT64_MAX >> 20, &o->kv_budget_mb);
        else if (strcmp(a, "--max-waiting") == 0)
            rc = cli_parse_i64(cmd, a, v, 0, INT32_MAX, &o->max_waiting);
        else if (strcmp(a, "--max-body-mb") == 0)
            rc = cli_parse_i64(cmd, a, v, 1, 1024, &o->max_body_mb);
        else if (strcmp(a, "--shutdown-timeout") == 0)
            rc = cli_parse_f64(cmd, a, v, 0, 86400, &o->shutdown_timeout);
        else {
            fprintf(stderr, "%s: unknown option '%s'\n", cmd, a);
            usage(stderr);
            return 2;
        }
        if (rc)
            return 2;
    }
    if (!o->model_dir) {
        fprintf(stderr, "%s: --model is required\n", cmd);
        usage(stderr);
        return 2;
    }
    return 0;
}

/* Blocks until SIGTERM or SIGINT arrives; returns the signal. */
static int wait_for_signal(const sigset_t *set)
{
    int sig = 0;
    while (sigwait(set, &sig) != 0) {
    }
    return sig;
}

int cmd_serve(int argc, char **argv)
{
    const char *cmd = "serve";
    serve_opts o = {.host = "127.0.0.1",
                    .port = 8000,
                    .max_num_seqs = 64,
                    .max_step_tokens = 1024,
                    .prompt_logit_rows = 128,
                    .max_body_mb = 8,
                    .shutdown_timeout = 10,
                    .bo = {.name = "cpu", .fp8_dialect = DT_F8_E4M3}};
    int pa = parse_args(argc, argv, &o);
    if (pa)
        return pa == 1 ? 0 : 2;

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN); /* a vanished client is a failed write, not a death */

    v4_err err;
    tok_tokenizer *tok = NULL;
    v4_backend *be = NULL;
    v4_model *m = NULL;
    eng_engine *e = NULL;
    srv_server *srv = NULL;
    srv_http *http = NULL;
    int rc = 1;
    if (tok_load(o.model_dir, &tok, &err) || backend_open(&o.bo, &be, &err) || model_open(o.model_dir, be, &m, &err)) {
        fprintf(stderr, "%s: %s\n", cmd, err.msg);
        goto out;
    }
    int64_t max_len = o.max_model_len;
    if (!max_len)
        max_len = m->cfg.max_pos < DEFAULT_MAX_MODEL_LEN ? m->cfg.max_pos : DEFAULT_MAX_MODEL_LEN;
    eng_config ec = {.max_num_seqs = (int)o.max_num_seqs,
                     .max_step_tokens = (int)o.max_step_tokens,
                     .prompt_logit_rows = (int)o.prompt_logit_rows,
                     .max_model_len = max_len,
                     .kv_budget_bytes = o.kv_budget_mb << 20,
                     .max_waiting = (int)o.max_waiting,
                     /* a vocabulary padded beyond the tokenizer's never samples the padding */
                     .sample_vocab = tok_vocab_size(tok)};
    srv_config sc = {.model_name = o.name ? o.name : o.model_dir, .model_root = o.model_dir, .api_key = o.api_key};
    srv_http_opts ho = {.host = o.host,
                        .port = (int)o.port,
                        .max_body = (size_t)o.max_body_mb << 20,
                        .max_connections = 1024,
                        .idle_timeout_s = 60,
                        .on_request_cpu = srv_record_http_cpu};
    if (eng_create(m, &ec, &e, &err) || eng_start(e, &err) || srv_create(&sc, e, tok, &srv, &err) ||
        srv_http_start(&ho, srv_handle, srv, &http, &err)) {
        fprintf(stderr, "%s: %s\n", cmd, err.msg);
        goto out;
    }
    bool v6 = strchr(o.host, ':') != NULL; /* an IPv6 literal goes in brackets in a URL */
    printf("v4serve: serving '%s' on http://%s%s%s:%d (max_model_len %lld, max_num_seqs %lld, backend %s)\n",
           sc.model_name, v6 ? "[" : "", o.host, v6 ? "]" : "", srv_http_port(http), (long long)max_len,
           (long long)o.max_num_seqs, o.bo.name);
    fflush(stdout);

    int sig = wait_for_signal(&sigs);
    fprintf(stderr, "%s: %s received; finishing running requests (up to %gs)\n", cmd,
            sig == SIGINT ? "SIGINT" : "SIGTERM", o.shutdown_timeout);
    srv_http_quiesce(http);
    srv_begin_shutdown(srv);
    eng_shutdown(e, o.shutdown_timeout);
    /* Every engine request has finished now; the connection threads still
     * write their last chunks. */
    struct timespec tick = {0, 10 * 1000 * 1000};
    for (int i = 0; i < DRAIN_SECONDS * 100 && srv_active(srv) > 0; i++)
        nanosleep(&tick, NULL);
    rc = 0;
out:
    srv_http_stop(http);
    srv_free(srv);
    eng_destroy(e);
    model_close(m);
    backend_close(be);
    tok_free(tok);
    return rc;
}
