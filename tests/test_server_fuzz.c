/* A seeded mutation fuzzer over the request handler of the running server:
 * valid completions and chat requests mutated by byte flips, truncations,
 * inserted invalid UTF-8, JSON type swaps (strings, huge and negative
 * numbers, arrays, objects, null, deep nesting, long strings) and splices,
 * sent to the real binary, a few thousand requests within a time bound.
 * No request may crash the server or get a 5xx, and a valid request is
 * answered correctly afterwards. The seed is printed; V4_FUZZ_SEED replays
 * a run. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>

#include "server/harness.h"

#define MAX_REQUESTS 3000
#define MAX_SECONDS 60.0
#define N_THREADS 4

static char *tiny_dir;
static th_server srv;

static const char *const SEEDS[] = {
    "{\"model\":\"tiny\",\"prompt\":[5,6,7],\"max_tokens\":4,\"temperature\":0}",
    "{\"prompt\":\"is the of\",\"max_tokens\":3,\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
    "{\"prompt\":[[5,6],[7,8]],\"n\":2,\"max_tokens\":2,\"logprobs\":2,\"stop\":[\"a\",\"b\"],\"seed\":3}",
    "{\"prompt\":[1,2,3],\"echo\":true,\"max_tokens\":2,\"return_token_ids\":true,\"top_k\":5,\"top_p\":0.9,"
    "\"min_p\":0.1,\"presence_penalty\":0.5,\"frequency_penalty\":0.5,\"repetition_penalty\":1.1,\"ignore_eos\":true,"
    "\"stop_token_ids\":[5]}",
    "{\"prompt\":[\" the\",\"and\"],\"max_tokens\":2,\"stream\":true,\"logprobs\":1,\"stop\":\"x\"}",
    "{\"messages\":[{\"role\":\"user\",\"content\":\"the\"}],\"max_tokens\":2}",
    "{\"model\":\"tiny\",\"messages\":[{\"role\":\"system\",\"content\":\"x\"},{\"role\":\"user\",\"content\":[{"
    "\"type\":"
    "\"text\",\"text\":\"y\"}]},{\"role\":\"assistant\",\"content\":null}],\"logprobs\":true,\"top_logprobs\":2,"
    "\"stream\":true,\"chat_template_kwargs\":{\"thinking\":true},\"max_completion_tokens\":3}",
};
#define N_SEEDS (sizeof SEEDS / sizeof *SEEDS)

static const char *const PATHS[] = {"/v1/completions", "/v1/chat/completions"};

static int setup(void **state)
{
    alarm(600);
    tiny_dir = th_golden_model_dir("tiny");
    const char *args[] = {"--served-model-name", "tiny", "--max-model-len", "64", "--max-num-seqs", "16", NULL};
    return tiny_dir ? th_start(&srv, tiny_dir, args) : -1;
}

static int teardown(void **state)
{
    int st = th_stop(&srv);
    tc_rmtree(tiny_dir);
    free(tiny_dir);
    return st == 0 ? 0 : -1;
}

/* ---- mutations ---- */

typedef struct bytes {
    char *p;
    size_t n;
} bytes;

static uint64_t pick(tu_rng *r, uint64_t n) { return n ? tu_next(r) % n : 0; }

static json_t *random_value(tu_rng *r, int depth)
{
    switch (pick(r, 13)) {
    case 0:
        return json_string("");
    case 1:
        return json_integer((json_int_t)(tu_next(r) >> pick(r, 64)) * (pick(r, 2) ? 1 : -1));
    case 2:
        return json_integer(pick(r, 2) ? INT64_MAX : INT64_MIN);
    case 3:
        return json_real(pick(r, 2) ? 1e308 : -1e-308);
    case 4:
        return json_null();
    case 5:
        return json_boolean(pick(r, 2));
    case 6:
        return json_array();
    case 7:
        return json_object();
    case 8: {
        /* nesting deeper than any parser should follow */
        json_t *v = json_integer(1);
        int d = 1 + (int)pick(r, 300);
        for (int i = 0; i < d; i++) {
            json_t *a = json_array();
            json_array_append_new(a, v);
            v = a;
        }
        return v;
    }
    case 9: {
        size_t n = 1 + pick(r, 100000);
        char *s = malloc(n + 1);
        for (size_t i = 0; i < n; i++)
            s[i] = (char)('a' + pick(r, 26));
        s[n] = 0;
        json_t *v = json_string(s);
        free(s);
        return v;
    }
    case 10:
        return json_pack("[i,i,i]", (int)pick(r, 2000) - 100, 129279, -1);
    case 11:
        return depth < 3 ? json_pack("{s:o}", "role", random_value(r, depth + 1)) : json_null();
    default:
        return json_real(tu_uniform(r, -5, 5));
    }
}

/* Replaces a random member of the object (or of a nested object/array)
 * with a value of a random type. */
static void swap_type(tu_rng *r, json_t *v, int depth)
{
    if (json_is_object(v) && json_object_size(v)) {
        size_t k = pick(r, json_object_size(v)), i = 0;
        const char *key;
        json_t *x;
        json_object_foreach(v, key, x)
        {
            if (i++ != k)
                continue;
            if (depth < 4 && (json_is_object(x) || json_is_array(x)) && pick(r, 2))
                swap_type(r, x, depth + 1);
            else
                json_object_set_new(v, key, random_value(r, 0));
            return;
        }
    } else if (json_is_array(v) && json_array_size(v)) {
        size_t k = pick(r, json_array_size(v));
        json_t *x = json_array_get(v, k);
        if (depth < 4 && (json_is_object(x) || json_is_array(x)) && pick(r, 2))
            swap_type(r, x, depth + 1);
        else
            json_array_set_new(v, k, random_value(r, 0));
    }
}

static void set_bytes(bytes *b, const char *s, size_t n)
{
    free(b->p);
    b->p = malloc(n + 1);
    memcpy(b->p, s, n);
    b->p[n] = 0;
    b->n = n;
}

static void mutate(tu_rng *r, bytes *b)
{
    static const char *const BAD_UTF8[] = {
        "\xff", "\xc3", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xc0\xaf", "\xe2\x82", "\\ud800", "\\u0000", "\x00"};
    int rounds = 1 + (int)pick(r, 3);
    for (int k = 0; k < rounds; k++) {
        switch (pick(r, 7)) {
        case 0: /* flip bits / set a byte */
            if (b->n)
                b->p[pick(r, b->n)] ^= (char)(1u << pick(r, 8));
            break;
        case 1: /* truncate */
            b->n = pick(r, b->n + 1);
            b->p[b->n] = 0;
            break;
        case 2: { /* insert invalid UTF-8 or an escape */
            const char *ins = BAD_UTF8[pick(r, sizeof BAD_UTF8 / sizeof *BAD_UTF8)];
            size_t il = ins[0] ? strlen(ins) : 1, at = pick(r, b->n + 1);
            char *p = malloc(b->n + il + 1);
            memcpy(p, b->p, at);
            memcpy(p + at, ins, il);
            memcpy(p + at + il, b->p + at, b->n - at);
            p[b->n + il] = 0;
            free(b->p);
            b->p = p;
            b->n += il;
            break;
        }
        case 3:
        case 4: { /* type swap, when it still parses */
            json_t *j = json_loadb(b->p, b->n, 0, NULL);
            if (!j)
                break;
            swap_type(r, j, 0);
            char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
            if (s) {
                set_bytes(b, s, strlen(s));
                free(s);
            }
            json_decref(j);
            break;
        }
        case 5: { /* splice in a part of another seed */
            const char *o = SEEDS[pick(r, N_SEEDS)];
            size_t from = pick(r, strlen(o)), len = pick(r, strlen(o) - from + 1), at = pick(r, b->n + 1);
            char *p = malloc(b->n + len + 1);
            memcpy(p, b->p, at);
            memcpy(p + at, o + from, len);
            memcpy(p + at + len, b->p + at, b->n - at);
            p[b->n + len] = 0;
            free(b->p);
            b->p = p;
            b->n += len;
            break;
        }
        default: { /* a number made huge or odd */
            static const char *const NUMS[] = {
                "1e999",  "-0", "99999999999999999999", "1.5", "-9223372036854775809", "NaN", "Infinity", "0x10",
                "1e-400", "007"};
            for (size_t i = 0; i < b->n; i++)
                if (b->p[i] >= '0' && b->p[i] <= '9' && pick(r, 3) == 0) {
                    size_t j = i;
                    while (j < b->n && ((b->p[j] >= '0' && b->p[j] <= '9') || b->p[j] == '.'))
                        j++;
                    const char *num = NUMS[pick(r, sizeof NUMS / sizeof *NUMS)];
                    size_t nl = strlen(num);
                    char *p = malloc(b->n - (j - i) + nl + 1);
                    memcpy(p, b->p, i);
                    memcpy(p + i, num, nl);
                    memcpy(p + i + nl, b->p + j, b->n - j);
                    b->n = b->n - (j - i) + nl;
                    p[b->n] = 0;
                    free(b->p);
                    b->p = p;
                    break;
                }
            break;
        }
        }
    }
}

/* ---- the run ---- */

typedef struct worker {
    uint64_t seed;
    double deadline;
    int sent, timeouts, by_class[6];
    char failure[512];
} worker;

static void *fuzz_thread(void *p)
{
    worker *w = p;
    tu_rng r = {w->seed};
    bytes b = {0};
    while (w->sent < MAX_REQUESTS / N_THREADS && th_now() < w->deadline && !w->failure[0]) {
        size_t s = pick(&r, N_SEEDS);
        set_bytes(&b, SEEDS[s], strlen(SEEDS[s]));
        mutate(&r, &b);
        const char *path = pick(&r, 8) ? PATHS[s >= 5] : PATHS[pick(&r, 2)];
        th_resp resp;
        /* A mutated request may still be valid and long (n up to 256):
         * past the timeout the client leaves and the server cancels it. */
        int rc = th_exchange(srv.port, "POST", path, NULL, b.p, b.n, 5.0, &resp);
        w->sent++;
        if (rc) {
            w->timeouts++;
            if (th_connect(srv.port) < 0)
                snprintf(w->failure, sizeof w->failure, "the server stopped accepting connections");
            continue;
        }
        w->by_class[resp.status / 100 < 6 ? resp.status / 100 : 0]++;
        if (resp.status >= 500 || resp.status < 200)
            snprintf(w->failure, sizeof w->failure, "status %d for %.*s\n-> %.200s", resp.status,
                     (int)(b.n < 300 ? b.n : 300), b.p, resp.body);
        th_resp_free(&resp);
    }
    free(b.p);
    return NULL;
}

static void fuzz_requests(void **state)
{
    const char *env = getenv("V4_FUZZ_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : tu_seed_from_time("fuzz_requests");
    worker w[N_THREADS] = {0};
    pthread_t t[N_THREADS];
    double t0 = th_now();
    for (int i = 0; i < N_THREADS; i++) {
        w[i].seed = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull;
        w[i].deadline = t0 + MAX_SECONDS;
        pthread_create(&t[i], NULL, fuzz_thread, &w[i]);
    }
    int sent = 0, timeouts = 0, cls[6] = {0};
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(t[i], NULL);
        sent += w[i].sent;
        timeouts += w[i].timeouts;
        for (int c = 0; c < 6; c++)
            cls[c] += w[i].by_class[c];
        if (w[i].failure[0])
            fail_msg("seed %llu thread %d: %s", (unsigned long long)seed, i, w[i].failure);
    }
    printf("# %d requests in %.1f s: %d 2xx, %d 4xx, %d client timeouts (seed %llu)\n", sent, th_now() - t0, cls[2],
           cls[4], timeouts, (unsigned long long)seed);
    assert_true(sent >= 500);
    assert_true(cls[2] > 0 && cls[4] > 0);

    /* still correct afterwards */
    int status;
    json_t *j = th_post_json(srv.port, "/v1/completions",
                             "{\"prompt\":[5,6,7],\"max_tokens\":3,\"temperature\":0,\"return_token_ids\":true,"
                             "\"ignore_eos\":true}",
                             &status);
    assert_int_equal(status, 200);
    assert_int_equal(json_array_size(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "token_ids")),
                     3);
    json_decref(j);
    th_resp r;
    assert_int_equal(th_http(srv.port, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_null(strstr(r.body, "code=\"5"));
    th_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(fuzz_requests)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
