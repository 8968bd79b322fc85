/* Streaming under load and the ends of a stream: 64 concurrent streaming
 * clients (golden prompt prefixes of different lengths, different
 * max_tokens, greedy and seeded sampling) all finish, each with exactly the
 * output it gets when run alone, no 5xx; a client that disconnects
 * mid-stream gets its request cancelled and its KV blocks freed; SIGTERM
 * lets running requests finish within --shutdown-timeout, aborts the rest
 * (their clients get a final chunk and [DONE]), answers 503 on open
 * connections, and exits 0 in time. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>

#include "server/harness.h"

#define N_CLIENTS 64

static char *tiny_dir;
static th_golden tiny;

static int setup(void **state)
{
    alarm(900);
    tiny_dir = th_golden_model_dir("tiny");
    return tiny_dir && th_golden_load("tiny", &tiny) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    tc_rmtree(tiny_dir);
    free(tiny_dir);
    free(tiny.tokens);
    return 0;
}

/* What a streamed completion produced. */
typedef struct outcome {
    int status;
    bool done; /* [DONE] seen */
    int32_t ids[512];
    int n_ids;
    char text[8192];
    char finish[32];
    int64_t usage_completion;
} outcome;

static void collect(const th_resp *r, outcome *o)
{
    memset(o, 0, sizeof *o);
    o->status = r->status;
    o->usage_completion = -1;
    if (r->status != 200)
        return;
    json_t *ev = th_sse_events(r->body, &o->done);
    size_t i, w = 0;
    json_t *e;
    json_array_foreach(ev, i, e)
    {
        json_t *ch = json_object_get(e, "choices");
        if (json_array_size(ch) == 0) {
            o->usage_completion = json_integer_value(json_object_get(json_object_get(e, "usage"), "completion_tokens"));
            continue;
        }
        json_t *c = json_array_get(ch, 0);
        const char *t = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        if (w + len < sizeof o->text) {
            memcpy(o->text + w, t, len);
            w += len;
        }
        o->n_ids += th_json_ids(json_object_get(c, "token_ids"), o->ids + o->n_ids, 512 - o->n_ids);
        if (json_is_string(json_object_get(c, "finish_reason")))
            snprintf(o->finish, sizeof o->finish, "%s", json_string_value(json_object_get(c, "finish_reason")));
    }
    json_decref(ev);
}

typedef struct client {
    int port;
    char body[4096];
    outcome out;
    pthread_barrier_t *start;
} client;

/* Prompt prefixes of 4 to 67 tokens and 3 to 16 output tokens (a quarter
 * of that in sanitizer builds, which run the model ~15x slower). */
static int prompt_len(int i) { return 4 + (i * 37) % (TH_SANITIZED ? 16 : 64); }
static int max_tokens_of(int i) { return 3 + i % (TH_SANITIZED ? 4 : 14); }

static void make_body(client *c, int i)
{
    int len = prompt_len(i), max_tokens = max_tokens_of(i);
    char *ids = th_ids_json(tiny.tokens, len);
    if (i % 2)
        snprintf(c->body, sizeof c->body,
                 "{\"prompt\":%s,\"max_tokens\":%d,\"temperature\":0.8,\"top_p\":0.95,\"seed\":%d,\"stream\":true,"
                 "\"stream_options\":{\"include_usage\":true},\"return_token_ids\":true}",
                 ids, max_tokens, 1000 + i);
    else
        snprintf(c->body, sizeof c->body,
                 "{\"prompt\":%s,\"max_tokens\":%d,\"temperature\":0,\"stream\":true,"
                 "\"stream_options\":{\"include_usage\":true},\"return_token_ids\":true}",
                 ids, max_tokens);
    free(ids);
}

static void run_client(client *c)
{
    th_resp r;
    if (th_http(c->port, "POST", "/v1/completions", NULL, c->body, &r)) {
        c->out.status = -1;
        return;
    }
    collect(&r, &c->out);
    th_resp_free(&r);
}

static void *client_thread(void *p)
{
    client *c = p;
    pthread_barrier_wait(c->start);
    run_client(c);
    return NULL;
}

static void concurrent_streams(void **state)
{
    th_server s;
    const char *args[] = {"--max-model-len", "512", "--max-num-seqs", "64", NULL};
    assert_int_equal(th_start(&s, tiny_dir, args), 0);
    client *cl = calloc(N_CLIENTS, sizeof *cl);
    outcome *alone = calloc(N_CLIENTS, sizeof *alone);
    double t0 = th_now();
    for (int i = 0; i < N_CLIENTS; i++) {
        cl[i].port = s.port;
        make_body(&cl[i], i);
        run_client(&cl[i]);
        alone[i] = cl[i].out;
        if (alone[i].status != 200)
            fail_msg("client %d alone: status %d", i, alone[i].status);
    }
    double t_alone = th_now() - t0;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_CLIENTS);
    pthread_t th[N_CLIENTS];
    t0 = th_now();
    for (int i = 0; i < N_CLIENTS; i++) {
        cl[i].start = &start;
        pthread_create(&th[i], NULL, client_thread, &cl[i]);
    }
    for (int i = 0; i < N_CLIENTS; i++)
        pthread_join(th[i], NULL);
    double t_together = th_now() - t0;
    printf("# %d streams: %.2f s one by one, %.2f s together\n", N_CLIENTS, t_alone, t_together);
    for (int i = 0; i < N_CLIENTS; i++) {
        const outcome *a = &alone[i], *b = &cl[i].out;
        int max_tokens = max_tokens_of(i);
        if (b->status != 200)
            fail_msg("client %d: status %d", i, b->status);
        assert_true(a->done && b->done);
        assert_true(a->n_ids >= 1 && a->n_ids <= max_tokens);
        if (a->usage_completion != a->n_ids)
            fail_msg("client %d (%s): usage says %lld tokens, the chunks hold %d", i, cl[i].body,
                     (long long)a->usage_completion, a->n_ids);
        if (b->n_ids != a->n_ids)
            fail_msg("client %d (%s): %d tokens alone (%s), %d together (%s)", i, cl[i].body, a->n_ids, a->finish,
                     b->n_ids, b->finish);
        for (int k = 0; k < a->n_ids; k++)
            if (a->ids[k] != b->ids[k])
                fail_msg("client %d token %d: %d alone, %d together", i, k, a->ids[k], b->ids[k]);
        assert_memory_equal(b->text, a->text, sizeof a->text);
        assert_string_equal(b->finish, a->finish);
        assert_int_equal(b->usage_completion, a->usage_completion);
    }
    /* the server's own count of them */
    assert_true(th_metric(s.port, "v4serve_http_requests_total{code=\"200\"}") >= 2 * N_CLIENTS);
    assert_true(th_metric(s.port, "v4serve_num_requests_running") == 0);
    pthread_barrier_destroy(&start);
    free(cl);
    free(alone);
    assert_int_equal(th_stop(&s), 0);
}

/* Reads from fd until `count` SSE events have arrived (or 30 s pass). */
static int read_events(int fd, int count)
{
    char buf[4096];
    int seen = 0;
    double t0 = th_now();
    char prev = 0;
    while (seen < count && th_now() - t0 < 30) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n' && prev == '\n')
                seen++;
            prev = buf[i];
        }
    }
    return seen;
}

static void disconnect_frees(void **state)
{
    th_server s;
    const char *args[] = {"--max-model-len", "4096", NULL};
    assert_int_equal(th_start(&s, tiny_dir, args), 0);
    for (int round = 0; round < 2; round++) {
        const char *body = round ? "{\"prompt\":[5,6,7],\"max_tokens\":3000,\"ignore_eos\":true}"
                                 : "{\"prompt\":[5,6,7],\"max_tokens\":3000,\"ignore_eos\":true,\"stream\":true}";
        int fd = th_connect(s.port);
        assert_int_equal(th_send_request(fd, "POST", "/v1/completions", NULL, body, strlen(body)), 0);
        if (round == 0)
            assert_true(read_events(fd, 5) >= 5); /* mid-stream */
        else
            assert_true(th_wait_metric(s.port, "v4serve_num_requests_running", 1, false, 30)); /* non-streaming, waiting */
        assert_true(th_metric(s.port, "v4serve_num_requests_running") == 1);
        assert_true(th_wait_metric(s.port, "v4serve_kv_cache_blocks_used", 1, true, 10));
        close(fd);
        if (!th_wait_metric(s.port, "v4serve_num_requests_running", 0, false, 10))
            fail_msg("round %d: the request still runs after its client left", round);
        assert_true(th_metric(s.port, "v4serve_request_finished_total{reason=\"cancelled\"}") == round + 1);
        /* The engine refreshes its KV gauge only at the end of a step that
         * ran something (an idle step after a cancel leaves it stale); one
         * more request makes such a step happen, and the gauge then shows
         * that the cancelled request's blocks went back to the pool. */
        th_resp r;
        assert_int_equal(th_http(s.port, "POST", "/v1/completions", NULL, "{\"prompt\":[5],\"max_tokens\":1}", &r), 0);
        assert_int_equal(r.status, 200);
        th_resp_free(&r);
        assert_true(th_wait_metric(s.port, "v4serve_kv_cache_blocks_used", 0, false, 5));
        assert_true(th_metric(s.port, "v4serve_num_requests_running") == 0);
    }
    assert_int_equal(th_stop(&s), 0);
}

static void sigterm(void **state)
{
    th_server s;
    const char *args[] = {"--max-model-len", "4096", "--shutdown-timeout", "3", NULL};
    assert_int_equal(th_start(&s, tiny_dir, args), 0);
    int idle = th_connect(s.port); /* accepted before the signal */
    th_async_req lng = {.port = s.port,
                     .body = "{\"prompt\":[5,6,7],\"max_tokens\":3000,\"ignore_eos\":true,\"stream\":true}"};
    th_async_req shrt = {.port = s.port, .body = "{\"prompt\":[8,9],\"max_tokens\":12,\"ignore_eos\":true}"};
    pthread_t tl, ts;
    pthread_create(&tl, NULL, th_post_async, &lng);
    assert_true(th_wait_metric(s.port, "v4serve_num_requests_running", 1, false, 30));
    pthread_create(&ts, NULL, th_post_async, &shrt);
    assert_true(th_wait_metric(s.port, "v4serve_num_requests_running", 2, false, 30));
    double t0 = th_now();
    kill(s.pid, SIGTERM);
    th_sleep_ms(300);
    /* an open connection gets 503 now; new connections are not accepted */
    const char *body = "{\"prompt\":[5],\"max_tokens\":1}";
    assert_int_equal(th_send_request(idle, "POST", "/v1/completions", NULL, body, strlen(body)), 0);
    char *raw;
    size_t n;
    assert_int_equal(th_read_all(idle, 10, &raw, &n), 0);
    th_resp r;
    assert_int_equal(th_parse_response(raw, n, &r), 0);
    assert_int_equal(r.status, 503);
    th_resp_free(&r);
    free(raw);
    close(idle);
    int fresh = th_connect(s.port);
    assert_true(fresh < 0);
    int st = th_wait(&s, 30);
    double took = th_now() - t0;
    printf("# exit %d %.2f s after SIGTERM (--shutdown-timeout 3)\n", st, took);
    assert_int_equal(st, 0);
    assert_true(took < 3 + 3);
    pthread_join(tl, NULL);
    pthread_join(ts, NULL);
    /* the short one finished; the long one was aborted, and told so */
    assert_int_equal(shrt.rc, 0);
    assert_int_equal(shrt.r.status, 200);
    json_t *j = json_loads(shrt.r.body, 0, NULL);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "finish_reason")),
        "length");
    json_decref(j);
    assert_int_equal(lng.rc, 0);
    outcome o;
    collect(&lng.r, &o);
    assert_int_equal(o.status, 200);
    assert_true(o.done);
    assert_string_equal(o.finish, "abort");
    th_resp_free(&shrt.r);
    th_resp_free(&lng.r);
    unlink(s.log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(concurrent_streams),
        cmocka_unit_test(disconnect_frees),
        cmocka_unit_test(sigterm),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
