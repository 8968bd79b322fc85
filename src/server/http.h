/* The HTTP layer: GNU libmicrohttpd in thread-per-connection mode. It reads
 * each request's body (up to a size limit), hands method, path, body and the
 * Authorization header to one handler function, and sends what the handler
 * returns: a whole body, or a stream pulled from a reader callback (chunked
 * transfer encoding, for Server-Sent Events). It knows nothing of OpenAI. */
#ifndef V4_SERVER_HTTP_H
#define V4_SERVER_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "util/err.h"

typedef struct srv_http srv_http;

typedef struct srv_http_req {
    const char *method, *path; /* path without the query string */
    const char *body;          /* NUL-terminated copy; "" when none */
    size_t body_len;
    bool body_too_large;       /* over the limit: body is empty */
    const char *authorization; /* header value, NULL when absent */
    /* Whether the client has closed its connection, for handlers that wait
     * (valid until the reply has been sent, also inside a stream reader). */
    bool (*client_gone)(void *ctx);
    void *gone_ctx;
} srv_http_req;

/* A stream reader: fills up to max bytes and returns how many (> 0); 0 ends
 * the stream; -1 aborts it (the connection is closed). It may block: each
 * connection has its own thread. */
typedef ssize_t (*srv_stream_read_fn)(void *ctx, char *buf, size_t max);

typedef struct srv_reply {
    int status;
    const char *content_type; /* static string */
    char *body;               /* malloc'd; the HTTP layer frees it */
    size_t body_len;
    const char *allow;   /* "Allow" header (405), static, or NULL */
    bool auth_challenge; /* add "WWW-Authenticate: Bearer" (401) */
    /* Streaming reply when read is set (body is then ignored); stream_free
     * runs once the connection is done with it, sent or not. */
    srv_stream_read_fn read;
    void (*stream_free)(void *ctx);
    void *stream_ctx;
} srv_reply;

typedef void (*srv_handler_fn)(void *app, const srv_http_req *req, srv_reply *rep);

typedef struct srv_http_opts {
    const char *host; /* address or name to bind */
    int port;         /* 0: any free port (see srv_http_port) */
    size_t max_body;  /* larger bodies get body_too_large */
    int max_connections;
    int idle_timeout_s; /* keep-alive connections idle this long are closed */
    /* Called once per request with the CPU time its connection thread spent
     * on it (reading, the handler, formatting and sending; not waiting):
     * the server's own cost outside the engine. May be NULL. */
    void (*on_request_cpu)(void *app, double seconds);
} srv_http_opts;

int srv_http_start(const srv_http_opts *o, srv_handler_fn handler, void *app, srv_http **out, v4_err *err);
/* The bound port. */
int srv_http_port(const srv_http *h);
/* Stops accepting connections; open ones carry on. */
void srv_http_quiesce(srv_http *h);
/* Closes every connection, joins the threads, frees h. */
void srv_http_stop(srv_http *h);

#endif
