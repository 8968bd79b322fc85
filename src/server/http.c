/* The HTTP layer on GNU libmicrohttpd; see http.h.
 *
 * Why libmicrohttpd: it is a small, mature C library, packaged by Debian and
 * maintained by GNU, that does exactly the part of a server that is easy to
 * get subtly wrong - request parsing, chunked encoding both ways,
 * keep-alive, pipelining, header and connection limits, timeouts - and
 * nothing else, with no framework to adopt. Its thread-per-connection mode
 * fits the engine's callback design: a connection thread may block on its
 * request's condition variable, and a streaming response is a plain
 * blocking reader callback, so the bridge needs no event loop; a few hundred
 * concurrent streams cost one thread each, which is cheap next to model
 * steps of milliseconds. The alternatives were a hand-written parser or a
 * larger event-loop framework (libevent's evhttp, h2o) that would have
 * turned the bridge inside out. */
#include "server/http.h"

#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server/buf.h"

#define STREAM_BLOCK 8192

struct srv_http {
    struct MHD_Daemon *d;
    srv_handler_fn handler;
    void *app;
    size_t max_body;
    int port;
    void (*on_request_cpu)(void *app, double seconds);
};

/* One HTTP request on a connection, across MHD's calls. */
typedef struct conn_req {
    srv_buf body;
    bool too_large;
    bool answered;    /* a reply was queued before the body was read */
    pthread_t thread; /* the connection's thread, and its CPU clock at the start */
    struct timespec cpu0;
} conn_req;

typedef struct stream_wrap {
    srv_stream_read_fn read;
    void (*free)(void *ctx);
    void *ctx;
} stream_wrap;

/* A client that closed its end shows as POLLRDHUP (or HUP/ERR) on the
 * socket; data it pipelined after the request would only be POLLIN. (A
 * client that half-closed after sending its request would look gone too;
 * HTTP clients do not do that.) */
static bool client_gone(void *ctx)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(ctx, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return false;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLRDHUP};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    stream_wrap *w = cls;
    ssize_t n = w->read(w->ctx, buf, max);
    return n > 0 ? n : n == 0 ? MHD_CONTENT_READER_END_OF_STREAM : MHD_CONTENT_READER_END_WITH_ERROR;
}

static void stream_free(void *cls)
{
    stream_wrap *w = cls;
    if (w->free)
        w->free(w->ctx);
    free(w);
}

static enum MHD_Result send_reply(struct MHD_Connection *conn, srv_reply *rep)
{
    struct MHD_Response *r;
    if (rep->read) {
        stream_wrap *w = malloc(sizeof *w);
        if (!w) {
            rep->stream_free(rep->stream_ctx);
            return MHD_NO;
        }
        *w = (stream_wrap){rep->read, rep->stream_free, rep->stream_ctx};
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK, stream_reader, w, stream_free);
        if (!r) {
            stream_free(w);
            return MHD_NO;
        }
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
        MHD_add_response_header(r, "X-Accel-Buffering", "no"); /* no proxy buffering of events */
    } else {
        r = MHD_create_response_from_buffer(rep->body_len, rep->body ? rep->body : "",
                                            rep->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (!r) {
            free(rep->body);
            return MHD_NO;
        }
    }
    if (rep->content_type)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, rep->content_type);
    if (rep->allow)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, rep->allow);
    if (rep->auth_challenge)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result ok = MHD_queue_response(conn, (unsigned)rep->status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result dispatch(srv_http *h, struct MHD_Connection *conn, const char *url, const char *method,
                                conn_req *cr)
{
    srv_http_req req = {
        .method = method,
        .path = url,
        .body = cr->body.p ? cr->body.p : "",
        .body_len = cr->body.n,
        .body_too_large = cr->too_large,
        .authorization = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        .client_gone = client_gone,
        .gone_ctx = conn,
    };
    srv_reply rep = {0};
    h->handler(h->app, &req, &rep);
    return send_reply(conn, &rep);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    srv_http *h = cls;
    conn_req *cr = *con_cls;
    if (!cr) {
        cr = calloc(1, sizeof *cr);
        if (!cr)
            return MHD_NO;
        *con_cls = cr;
        cr->thread = pthread_self();
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cr->cpu0);
        /* A declared length over the limit is refused before the body is
         * read (and before "100 Continue" invites the client to send it). */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > h->max_body) {
            cr->too_large = cr->answered = true;
            return dispatch(h, conn, url, method, cr);
        }
        return MHD_YES;
    }
    if (cr->answered) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        /* Chunked bodies have no declared length: past the limit the rest
         * is read and dropped, and the request is answered with 413. */
        if (!cr->too_large && (cr->body.n + *upload_data_size > h->max_body ||
                               srv_buf_append(&cr->body, upload_data, *upload_data_size))) {
            cr->too_large = true;
            srv_buf_free(&cr->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    return dispatch(h, conn, url, method, cr);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    srv_http *h = cls;
    conn_req *cr = *con_cls;
    if (cr) {
        /* Thread-per-connection: a request is served by one thread, except
         * when the daemon's shutdown ends it from another. */
        struct timespec t;
        if (h->on_request_cpu && pthread_equal(cr->thread, pthread_self()) &&
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t) == 0)
            h->on_request_cpu(h->app, (double)(t.tv_sec - cr->cpu0.tv_sec) + (t.tv_nsec - cr->cpu0.tv_nsec) / 1e9);
        srv_buf_free(&cr->body);
        free(cr);
        *con_cls = NULL;
    }
}

int srv_http_start(const srv_http_opts *o, srv_handler_fn handler, void *app, srv_http **out, v4_err *err)
{
    *out = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", o->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int gai = getaddrinfo(o->host, port, &hints, &ai);
    if (gai)
        return v4_errf(err, "cannot resolve host '%s': %s", o->host, gai_strerror(gai));
    srv_http *h = calloc(1, sizeof *h);
    if (!h) {
        freeaddrinfo(ai);
        return v4_errf(err, "out of memory");
    }
    h->handler = handler;
    h->app = app;
    h->max_body = o->max_body;
    h->on_request_cpu = o->on_request_cpu;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* MHD's default SO_REUSEADDR lets a restart bind over TIME_WAIT; its
     * LISTENING_ADDRESS_REUSE option would add SO_REUSEPORT, letting a second
     * server share the port silently, so it stays off. */
    h->d = MHD_start_daemon(flags, (uint16_t)o->port, NULL, NULL, on_access, h, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_CONNECTION_LIMIT,
                            (unsigned)o->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->idle_timeout_s,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024), MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!h->d) {
        free(h);
        return v4_errf(err, "cannot listen on %s:%d (address in use, or not an address of this machine?)", o->host,
                       o->port);
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : o->port;
    *out = h;
    return 0;
}

int srv_http_port(const srv_http *h) { return h->port; }

void srv_http_quiesce(srv_http *h)
{
    MHD_socket s = MHD_quiesce_daemon(h->d);
    if (s != MHD_INVALID_SOCKET)
        close(s);
}

void srv_http_stop(srv_http *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
