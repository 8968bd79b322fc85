/* Real clients against `v4serve serve`: the official OpenAI Node client
 * (tests/server/openai_client.mjs) and curl, completions and chat, streamed
 * and not. Completions on the tiny golden model must return the golden
 * greedy continuation for its token-id prompt; chat runs end to end on the
 * demo model (mkmodel --preset demo: the real vocabulary), where the prompt
 * ids must be the chat template's, the text the tokenizer's decode of the
 * returned ids, and streamed output equal to the non-streamed one; chat
 * logprobs in OpenAI's chat shape with n = 2. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "server/harness.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

static char *tiny_dir, *demo_dir;
static th_golden tiny;
static th_server tiny_srv, demo_srv;
static tok_tokenizer *tok;

static int setup(void **state)
{
    alarm(600);
    tiny_dir = th_golden_model_dir("tiny");
    demo_dir = th_demo_model_dir();
    v4_err err;
    if (!tiny_dir || !demo_dir || th_golden_load("tiny", &tiny) || tok_load(demo_dir, &tok, &err))
        return -1;
    const char *ta[] = {"--served-model-name", "tiny", "--max-model-len", "512", NULL};
    const char *da[] = {"--served-model-name", "demo", "--max-model-len", "512", NULL};
    return th_start(&tiny_srv, tiny_dir, ta) || th_start(&demo_srv, demo_dir, da) ? -1 : 0;
}

static int teardown(void **state)
{
    int a = th_stop(&tiny_srv), b = th_stop(&demo_srv);
    tok_free(tok);
    tc_rmtree(tiny_dir);
    tc_rmtree(demo_dir);
    free(tiny_dir);
    free(demo_dir);
    free(tiny.tokens);
    return a == 0 && b == 0 ? 0 : -1;
}

/* Runs a shell command and returns its stdout (malloc'd). */
static char *run_capture(const char *cmd)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    size_t k;
    while ((k = fread(b + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (n + 1 == cap)
            b = realloc(b, cap *= 2);
    }
    b[n] = 0;
    int st = pclose(p);
    if (st != 0)
        fail_msg("'%s' exited with %d; output:\n%s", cmd, st, b);
    return b;
}

static char *decode(json_t *ids)
{
    int32_t v[512];
    int n = th_json_ids(ids, v, 512);
    assert_true(n >= 0 && n <= 512);
    char *s = NULL;
    v4_err err;
    if (tok_decode(tok, v, (size_t)n, true, &s, &err))
        fail_msg("%s", err.msg);
    return s;
}

static json_t *chat_prompt_ids(bool thinking)
{
    tok_chat_msg msgs[] = {{"system", "You are terse."}, {"user", "Name a colour."}};
    int32_t *ids;
    size_t n;
    v4_err err;
    if (tok_chat_encode(tok, msgs, 2, thinking, &ids, &n, &err))
        fail_msg("%s", err.msg);
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    free(ids);
    return a;
}

static void golden_ids(json_t *ids, json_t *text)
{
    int n_cont = tiny.n_tokens - tiny.prompt_len;
    int32_t got[512];
    assert_int_equal(th_json_ids(ids, got, 512), n_cont);
    for (int i = 0; i < n_cont; i++)
        assert_int_equal(got[i], tiny.tokens[tiny.prompt_len + i]);
    char *want = decode(ids);
    assert_string_equal(json_string_value(text), want);
    free(want);
}

static const char *tokenizer_demo_text(json_t *ids, json_t *text)
{
    char *want = decode(ids);
    if (strcmp(json_string_value(text), want) != 0)
        fail_msg("text '%s' is not the decode of its ids '%s'", json_string_value(text), want);
    free(want);
    return json_string_value(text);
}

static void openai_node(void **state)
{
    struct stat st;
    if (stat(tu_path("node_modules/openai/package.json"), &st) != 0)
        fail_msg("node_modules/openai is missing: run scripts/install-deps.sh (npm ci)");
    int n_cont = tiny.n_tokens - tiny.prompt_len;
    char *ids = th_ids_json(tiny.tokens, tiny.prompt_len);
    ids[strlen(ids) - 1] = 0; /* "[a,b,c]" -> "a,b,c" */
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "node '%s' http://127.0.0.1:%d/v1 tiny %s %d http://127.0.0.1:%d/v1 demo",
             tu_path("tests/server/openai_client.mjs"), tiny_srv.port, ids + 1, n_cont, demo_srv.port);
    free(ids);
    char *out = run_capture(cmd);
    json_t *j = json_loads(out, JSON_ALLOW_NUL, NULL);
    if (!j)
        fail_msg("client output is not JSON:\n%s", out);

    json_t *c = json_object_get(j, "completion");
    assert_string_equal(json_string_value(json_object_get(c, "object")), "text_completion");
    golden_ids(json_object_get(c, "ids"), json_object_get(c, "text"));
    assert_string_equal(json_string_value(json_object_get(c, "finish")), "length");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c, "usage"), "completion_tokens")), n_cont);
    json_t *cs = json_object_get(j, "completion_stream");
    golden_ids(json_object_get(cs, "ids"), json_object_get(cs, "text"));
    assert_string_equal(json_string_value(json_object_get(cs, "finish")), "length");
    assert_true(json_integer_value(json_object_get(cs, "chunks")) >= 3);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(cs, "usage"), "prompt_tokens")),
                     tiny.prompt_len);

    json_t *chat = json_object_get(j, "chat");
    assert_string_equal(json_string_value(json_object_get(chat, "object")), "chat.completion");
    assert_string_equal(json_string_value(json_object_get(chat, "role")), "assistant");
    json_t *want_prompt = chat_prompt_ids(false);
    assert_true(json_equal(json_object_get(chat, "prompt_ids"), want_prompt));
    const char *content = tokenizer_demo_text(json_object_get(chat, "ids"), json_object_get(chat, "content"));
    assert_true(strlen(content) > 0);
    assert_true(json_is_null(json_object_get(chat, "reasoning")));
    json_t *usage = json_object_get(chat, "usage");
    assert_int_equal(json_integer_value(json_object_get(usage, "prompt_tokens")), json_array_size(want_prompt));
    assert_int_equal(json_integer_value(json_object_get(usage, "completion_tokens")),
                     json_array_size(json_object_get(chat, "ids")));

    json_t *chs = json_object_get(j, "chat_stream");
    assert_string_equal(json_string_value(json_object_get(chs, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(chs, "content")), content);
    assert_string_equal(json_string_value(json_object_get(chs, "reasoning")), "");
    assert_string_equal(json_string_value(json_object_get(chs, "finish")),
                        json_string_value(json_object_get(chat, "finish")));
    assert_true(json_equal(json_object_get(chs, "usage"), usage));
    assert_string_equal(json_string_value(json_array_get(json_object_get(chs, "objects"), 0)), "chat.completion.chunk");

    /* thinking on: the prompt ends in <think>, and everything generated
     * before a </think> is reasoning */
    json_t *think = json_object_get(j, "think");
    json_t *want_think = chat_prompt_ids(true);
    assert_true(json_equal(json_object_get(think, "prompt_ids"), want_think));
    tokenizer_demo_text(json_object_get(think, "ids"), json_object_get(think, "reasoning"));
    assert_string_equal(json_string_value(json_object_get(think, "content")), "");

    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "models"), 0)), "tiny");
    json_t *e = json_object_get(j, "error");
    assert_int_equal(json_integer_value(json_object_get(e, "status")), 400);
    assert_string_equal(json_string_value(json_object_get(e, "param")), "temperature");
    json_t *e404 = json_object_get(j, "error404");
    assert_int_equal(json_integer_value(json_object_get(e404, "status")), 404);
    assert_string_equal(json_string_value(json_object_get(e404, "code")), "model_not_found");
    json_decref(want_prompt);
    json_decref(want_think);
    json_decref(j);
    free(out);
}

static char *curl_post(int port, const char *path, const char *body, bool stream)
{
    char file[] = "/tmp/v4curl.XXXXXX";
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, body, strlen(body)), (ssize_t)strlen(body));
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "curl -sS --fail-with-body --max-time 120 %s -H 'Content-Type: application/json' -d @%s "
             "http://127.0.0.1:%d%s",
             stream ? "-N" : "", file, port, path);
    char *out = run_capture(cmd);
    unlink(file);
    return out;
}

static void curl_clients(void **state)
{
    int n_cont = tiny.n_tokens - tiny.prompt_len;
    char *ids = th_ids_json(tiny.tokens, tiny.prompt_len);
    char body[8192];
    snprintf(body, sizeof body,
             "{\"model\":\"tiny\",\"prompt\":%s,\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true,"
             "\"return_token_ids\":true}",
             ids, n_cont);
    char *out = curl_post(tiny_srv.port, "/v1/completions", body, false);
    json_t *j = json_loads(out, JSON_ALLOW_NUL, NULL);
    json_t *c = json_array_get(json_object_get(j, "choices"), 0);
    golden_ids(json_object_get(c, "token_ids"), json_object_get(c, "text"));
    json_decref(j);
    free(out);

    /* streamed: the ids of every chunk, then [DONE] */
    snprintf(body, sizeof body,
             "{\"model\":\"tiny\",\"prompt\":%s,\"max_tokens\":%d,\"temperature\":0,\"ignore_eos\":true,"
             "\"return_token_ids\":true,\"stream\":true}",
             ids, n_cont);
    out = curl_post(tiny_srv.port, "/v1/completions", body, true);
    bool done;
    json_t *ev = th_sse_events(out, &done);
    assert_true(done);
    json_t *all = json_array(), *text = json_string("");
    size_t i;
    json_t *e;
    json_array_foreach(ev, i, e)
    {
        json_t *ch = json_array_get(json_object_get(e, "choices"), 0);
        json_array_extend(all, json_object_get(ch, "token_ids"));
        char *t = NULL;
        if (asprintf(&t, "%s%s", json_string_value(text), json_string_value(json_object_get(ch, "text"))) < 0)
            fail();
        json_string_set(text, t);
        free(t);
    }
    golden_ids(all, text);
    json_decref(all);
    json_decref(text);
    json_decref(ev);
    free(out);
    free(ids);

    /* chat on the demo model: the stream's content equals the whole answer */
    const char *chat = "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello there\"}],"
                       "\"max_tokens\":6,\"seed\":3,\"temperature\":1,\"return_token_ids\":true%s}";
    snprintf(body, sizeof body, chat, "");
    out = curl_post(demo_srv.port, "/v1/chat/completions", body, false);
    j = json_loads(out, JSON_ALLOW_NUL, NULL);
    json_t *msg = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "message");
    json_t *tids = json_object_get(json_array_get(json_object_get(j, "choices"), 0), "token_ids");
    const char *content = tokenizer_demo_text(tids, json_object_get(msg, "content"));
    char *whole = strdup(content);
    json_decref(j);
    free(out);
    snprintf(body, sizeof body, chat, ",\"stream\":true");
    out = curl_post(demo_srv.port, "/v1/chat/completions", body, true);
    ev = th_sse_events(out, &done);
    assert_true(done);
    json_t *first = json_object_get(json_array_get(json_object_get(json_array_get(ev, 0), "choices"), 0), "delta");
    assert_string_equal(json_string_value(json_object_get(first, "role")), "assistant");
    size_t cap = strlen(whole) + 1, w = 0;
    char *streamed = calloc(1, cap + 4096);
    json_array_foreach(ev, i, e)
    {
        assert_string_equal(json_string_value(json_object_get(e, "object")), "chat.completion.chunk");
        json_t *d = json_object_get(json_array_get(json_object_get(e, "choices"), 0), "delta");
        const char *t = json_string_value(json_object_get(d, "content"));
        if (t) {
            memcpy(streamed + w, t, strlen(t));
            w += strlen(t);
        }
    }
    assert_string_equal(streamed, whole);
    free(streamed);
    free(whole);
    json_decref(ev);
    free(out);
}

/* Chat logprobs (OpenAI's chat shape) with n = 2: per choice one entry per
 * token, whose bytes are the token's, with top_logprobs alternatives. */
static void chat_logprobs_n(void **state)
{
    int status;
    json_t *j =
        th_post_json(demo_srv.port, "/v1/chat/completions",
                     "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"n\":2,"
                     "\"max_tokens\":4,\"logprobs\":true,\"top_logprobs\":3,\"seed\":1,\"return_token_ids\":true}",
                     &status);
    assert_int_equal(status, 200);
    json_t *choices = json_object_get(j, "choices");
    assert_int_equal(json_array_size(choices), 2);
    for (size_t c = 0; c < 2; c++) {
        json_t *ch = json_array_get(choices, c);
        assert_int_equal(json_integer_value(json_object_get(ch, "index")), (json_int_t)c);
        json_t *ids = json_object_get(ch, "token_ids");
        json_t *content = json_object_get(json_object_get(ch, "logprobs"), "content");
        assert_int_equal(json_array_size(content), json_array_size(ids));
        for (size_t i = 0; i < json_array_size(content); i++) {
            json_t *e = json_array_get(content, i);
            size_t len = 0;
            const char *want = tok_token_bytes(tok, (int32_t)json_integer_value(json_array_get(ids, i)), &len);
            json_t *bytes = json_object_get(e, "bytes");
            assert_int_equal(json_array_size(bytes), len);
            for (size_t k = 0; k < len; k++)
                assert_int_equal(json_integer_value(json_array_get(bytes, k)), (unsigned char)want[k]);
            double lp = json_number_value(json_object_get(e, "logprob"));
            assert_true(lp <= 0);
            json_t *top = json_object_get(e, "top_logprobs");
            assert_int_equal(json_array_size(top), 3);
            for (size_t k = 1; k < 3; k++)
                assert_true(json_number_value(json_object_get(json_array_get(top, k), "logprob")) <=
                            json_number_value(json_object_get(json_array_get(top, k - 1), "logprob")));
            assert_true(lp <= json_number_value(json_object_get(json_array_get(top, 0), "logprob")) + 1e-6);
        }
    }
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openai_node),
        cmocka_unit_test(curl_clients),
        cmocka_unit_test(chat_logprobs_n),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
