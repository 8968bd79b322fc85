/* Server metrics in the Prometheus text format (GET /metrics): HTTP
 * requests by status code, the connection threads' CPU time (the server's
 * own cost outside the engine), prompt and generated token counters,
 * time-to-first-token and inter-token-latency histograms, plus the engine's
 * gauges (running and waiting sequences, KV blocks) read at scrape time.
 *
 * Counters and histogram buckets are C11 atomics: the engine thread records
 * token timings from its callbacks, which must not block, and connection
 * threads record requests, all without a lock. */
#ifndef V4_SERVER_METRICS_H
#define V4_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "engine/engine.h"

typedef struct srv_metrics srv_metrics;

srv_metrics *srv_metrics_create(void);
void srv_metrics_free(srv_metrics *m);

/* One answered HTTP request with this status. */
void srv_metrics_request(srv_metrics *m, int status);
/* Prompt tokens of an accepted generation request. */
void srv_metrics_prompt_tokens(srv_metrics *m, int64_t n);
/* One generated token: `first` records time-to-first-token (seconds since the
 * HTTP request arrived), otherwise the gap since the previous token. */
void srv_metrics_token(srv_metrics *m, int first, double seconds);

/* CPU time a connection thread spent on one request. */
void srv_metrics_http_cpu(srv_metrics *m, double seconds);

/* The exposition text (malloc'd, NUL-terminated) with the engine's stats. */
char *srv_metrics_render(srv_metrics *m, const eng_stats *s, size_t *len);

#endif
