/* `v4serve generate`: one request through the serving engine, streamed to
 * stdout as text (or token ids). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_common.h"
#include "cli/commands.h"
#include "engine/engine.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: v4serve generate --model DIR (--prompt TEXT | --prompt-ids 1,2,3 | --chat TEXT)\n"
               "                        [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S]\n"
               "                        [--ids] [--think] [--ignore-eos] [backend options]\n"
               "  --prompt TEXT      raw completion prompt (BOS is prepended)\n"
               "  --prompt-ids LIST  prompt as comma-separated token ids (no tokenizer needed)\n"
               "  --chat TEXT        one user turn through the DeepSeek-V4 chat template\n"
               "  --think            thinking mode for --chat (default: off)\n"
               "  --ids              print generated token ids instead of text\n" CLI_BACKEND_HELP);
}

typedef struct gen_out {
    const tok_tokenizer *tok;
    tok_stream stream;
    bool ids;
    int n;
    char *buf;
    size_t cap;
} gen_out;

static int on_token(void *user, int32_t token, const smp_result *r)
{
    gen_out *g = user;
    (void)r;
    if (g->ids || !g->tok) {
        printf("%s%d", g->n++ ? "," : "", token);
    } else {
        v4_err err;
        int n = tok_stream_push(g->tok, &g->stream, token, false, g->buf, g->cap, &err);
        if (n > 0)
            fwrite(g->buf, 1, (size_t)n, stdout);
    }
    fflush(stdout);
    return 0;
}

static const char *FINISH_NAMES[] = {"stop", "length", "cancelled", "aborted", "error"};

typedef struct gen_done {
    bool done;
    eng_finish why;
    char msg[256];
} gen_done;

static void on_finish(void *user, eng_finish why, const char *msg)
{
    gen_done *d = user;
    d->done = true;
    d->why = why;
    snprintf(d->msg, sizeof d->msg, "%s", msg ? msg : "");
}

static int parse_ids(const char *s, int32_t **ids, int *n)
{
    int cap = 16;
    *ids = malloc((size_t)cap * sizeof **ids);
    *n = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX)
            return -1;
        if (*n == cap)
            *ids = realloc(*ids, (size_t)(cap *= 2) * sizeof **ids);
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    return *n > 0 ? 0 : -1;
}

/* Both callbacks see one user pointer: the output state, with the finish
 * flag beside it. */
typedef struct gen_ctx {
    gen_out out;
    gen_done done;
} gen_ctx;

static int ctx_on_token(void *u, int32_t t, const smp_result *r) { return on_token(&((gen_ctx *)u)->out, t, r); }
static void ctx_on_finish(void *u, eng_finish w, const char *m) { on_finish(&((gen_ctx *)u)->done, w, m); }

int cmd_generate(int argc, char **argv)
{
    const char *cmd = "generate", *model_dir = NULL, *prompt = NULL, *prompt_ids = NULL, *chat = NULL;
    backend_opts bo = {.name = "cpu", .fp8_dialect = DT_F8_E4M3};
    eng_req_params rp = {.sampling = smp_params_default(), .max_tokens = 64};
    bool ids = false, think = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t iv;
        double dv;
        if (strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--ids") == 0) {
            ids = true;
            continue;
        } else if (strcmp(a, "--think") == 0) {
            think = true;
            continue;
        } else if (strcmp(a, "--ignore-eos") == 0) {
            rp.ignore_eos = true;
            continue;
        }
        if (!v) {
            fprintf(stderr, "%s: option '%s' needs a value (or is unknown)\n", cmd, a);
            return 2;
        }
        int b = cli_backend_option(cmd, a, v, &bo);
        if (b < 0)
            return 2;
        if (b == 0) {
            if (strcmp(a, "--model") == 0)
                model_dir = v;
            else if (strcmp(a, "--prompt") == 0)
                prompt = v;
            else if (strcmp(a, "--prompt-ids") == 0)
                prompt_ids = v;
            else if (strcmp(a, "--chat") == 0)
                chat = v;
            else if (strcmp(a, "--max-tokens") == 0) {
                if (cli_parse_i64(cmd, a, v, 1, 1 << 24, &iv))
                    return 2;
                rp.max_tokens = (int32_t)iv;
            } else if (strcmp(a, "--temperature") == 0) {
                if (cli_parse_f64(cmd, a, v, 0, 2, &dv))
                    return 2;
                rp.sampling.temperature = (float)dv;
            } else if (strcmp(a, "--top-p") == 0) {
                if (cli_parse_f64(cmd, a, v, 0, 1, &dv))
                    return 2;
                rp.sampling.top_p = (float)dv;
            } else if (strcmp(a, "--top-k") == 0) {
                if (cli_parse_i64(cmd, a, v, -1, INT32_MAX, &iv))
                    return 2;
                rp.sampling.top_k = (int32_t)iv;
            } else if (strcmp(a, "--seed") == 0) {
                if (cli_parse_i64(cmd, a, v, 0, INT64_MAX, &iv))
                    return 2;
                rp.sampling.seed = (uint64_t)iv;
                rp.sampling.has_seed = true;
            } else {
                fprintf(stderr, "%s: unknown option '%s'\n", cmd, a);
                usage(stderr);
                return 2;
            }
        }
        i++;
    }
    if (!model_dir || (!!prompt + !!prompt_ids + !!chat) != 1) {
        fprintf(stderr, "%s: --model and exactly one of --prompt, --prompt-ids, --chat are required\n", cmd);
        usage(stderr);
        return 2;
    }
    v4_err err;
    tok_tokenizer *tok = NULL;
    int32_t *ids_in = NULL;
    size_t n_in = 0;
    if (!prompt_ids || !ids) {
        if (tok_load(model_dir, &tok, &err)) {
            fprintf(stderr, "%s: %s\n", cmd, err.msg);
            return 1;
        }
    }
    int rc = 1;
    if (prompt_ids) {
        int n;
        if (parse_ids(prompt_ids, &ids_in, &n)) {
            fprintf(stderr, "%s: --prompt-ids must be comma-separated non-negative integers\n", cmd);
            free(ids_in);
            tok_free(tok);
            return 2;
        }
        n_in = (size_t)n;
    } else if (chat) {
        tok_chat_msg msg = {.role = "user", .content = chat};
        if (tok_chat_encode(tok, &msg, 1, think, &ids_in, &n_in, &err)) {
            fprintf(stderr, "%s: %s\n", cmd, err.msg);
            tok_free(tok);
            return 1;
        }
    } else {
        int32_t *body;
        size_t nb;
        if (tok_encode(tok, prompt, strlen(prompt), false, &body, &nb, &err)) {
            fprintf(stderr, "%s: %s\n", cmd, err.msg);
            tok_free(tok);
            return 1;
        }
        ids_in = malloc((nb + 1) * sizeof *ids_in);
        ids_in[0] = tok_bos_id(tok);
        memcpy(ids_in + 1, body, nb * sizeof *body);
        n_in = nb + 1;
        free(body);
    }

    v4_backend *be = NULL;
    v4_model *m = NULL;
    eng_engine *e = NULL;
    gen_ctx ctx = {.out = {.tok = tok, .ids = ids}};
    if (backend_open(&bo, &be, &err) || model_open(model_dir, be, &m, &err)) {
        fprintf(stderr, "%s: %s\n", cmd, err.msg);
        goto out;
    }
    int64_t ctx_len = (int64_t)n_in + rp.max_tokens + 1;
    eng_config ec = {.max_num_seqs = 1, .max_step_tokens = 512, .max_model_len = ctx_len};
    if (eng_create(m, &ec, &e, &err)) {
        fprintf(stderr, "%s: %s\n", cmd, err.msg);
        goto out;
    }
    ctx.out.cap = tok ? tok_stream_bound(tok) : 0;
    ctx.out.buf = ctx.out.cap ? malloc(ctx.out.cap) : NULL;
    eng_callbacks cb = {.on_token = ctx_on_token, .on_finish = ctx_on_finish, .user = &ctx};
    uint64_t id;
    if (eng_submit(e, ids_in, (int)n_in, &rp, &cb, &id, &err) != ENG_OK) {
        fprintf(stderr, "%s: %s\n", cmd, err.msg);
        goto out;
    }
    while (!ctx.done.done) {
        if (eng_step(e, &err) < 0) {
            fprintf(stderr, "\n%s: %s\n", cmd, err.msg);
            goto out;
        }
    }
    if (tok && !ids) {
        int n = tok_stream_flush(&ctx.out.stream, ctx.out.buf, ctx.out.cap);
        if (n > 0)
            fwrite(ctx.out.buf, 1, (size_t)n, stdout);
    }
    printf("\n");
    fprintf(stderr, "[%d prompt tokens, finish: %s%s%s]\n", (int)n_in, FINISH_NAMES[ctx.done.why],
            ctx.done.msg[0] ? ": " : "", ctx.done.msg);
    rc = ctx.done.why == ENG_FINISH_ERROR;
out:
    eng_destroy(e);
    model_close(m);
    backend_close(be);
    tok_free(tok);
    free(ids_in);
    free(ctx.out.buf);
    return rc;
}
