/* Prometheus metrics; see metrics.h. Bucket bounds follow vLLM's, so
 * dashboards made for it read these the same way. */
#include "server/metrics.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "server/buf.h"

#define MIN_STATUS 100
#define MAX_STATUS 599

static const double TTFT_BUCKETS[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,  0.25, 0.5,
                                      0.75,  1.0,   2.5,  5.0,  7.5,  10.0, 20.0, 40.0, 80.0};
static const double ITL_BUCKETS[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,  0.15, 0.2,  0.3, 0.4,
                                     0.5,   0.75,  1.0,  2.5,   5.0,  7.5,   10.0, 20.0, 40.0, 80.0};
#define N_TTFT (sizeof TTFT_BUCKETS / sizeof *TTFT_BUCKETS)
#define N_ITL (sizeof ITL_BUCKETS / sizeof *ITL_BUCKETS)
#define MAX_BUCKETS 32

typedef struct histogram {
    const double *bounds;
    size_t n_bounds;
    _Atomic uint64_t count[MAX_BUCKETS + 1]; /* per bucket, not cumulative; last: above every bound */
    _Atomic uint64_t sum_ns;
    _Atomic uint64_t total;
} histogram;

struct srv_metrics {
    _Atomic uint64_t requests[MAX_STATUS - MIN_STATUS + 1];
    _Atomic uint64_t prompt_tokens, generated_tokens;
    _Atomic uint64_t http_cpu_ns;
    histogram ttft, itl;
};

srv_metrics *srv_metrics_create(void)
{
    srv_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->ttft.bounds = TTFT_BUCKETS;
    m->ttft.n_bounds = N_TTFT;
    m->itl.bounds = ITL_BUCKETS;
    m->itl.n_bounds = N_ITL;
    return m;
}

void srv_metrics_free(srv_metrics *m) { free(m); }

void srv_metrics_request(srv_metrics *m, int status)
{
    if (status >= MIN_STATUS && status <= MAX_STATUS)
        atomic_fetch_add(&m->requests[status - MIN_STATUS], 1);
}

void srv_metrics_http_cpu(srv_metrics *m, double seconds)
{
    if (seconds > 0)
        atomic_fetch_add(&m->http_cpu_ns, (uint64_t)(seconds * 1e9));
}

void srv_metrics_prompt_tokens(srv_metrics *m, int64_t n) { atomic_fetch_add(&m->prompt_tokens, (uint64_t)n); }

static void observe(histogram *h, double s)
{
    if (!(s >= 0))
        s = 0;
    size_t b = 0;
    while (b < h->n_bounds && s > h->bounds[b])
        b++;
    atomic_fetch_add(&h->count[b], 1);
    atomic_fetch_add(&h->sum_ns, (uint64_t)(s * 1e9));
    atomic_fetch_add(&h->total, 1);
}

void srv_metrics_token(srv_metrics *m, int first, double seconds)
{
    atomic_fetch_add(&m->generated_tokens, 1);
    observe(first ? &m->ttft : &m->itl, seconds);
}

static void render_histogram(srv_buf *b, const char *name, const char *help, histogram *h)
{
    srv_buf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (size_t i = 0; i < h->n_bounds; i++) {
        cum += atomic_load(&h->count[i]);
        srv_buf_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i], (unsigned long long)cum);
    }
    cum += atomic_load(&h->count[h->n_bounds]);
    /* +Inf equals _count by definition; both come from the same bucket sum
     * so a scrape racing with an observation stays consistent. */
    srv_buf_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    srv_buf_printf(b, "%s_sum %.9f\n", name, (double)atomic_load(&h->sum_ns) / 1e9);
    srv_buf_printf(b, "%s_count %llu\n", name, (unsigned long long)cum);
}

static void render_scalar(srv_buf *b, const char *name, const char *type, const char *help, double v)
{
    srv_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
}

char *srv_metrics_render(srv_metrics *m, const eng_stats *s, size_t *len)
{
    static const char *const FINISH[] = {"stop", "length", "cancelled", "aborted", "error"};
    srv_buf b = {0};
    srv_buf_puts(&b, "# HELP v4serve_http_requests_total HTTP requests answered, by status code.\n"
                     "# TYPE v4serve_http_requests_total counter\n");
    for (int c = MIN_STATUS; c <= MAX_STATUS; c++) {
        uint64_t v = atomic_load(&m->requests[c - MIN_STATUS]);
        if (v)
            srv_buf_printf(&b, "v4serve_http_requests_total{code=\"%d\"} %llu\n", c, (unsigned long long)v);
    }
    render_scalar(&b, "v4serve_http_thread_cpu_seconds_total", "counter",
                  "CPU time of the HTTP connection threads (parsing, tokenizing, formatting, I/O).",
                  (double)atomic_load(&m->http_cpu_ns) / 1e9);
    render_scalar(&b, "v4serve_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.",
                  (double)atomic_load(&m->prompt_tokens));
    render_scalar(&b, "v4serve_generation_tokens_total", "counter", "Generated tokens.",
                  (double)atomic_load(&m->generated_tokens));
    render_scalar(&b, "v4serve_num_requests_running", "gauge", "Sequences running in the engine.", s->running);
    render_scalar(&b, "v4serve_num_requests_waiting", "gauge", "Sequences waiting for admission.", s->waiting);
    render_scalar(&b, "v4serve_kv_cache_blocks_used", "gauge", "KV-cache blocks in use.", (double)s->kv_blocks_used);
    render_scalar(&b, "v4serve_kv_cache_blocks_total", "gauge", "KV-cache blocks in the pool.",
                  (double)s->kv_blocks_total);
    render_scalar(&b, "v4serve_kv_cache_usage_perc", "gauge", "Fraction of KV-cache blocks in use (0 to 1).",
                  s->kv_blocks_total ? (double)s->kv_blocks_used / (double)s->kv_blocks_total : 0.0);
    render_scalar(&b, "v4serve_num_preemptions_total", "counter", "Sequences preempted for lack of KV blocks.",
                  (double)s->preemptions);
    render_scalar(&b, "v4serve_engine_steps_total", "counter", "Engine steps run.", (double)s->steps);
    srv_buf_puts(&b, "# HELP v4serve_request_finished_total Engine requests finished, by reason.\n"
                     "# TYPE v4serve_request_finished_total counter\n");
    for (int i = 0; i <= ENG_FINISH_ERROR; i++)
        srv_buf_printf(&b, "v4serve_request_finished_total{reason=\"%s\"} %lld\n", FINISH[i],
                       (long long)s->finished[i]);
    render_histogram(&b, "v4serve_time_to_first_token_seconds",
                     "Time from the HTTP request's arrival to its first generated token.", &m->ttft);
    render_histogram(&b, "v4serve_inter_token_latency_seconds", "Time between consecutive tokens of a sequence.",
                     &m->itl);
    if (!b.p) {
        srv_buf_free(&b);
        return NULL;
    }
    if (len)
        *len = b.n;
    return b.p;
}
