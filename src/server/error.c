/* OpenAI error objects; see error.h. */
#include "server/error.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int srv_errorf(srv_error *e, int status, const char *param, const char *fmt, ...)
{
    e->status = status;
    e->code = NULL;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

const char *srv_error_type(int status)
{
    /* OpenAI's own types: every client mistake is an invalid_request_error
     * (the code field tells them apart), overload is a rate limit. */
    if (status == 429)
        return "rate_limit_exceeded";
    return status >= 500 ? "server_error" : "invalid_request_error";
}

json_t *srv_error_object(const srv_error *e)
{
    /* The message may quote client input cut at any byte; jansson refuses
     * invalid UTF-8, so fall back to a fixed text rather than fail. */
    json_t *msg = json_string(e->message);
    if (!msg)
        msg = json_string("invalid request (the error message could not be encoded)");
    return json_pack("{s:{s:o,s:s,s:o,s:o}}", "error", "message", msg, "type", srv_error_type(e->status), "param",
                     e->param[0] ? json_string(e->param) : json_null(), "code",
                     e->code ? json_string(e->code) : json_null());
}

char *srv_error_json(const srv_error *e, size_t *len)
{
    json_t *o = srv_error_object(e);
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (s && len)
        *len = strlen(s);
    return s;
}
