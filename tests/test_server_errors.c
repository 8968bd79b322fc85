/* Every error the server answers, with its status and the OpenAI error
 * object: malformed JSON, wrong types, out-of-range values, unsupported
 * fields, token ids outside the model's vocabulary (the real tokenizer is
 * larger than the tiny model's 1024 ids), prompts longer than the context,
 * 401 with and without a key, 404 for routes and models, 405, 413 (declared
 * and chunked bodies), 429 when the queue is full. No bad input gets a 5xx,
 * and the server answers a valid request afterwards. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>

#include "server/harness.h"

static char *tiny_dir;
static th_server srv;

static int setup(void **state)
{
    alarm(600);
    tiny_dir = th_golden_model_dir("tiny");
    const char *args[] = {"--served-model-name", "tiny", "--max-model-len", "256", NULL};
    return tiny_dir ? th_start(&srv, tiny_dir, args) : -1;
}

static int teardown(void **state)
{
    int st = th_stop(&srv);
    tc_rmtree(tiny_dir);
    free(tiny_dir);
    return st == 0 ? 0 : -1;
}

/* Checks the status and the error object; param/code/message may be NULL
 * (not checked). */
static void expect_error(th_resp *r, int status, const char *param, const char *code, const char *in_message)
{
    if (r->status != status)
        fail_msg("status %d, want %d: %s", r->status, status, r->body);
    json_t *j = json_loads(r->body, 0, NULL);
    if (!j)
        fail_msg("error body is not JSON: %s", r->body);
    json_t *e = json_object_get(j, "error");
    assert_true(json_is_object(e));
    assert_true(json_is_string(json_object_get(e, "message")));
    assert_true(json_is_string(json_object_get(e, "type")));
    assert_non_null(json_object_get(e, "param"));
    assert_non_null(json_object_get(e, "code"));
    const char *type = json_string_value(json_object_get(e, "type"));
    assert_string_equal(type, status == 429 ? "rate_limit_exceeded" : "invalid_request_error");
    if (param && (!json_is_string(json_object_get(e, "param")) ||
                  strcmp(json_string_value(json_object_get(e, "param")), param) != 0))
        fail_msg("param is not '%s': %s", param, r->body);
    if (code && (!json_is_string(json_object_get(e, "code")) ||
                 strcmp(json_string_value(json_object_get(e, "code")), code) != 0))
        fail_msg("code is not '%s': %s", code, r->body);
    if (in_message && !strstr(json_string_value(json_object_get(e, "message")), in_message))
        fail_msg("message lacks '%s': %s", in_message, r->body);
    json_decref(j);
}

static void post_expect(int port, const char *path, const char *body, int status, const char *param, const char *code,
                        const char *in_message)
{
    th_resp r;
    assert_int_equal(th_http(port, "POST", path, NULL, body, &r), 0);
    if (r.status != status)
        fail_msg("%s %s: status %d, want %d: %s", path, body, r.status, status, r.body);
    expect_error(&r, status, param, code, in_message);
    th_resp_free(&r);
}

#define CMPL "/v1/completions"
#define CHAT "/v1/chat/completions"

static void malformed_json(void **state)
{
    static const char *const BODIES[] = {
        "",
        "{",
        "not json",
        "[1,2,3]",
        "\"prompt\"",
        "{\"prompt\": [1,2,}",
        "{\"prompt\" [1]}",
        "{\"prompt\": [1], \"max_tokens\": 99999999999999999999999}",
        "{\"prompt\": \"a\\u0000b\"}",
        "null",
        "{\"prompt\": [1]}garbage",
    };
    for (size_t i = 0; i < sizeof BODIES / sizeof *BODIES; i++) {
        post_expect(srv.port, CMPL, BODIES[i], 400, NULL, NULL, NULL);
        post_expect(srv.port, CHAT, BODIES[i], 400, NULL, NULL, NULL);
    }
}

static void wrong_types(void **state)
{
    static const struct {
        const char *path, *body, *param;
    } CASES[] = {
        {CMPL, "{\"prompt\": 5}", "prompt"},
        {CMPL, "{\"prompt\": {\"a\": 1}}", "prompt"},
        {CMPL, "{\"prompt\": [1, \"a\"]}", "prompt"},
        {CMPL, "{\"prompt\": [\"a\", [1]]}", "prompt"},
        {CMPL, "{\"prompt\": [[1], [true]]}", "prompt"},
        {CMPL, "{\"prompt\": [], \"max_tokens\": 2}", "prompt"},
        {CMPL, "{\"prompt\": [[]]}", "prompt"},
        {CMPL, "{}", "prompt"},
        {CMPL, "{\"prompt\": [1], \"max_tokens\": \"5\"}", "max_tokens"},
        {CMPL, "{\"prompt\": [1], \"max_tokens\": 5.5}", "max_tokens"},
        {CMPL, "{\"prompt\": [1], \"temperature\": \"hot\"}", "temperature"},
        {CMPL, "{\"prompt\": [1], \"top_p\": [1]}", "top_p"},
        {CMPL, "{\"prompt\": [1], \"top_k\": 2.5}", "top_k"},
        {CMPL, "{\"prompt\": [1], \"stream\": \"yes\"}", "stream"},
        {CMPL, "{\"prompt\": [1], \"echo\": 1}", "echo"},
        {CMPL, "{\"prompt\": [1], \"n\": 1.5}", "n"},
        {CMPL, "{\"prompt\": [1], \"seed\": \"x\"}", "seed"},
        {CMPL, "{\"prompt\": [1], \"stop\": 5}", "stop"},
        {CMPL, "{\"prompt\": [1], \"stop\": [\"a\", 5]}", "stop"},
        {CMPL, "{\"prompt\": [1], \"logprobs\": true}", "logprobs"},
        {CMPL, "{\"prompt\": [1], \"model\": 7}", "model"},
        {CMPL, "{\"prompt\": [1], \"stream\": true, \"stream_options\": 5}", "stream_options"},
        {CMPL, "{\"prompt\": [1], \"stream\": true, \"stream_options\": {\"include_usage\": 1}}", "stream_options"},
        {CMPL, "{\"prompt\": [1], \"stream_options\": {\"include_usage\": true}}", "stream_options"},
        {CMPL, "{\"prompt\": [1], \"return_token_ids\": \"true\"}", "return_token_ids"},
        {CMPL, "{\"prompt\": [1], \"ignore_eos\": null, \"user\": 5}", "user"},
        {CMPL, "{\"prompt\": [1], \"stop_token_ids\": [\"a\"]}", "stop_token_ids"},
        {CHAT, "{\"messages\": \"hi\"}", "messages"},
        {CHAT, "{\"messages\": []}", "messages"},
        {CHAT, "{\"messages\": [5]}", "messages"},
        {CHAT, "{\"messages\": [{\"role\": 5, \"content\": \"x\"}]}", "messages"},
        {CHAT, "{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}", "messages"},
        {CHAT, "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "messages"},
        {CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "messages"},
        {CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", "messages"},
        {CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": 1}", "logprobs"},
        {CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"chat_template_kwargs\": 1}",
         "chat_template_kwargs"},
        {CHAT,
         "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"chat_template_kwargs\": {\"thinking\": \"on\"}}",
         "chat_template_kwargs"},
        {CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_completion_tokens\": \"4\"}",
         "max_completion_tokens"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++)
        post_expect(srv.port, CASES[i].path, CASES[i].body, 400, CASES[i].param, NULL, NULL);
}

static void out_of_range(void **state)
{
    static const struct {
        const char *path, *body, *param;
    } CASES[] = {
        {CMPL, "{\"prompt\": [1], \"temperature\": 3}", "temperature"},
        {CMPL, "{\"prompt\": [1], \"temperature\": -0.5}", "temperature"},
        {CMPL, "{\"prompt\": [1], \"temperature\": 1e300}", "temperature"},
        {CMPL, "{\"prompt\": [1], \"top_p\": 0}", "top_p"},
        {CMPL, "{\"prompt\": [1], \"top_p\": 1.5}", "top_p"},
        {CMPL, "{\"prompt\": [1], \"top_k\": -2}", "top_k"},
        {CMPL, "{\"prompt\": [1], \"top_k\": 99999999999}", "top_k"},
        {CMPL, "{\"prompt\": [1], \"min_p\": 2}", "min_p"},
        {CMPL, "{\"prompt\": [1], \"presence_penalty\": 3}", "presence_penalty"},
        {CMPL, "{\"prompt\": [1], \"frequency_penalty\": -2.5}", "frequency_penalty"},
        {CMPL, "{\"prompt\": [1], \"repetition_penalty\": 0}", "repetition_penalty"},
        {CMPL, "{\"prompt\": [1], \"n\": 0}", "n"},
        {CMPL, "{\"prompt\": [1], \"n\": 100000}", "n"},
        {CMPL, "{\"prompt\": [[1],[2],[3]], \"n\": 100}", "n"},
        {CMPL, "{\"prompt\": [1], \"max_tokens\": 0}", "max_tokens"},
        {CMPL, "{\"prompt\": [1], \"max_tokens\": -5}", "max_tokens"},
        {CMPL, "{\"prompt\": [1], \"max_tokens\": 4294967296}", "max_tokens"},
        {CMPL, "{\"prompt\": [1], \"logprobs\": 21}", "logprobs"},
        {CMPL, "{\"prompt\": [1], \"logprobs\": -1}", "logprobs"},
        {CMPL, "{\"prompt\": [1], \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop"},
        {CMPL, "{\"prompt\": [1], \"stop\": \"\"}", "stop"},
        {CMPL, "{\"prompt\": [1], \"stop_token_ids\": [-1]}", "stop_token_ids"},
        {CMPL, "{\"prompt\": [-1]}", "prompt"},
        {CMPL, "{\"prompt\": [1, 4294967296]}", "prompt"},
        {CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 3}", "top_logprobs"},
        {CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": true, \"top_logprobs\": 21}",
         "top_logprobs"},
        {CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_completion_tokens\": 0}",
         "max_completion_tokens"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++)
        post_expect(srv.port, CASES[i].path, CASES[i].body, 400, CASES[i].param, NULL, NULL);
    /* a stop string over 256 bytes */
    char body[1024];
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    snprintf(body, sizeof body, "{\"prompt\": [1], \"stop\": \"%s\"}", big);
    post_expect(srv.port, CMPL, body, 400, "stop", NULL, NULL);
}

static void unsupported(void **state)
{
    static const struct {
        const char *path, *body, *param;
    } CASES[] = {
        {CMPL, "{\"prompt\": [1], \"suffix\": \"end\"}", "suffix"},
        {CMPL, "{\"prompt\": [1], \"logit_bias\": {\"5\": 10}}", "logit_bias"},
        {CMPL, "{\"prompt\": [1], \"best_of\": 3}", "best_of"},
        {CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"tools\": [{\"type\": \"function\"}]}",
         "tools"},
        {CHAT,
         "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"response_format\": {\"type\": \"json_object\"}}",
         "response_format"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++)
        post_expect(srv.port, CASES[i].path, CASES[i].body, 400, CASES[i].param, NULL, NULL);
    /* the harmless forms are accepted */
    th_resp r;
    assert_int_equal(
        th_http(srv.port, "POST", CMPL, NULL,
                "{\"prompt\": [1], \"max_tokens\": 1, \"suffix\": null, \"logit_bias\": {}, \"best_of\": 1,"
                " \"user\": \"u\", \"unknown_field\": {\"x\": [1]}}",
                &r),
        0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
}

/* The real tokenizer's ids go up to 129,279; the tiny model has 1024. */
static void vocabulary(void **state)
{
    post_expect(srv.port, CMPL, "{\"prompt\": [5, 1024]}", 400, "prompt", NULL,
                "token id outside the model's vocabulary");
    post_expect(srv.port, CMPL, "{\"prompt\": [[5], [7, 128803]]}", 400, "prompt", NULL,
                "token id outside the model's vocabulary");
    post_expect(srv.port, CMPL, "{\"prompt\": \"hello\"}", 400, "prompt", NULL,
                "token id outside the model's vocabulary");
    /* the chat template's <｜User｜> is id 128803 */
    post_expect(srv.port, CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"the\"}]}", 400, "messages", NULL,
                "token id outside the model's vocabulary");
}

static void context_length(void **state)
{
    /* --max-model-len 256 */
    char body[4096];
    int w = snprintf(body, sizeof body, "{\"prompt\": [");
    for (int i = 0; i < 256; i++)
        w += snprintf(body + w, sizeof body - (size_t)w, "%s%d", i ? "," : "", 5 + i % 900);
    snprintf(body + w, sizeof body - (size_t)w, "]}");
    post_expect(srv.port, CMPL, body, 400, "prompt", "context_length_exceeded", "maximum context length is 256");
    w = snprintf(body, sizeof body, "{\"max_tokens\": 57, \"prompt\": [");
    for (int i = 0; i < 200; i++)
        w += snprintf(body + w, sizeof body - (size_t)w, "%s%d", i ? "," : "", 5 + i);
    snprintf(body + w, sizeof body - (size_t)w, "]}");
    post_expect(srv.port, CMPL, body, 400, "max_tokens", "context_length_exceeded", NULL);
    /* 200 + 56 fits exactly */
    body[16] = '6';
    th_resp r;
    assert_int_equal(th_http(srv.port, "POST", CMPL, NULL, body, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
}

static void routes_and_methods(void **state)
{
    th_resp r;
    static const struct {
        const char *method, *path;
        int status;
        const char *allow;
    } CASES[] = {
        {"GET", "/v2/models", 404, NULL},
        {"POST", "/v1/embeddings", 404, NULL},
        {"GET", "/", 404, NULL},
        {"GET", "/v1/completions", 405, "POST"},
        {"PUT", "/v1/chat/completions", 405, "POST"},
        {"POST", "/health", 405, "GET, HEAD"},
        {"DELETE", "/v1/models", 405, "GET, HEAD"},
        {"POST", "/metrics", 405, "GET, HEAD"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        assert_int_equal(th_http(srv.port, CASES[i].method, CASES[i].path, NULL, "{}", &r), 0);
        expect_error(&r, CASES[i].status, NULL, NULL, NULL);
        if (CASES[i].allow) {
            char want[64];
            snprintf(want, sizeof want, "Allow: %s", CASES[i].allow);
            if (!strcasestr(r.head, want))
                fail_msg("no '%s' header: %s", want, r.head);
        }
        th_resp_free(&r);
    }
    post_expect(srv.port, CMPL, "{\"model\": \"gpt-4\", \"prompt\": [1]}", 404, "model", "model_not_found", "gpt-4");
    post_expect(srv.port, CHAT, "{\"model\": \"x\", \"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}", 404,
                "model", "model_not_found", NULL);
}

static void body_too_large(void **state)
{
    /* declared: refused before the body is sent */
    int fd = th_connect(srv.port);
    assert_true(fd >= 0);
    const char *head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: "
                       "application/json\r\nContent-Length: 9437184\r\n\r\n";
    assert_int_equal(th_send_all(fd, head, strlen(head)), 0);
    char *raw;
    size_t n;
    assert_int_equal(th_read_all(fd, 30, &raw, &n), 0);
    close(fd);
    th_resp r;
    assert_int_equal(th_parse_response(raw, n, &r), 0);
    expect_error(&r, 413, NULL, NULL, NULL);
    th_resp_free(&r);
    free(raw);
    /* chunked: 9 MB of body with no declared length */
    fd = th_connect(srv.port);
    head = "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_int_equal(th_send_all(fd, head, strlen(head)), 0);
    size_t chunk = 1 << 20;
    char *data = malloc(chunk);
    memset(data, ' ', chunk);
    for (int i = 0; i < 9; i++) {
        char sz[32];
        snprintf(sz, sizeof sz, "%zx\r\n", chunk);
        assert_int_equal(th_send_all(fd, sz, strlen(sz)), 0);
        assert_int_equal(th_send_all(fd, data, chunk), 0);
        assert_int_equal(th_send_all(fd, "\r\n", 2), 0);
    }
    assert_int_equal(th_send_all(fd, "0\r\n\r\n", 5), 0);
    assert_int_equal(th_read_all(fd, 30, &raw, &n), 0);
    close(fd);
    assert_int_equal(th_parse_response(raw, n, &r), 0);
    expect_error(&r, 413, NULL, NULL, NULL);
    th_resp_free(&r);
    free(raw);
    free(data);
    /* just under the limit is parsed (and is bad JSON here, so 400) */
    size_t big = (8u << 20) - 16;
    char *body = malloc(big + 1);
    memset(body, ' ', big);
    body[big] = 0;
    body[0] = '{';
    assert_int_equal(th_http(srv.port, "POST", CMPL, NULL, body, &r), 0);
    expect_error(&r, 400, NULL, NULL, NULL);
    th_resp_free(&r);
    free(body);
}

static void api_key(void **state)
{
    th_server ks;
    const char *args[] = {"--api-key", "sekrit", "--served-model-name", "tiny", NULL};
    assert_int_equal(th_start(&ks, tiny_dir, args), 0);
    const char *body = "{\"prompt\": [5, 6], \"max_tokens\": 2}";
    th_resp r;
    assert_int_equal(th_http(ks.port, "POST", CMPL, NULL, body, &r), 0);
    expect_error(&r, 401, NULL, "invalid_api_key", NULL);
    assert_non_null(strcasestr(r.head, "WWW-Authenticate: Bearer"));
    th_resp_free(&r);
    static const char *const WRONG[] = {"Authorization: Bearer wrong\r\n", "Authorization: Bearer sekri\r\n",
                                        "Authorization: Bearer sekrit2\r\n", "Authorization: sekrit\r\n",
                                        "Authorization: Basic c2Vrcml0\r\n"};
    for (size_t i = 0; i < sizeof WRONG / sizeof *WRONG; i++) {
        assert_int_equal(th_http(ks.port, "POST", CMPL, WRONG[i], body, &r), 0);
        expect_error(&r, 401, NULL, "invalid_api_key", NULL);
        th_resp_free(&r);
    }
    assert_int_equal(th_http(ks.port, "GET", "/v1/models", NULL, NULL, &r), 0);
    expect_error(&r, 401, NULL, NULL, NULL);
    th_resp_free(&r);
    assert_int_equal(th_http(ks.port, "POST", CMPL, "Authorization: Bearer sekrit\r\n", body, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(th_http(ks.port, "GET", "/v1/models", "Authorization: Bearer sekrit\r\n", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    /* probes stay open */
    assert_int_equal(th_http(ks.port, "GET", "/health", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(th_http(ks.port, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(th_stop(&ks), 0);
}

/* One running sequence, one waiting, --max-waiting 1: the next is a 429;
 * once the runner goes away, the waiting one completes. */
static void queue_full(void **state)
{
    th_server qs;
    const char *args[] = {"--max-num-seqs", "1", "--max-waiting", "1", "--max-model-len", "4096", NULL};
    assert_int_equal(th_start(&qs, tiny_dir, args), 0);
    int fd = th_connect(qs.port);
    const char *slow = "{\"prompt\": [5, 6, 7], \"max_tokens\": 4000, \"ignore_eos\": true, \"stream\": true}";
    assert_int_equal(th_send_request(fd, "POST", CMPL, NULL, slow, strlen(slow)), 0);
    assert_true(th_wait_metric(qs.port, "v4serve_num_requests_running", 1, false, 30));
    th_async_req b = {.port = qs.port, .body = "{\"prompt\": [5, 6], \"max_tokens\": 3}"};
    pthread_t t;
    pthread_create(&t, NULL, th_post_async, &b);
    assert_true(th_wait_metric(qs.port, "v4serve_num_requests_waiting", 1, false, 30));
    post_expect(qs.port, CMPL, "{\"prompt\": [5], \"max_tokens\": 3}", 429, NULL, "rate_limit_exceeded", NULL);
    post_expect(qs.port, CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"the\"}]}", 400, NULL, NULL, NULL);
    close(fd); /* the runner's client leaves: its request is cancelled */
    pthread_join(t, NULL);
    assert_int_equal(b.rc, 0);
    assert_int_equal(b.r.status, 200);
    th_resp_free(&b.r);
    assert_true(th_metric(qs.port, "v4serve_http_requests_total{code=\"429\"}") == 1);
    assert_int_equal(th_stop(&qs), 0);
}

/* After all of the above, the counters name each status, none is a 5xx,
 * and a valid request still works. */
static void still_serving(void **state)
{
    th_resp r;
    assert_int_equal(th_http(srv.port, "POST", CMPL, NULL, "{\"prompt\": [5, 6, 7], \"max_tokens\": 3}", &r), 0);
    assert_int_equal(r.status, 200);
    th_resp_free(&r);
    assert_int_equal(th_http(srv.port, "GET", "/metrics", NULL, NULL, &r), 0);
    for (int code = 500; code < 600; code++) {
        char k[64];
        snprintf(k, sizeof k, "code=\"%d\"", code);
        if (strstr(r.body, k))
            fail_msg("a %d was answered:\n%s", code, r.body);
    }
    static const char *const SEEN[] = {"code=\"400\"", "code=\"404\"", "code=\"405\"", "code=\"413\""};
    for (size_t i = 0; i < sizeof SEEN / sizeof *SEEN; i++)
        assert_non_null(strstr(r.body, SEEN[i]));
    th_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(malformed_json),     cmocka_unit_test(wrong_types),    cmocka_unit_test(out_of_range),
        cmocka_unit_test(unsupported),        cmocka_unit_test(vocabulary),     cmocka_unit_test(context_length),
        cmocka_unit_test(routes_and_methods), cmocka_unit_test(body_too_large), cmocka_unit_test(api_key),
        cmocka_unit_test(queue_full),         cmocka_unit_test(still_serving),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
