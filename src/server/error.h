/* OpenAI error objects: {"error": {"message", "type", "param", "code"}} with
 * the HTTP status that goes with them. Every failure the server reports to
 * a client goes through one of these, so the shape is the same everywhere. */
#ifndef V4_SERVER_ERROR_H
#define V4_SERVER_ERROR_H

#include <jansson.h>
#include <stddef.h>

typedef struct srv_error {
    int status;       /* HTTP status */
    const char *code; /* OpenAI error code ("context_length_exceeded", ...) or NULL */
    char param[64];   /* the request field at fault; "" for none */
    char message[768];
} srv_error;

/* Fills e and returns -1 (`return srv_errorf(...)`). param may be NULL. */
int srv_errorf(srv_error *e, int status, const char *param, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The OpenAI "type" for a status: invalid_request_error for 4xx but 429,
 * rate_limit_exceeded for 429, server_error for 5xx. */
const char *srv_error_type(int status);
/* The error object as a jansson value (NULL when out of memory). */
json_t *srv_error_object(const srv_error *e);
/* The error object as JSON text (malloc'd, NUL-terminated); NULL when out
 * of memory. */
char *srv_error_json(const srv_error *e, size_t *len);

#endif
